"""The proof that a certificate rotation's IdP switched: a test sign-in only the new certificate can verify.

WorkOS does not say which certificate verified a sign-in, so a successful sign-in after the admin's "switched"
click proves nothing (an early click, the old certificate still in use, would retire the certificate every user
signs with). Instead, for the test sign-in, the connection trusts only the new certificate:

1. :func:`begin_test_sign_in` (the caller commits): the public PEMs of every other certificate WorkOS holds are
   kept on the rotation row with the window's start; then :func:`set_aside_old` removes them at WorkOS, just
   before the admin is sent to sign in. Keeping the PEMs is committed first, so a crash between the two steps
   loses nothing.
2. :func:`finish_test_sign_in`: the sign-in came back through the connection: proven, the old certificates stay
   removed, the renewal alert and their expiry forecasts are resolved (``retired``). Anything else (the IdP
   refused, :func:`fail_test_sign_in`; WorkOS refused the code; another connection or organization; later than
   :data:`~.cert_rotation.TEST_WINDOW`) restores them at WorkOS at once and answers the rotation, back to
   ``both_trusted``, with a ``notice`` ("your IdP still signs with the old certificate").

The trade-off: between :func:`set_aside_old` and the callback (seconds; at most ``TEST_WINDOW``, after which any
request restores them, :func:`~.cert_rotation.restore_abandoned`) a real user's sign-in fails if, and only if,
the IdP did not switch, which is the case the test exists to catch. The emulator counts sign-ins per
certificate (``GET /_emulator/connections/{id}/idp_signing``) so tests check the proof held.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from ..causes import Cause
from ..models import CertificateRotation, Organization, utcnow
from ..workos import WorkOSClient, WorkOSFailure, WorkOSNotFound, translate_errors
from . import alerts, cert_forecasts
from .cert_rotation import (
    RENEWAL_KIND,
    STILL_OLD,
    RotationError,
    RotationView,
    audit_step,
    certificate_key,
    held_certificates,
    in_progress,
    restore_set_aside,
    view,
    window_over,
)


def _switched(row: CertificateRotation) -> None:
    if row.state != "switched":
        raise RotationError("Run the test sign-in after the IdP signs with the new certificate.",
                            code="rotation_not_switched")


def begin_test_sign_in(session: Session, client: WorkOSClient, organization: Organization, cause: Cause, *,
                       now: datetime | None = None) -> str:
    """Open the test sign-in's window: keep the PEMs of the certificates to set aside; answers the connection id.

    A repeat (a double submit, a second try) keeps the PEMs kept before (WorkOS may hold only the new certificate
    by then), adds any other certificate WorkOS holds now and restarts the window. Raises :class:`RotationError`
    (404 ``no_rotation``, 409 ``rotation_not_switched``, 409 ``new_certificate_missing`` when WorkOS no longer
    trusts the new certificate) and ``WorkOSFailure``; audits ``sso.certificate_rotation.test_started``. The
    caller commits, then calls :func:`set_aside_old`.
    """
    row = in_progress(session, organization)
    _switched(row)
    held = held_certificates(client, row.connection_id)
    if row.new_certificate_id not in {h.id for h in held}:
        raise RotationError("WorkOS no longer trusts the new certificate: cancel this rotation and start again.",
                            code="new_certificate_missing")
    kept: list[dict[str, Any]] = list(row.set_aside or [])
    known = {certificate_key(c["fingerprint"], c["pem"]) for c in kept}
    kept += [{"id": h.id, "fingerprint": h.fingerprint, "pem": h.pem} for h in held
             if h.id != row.new_certificate_id and certificate_key(h.fingerprint, h.pem) not in known]
    row.set_aside, row.test_started_at = kept, now or utcnow()
    audit_step(session, cause, row, "test_started", set_aside_certificate_ids=[c["id"] for c in kept])
    return row.connection_id


def set_aside_old(session: Session, client: WorkOSClient, organization: Organization) -> None:
    """Remove the certificates :func:`begin_test_sign_in` kept at WorkOS (a 404 counts as removed).

    Raises :class:`RotationError` (404/409 as :func:`begin_test_sign_in`, 409 ``test_not_started``) and
    ``WorkOSFailure`` (the caller then calls :func:`fail_test_sign_in`).
    """
    row = in_progress(session, organization)
    _switched(row)
    if row.test_started_at is None:
        raise RotationError("Start the test sign-in from the rotation page.", code="test_not_started")
    for cert in row.set_aside or []:
        try:
            with translate_errors():
                client.sso.delete_connection_saml_idp_signing_cert(row.connection_id, cert["id"])
        except WorkOSNotFound:
            pass


def fail_test_sign_in(session: Session, client: WorkOSClient, organization: Organization, cause: Cause,
                      reason: str) -> RotationView:
    """The test sign-in failed (*reason*, e.g. the IdP's error): restore the certificates set aside, if any.

    Answers the rotation (``both_trusted`` with a ``notice`` when it restored). Raises :class:`RotationError`
    (404 ``no_rotation``) and ``WorkOSFailure``; audits ``sso.certificate_rotation.test_failed``.
    """
    row = in_progress(session, organization)
    if row.state != "switched" or row.test_started_at is None:
        return view(row)
    restore_set_aside(session, client, row, cause, reason[:200])
    return view(row, f"The test sign-in failed: {reason[:200].rstrip('. ')}. {STILL_OLD}")


def finish_test_sign_in(session: Session, client: WorkOSClient, organization: Organization, code: str,
                        cause: Cause, *, now: datetime | None = None) -> RotationView:
    """Exchange the test sign-in's *code*; when it came through the rotated connection while only the new
    certificate was trusted, the old ones stay removed and the renewal alert and their expiry forecasts are
    resolved (``retired``); otherwise they are restored (see the module docstring) and the answer carries a
    ``notice``.

    A repeat after ``retired`` answers the rotation. Raises :class:`RotationError` (404 ``no_rotation``, 409
    ``rotation_not_switched`` / ``test_not_started``) and ``WorkOSFailure`` (removing or restoring at WorkOS;
    nothing here changed then); audits ``sso.certificate_rotation.verified`` and ``.retired``, or ``.test_failed``.
    """
    now = now or utcnow()
    row = in_progress(session, organization)
    if row.state == "retired":
        return view(row)
    _switched(row)
    if row.test_started_at is None:
        raise RotationError("Start the test sign-in from the rotation page: only a sign-in while the old "
                            "certificate is set aside proves the switch.", code="test_not_started")
    if window_over(row, now):
        return _failed(session, client, row, cause, "The test sign-in did not come back in time.")
    try:
        with translate_errors():
            profile = client.sso.get_profile_and_token(code=code).profile.to_dict()
    except WorkOSFailure as exc:
        return _failed(session, client, row, cause, f"WorkOS refused the test sign-in: {exc.message}")
    if profile.get("organization_id") not in (None, organization.workos_organization_id):
        return _failed(session, client, row, cause, "The test sign-in came from another organization.")
    if profile.get("connection_id") != row.connection_id:
        return _failed(session, client, row, cause, "The test sign-in came through another connection.")
    row.verified_by = str(profile.get("email") or "")[:320] or None
    audit_step(session, cause, row, "verified", email=row.verified_by)
    _retire(session, client, row, cause, now)
    return view(row)


def _failed(session: Session, client: WorkOSClient, row: CertificateRotation, cause: Cause,
            reason: str) -> RotationView:
    restore_set_aside(session, client, row, cause, reason[:200])
    return view(row, f"{reason} {STILL_OLD}")


def _retire(session: Session, client: WorkOSClient, row: CertificateRotation, cause: Cause, now: datetime) -> None:
    removed: list[str] = []
    for cert_id in dict.fromkeys([*(row.old_certificate_ids or []), *(c["id"] for c in row.set_aside or [])]):
        try:
            with translate_errors():
                client.sso.delete_connection_saml_idp_signing_cert(row.connection_id, cert_id)
        except WorkOSNotFound:
            pass  # set aside for the test sign-in, or removed by hand in WorkOS's dashboard
        removed.append(cert_id)
    row.state, row.retired_at, row.test_started_at, row.set_aside = "retired", now, None, None
    audit_step(session, cause, row, "retired", removed_certificate_ids=removed)
    alerts.resolve_raised(session, organization_id=row.organization_id, kind=RENEWAL_KIND,
                          target_id=row.connection_id, resolution="certificate_rotated", cause=cause, now=now)
    # The forecasts of every certificate no longer held, not only of the ids removed now: a restore after a
    # failed test sign-in gave the old certificates new ids, and their forecasts still name the first ones.
    held = {h.id for h in held_certificates(client, row.connection_id)}
    cert_forecasts.resolve_unheld(session, row.organization_id, held, cause, now)
