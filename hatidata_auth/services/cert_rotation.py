"""SAML signing-certificate rotation with overlap: no failed sign-in while the IdP switches certificates.

The states of one connection's rotation (a :class:`~hatidata_auth.models.CertificateRotation` row, locked for
every step, so repeats and concurrent requests apply one after the other):

1. :func:`start`: the IdP's new metadata (an uploaded file, or a URL fetched by :mod:`.metadata_fetch`) names a
   certificate WorkOS does not hold yet; it is added beside the old ones (WorkOS's
   ``POST /connections/{id}/saml_idp_signing_certs``), so both verify sign-ins: ``both_trusted``.
2. :func:`mark_switched`: the admin made the new certificate the IdP's active one: ``switched``.
3. :func:`finish_test_sign_in`: a test sign-in through the connection succeeded after the switch: the old
   certificates are removed at WorkOS, the connection's ``saml_certificate_renewal`` alert and the expiry
   forecasts of the removed certificates are resolved: ``retired``.

WorkOS does not tell which certificate verified a sign-in, so step 3's proof is a successful sign-in after the
admin's switch; the emulator counts sign-ins per certificate (``GET /_emulator/connections/{id}/idp_signing``)
so tests check that proof held. Every step is audited in the caller's transaction; the caller commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ..causes import Cause
from ..errors import AppError
from ..idp import CertificateInfo, SamlMetadata
from ..models import CertificateRotation, Organization, OrganizationAlert, utcnow
from ..workos import WorkOSClient, WorkOSFailure, WorkOSNotFound, translate_errors
from . import alerts, audit

STATES = ("both_trusted", "switched", "retired")
RENEWAL_KIND = "saml_certificate_renewal"
EXPIRY_KIND = alerts.CERTIFICATE_EXPIRY


class RotationError(AppError):
    """A rotation step refused; the message is safe to show to the admin."""

    status = 409
    code = "certificate_rotation_refused"


@dataclass(frozen=True, slots=True)
class HeldCertificate:
    """A signing certificate WorkOS holds for the connection; ``not_after`` aware UTC (``None``: WorkOS gave none);
    ``fingerprint`` SHA-256 hex, ``None`` when ``cryptography`` cannot read the PEM WorkOS holds (unreadable)."""

    id: str
    fingerprint: str | None
    not_after: datetime | None


@dataclass(frozen=True, slots=True)
class RotationView:
    """A rotation as admins see it; ``state`` one of :data:`STATES`, times aware UTC."""

    id: str
    connection_id: str
    state: str
    new_certificate_id: str
    new_fingerprint: str
    new_not_after: datetime | None
    old_certificate_ids: tuple[str, ...]
    metadata_source: str
    switched_at: datetime | None
    retired_at: datetime | None
    verified_by: str | None


def view(row: CertificateRotation) -> RotationView:
    """The admin view of one rotation row."""
    return RotationView(row.id, row.connection_id, row.state, row.new_certificate_id, row.new_fingerprint,
                        row.new_not_after, tuple(row.old_certificate_ids or ()), row.metadata_source,
                        row.switched_at, row.retired_at, row.verified_by)


def _fingerprint(pem: str) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    return x509.load_pem_x509_certificate(pem.encode()).fingerprint(hashes.SHA256()).hex()


def held_certificates(client: WorkOSClient, connection_id: str) -> tuple[HeldCertificate, ...]:
    """The signing certificates WorkOS holds for *connection_id*, oldest first; raises ``WorkOSFailure``."""
    with translate_errors():
        listed = client.sso.list_connection_saml_idp_signing_certs(connection_id).data
    return tuple(HeldCertificate(c.id, _readable_fingerprint(c.value), c.not_after) for c in listed)


def _readable_fingerprint(pem: str) -> str | None:
    # WorkOS may hold a certificate that cryptography refuses (e.g. a negative serial number): it is still held,
    # forecast by WorkOS's not_after and retired by a rotation, but matches no metadata certificate.
    try:
        return _fingerprint(pem)
    except ValueError:
        return None


def current(session: Session, organization_id: str, connection_id: str | None) -> RotationView | None:
    """The organization's rotation of *connection_id* (``None`` when none was started)."""
    if not connection_id:
        return None
    row = session.scalar(select(CertificateRotation).where(CertificateRotation.organization_id == organization_id,
                                                           CertificateRotation.connection_id == connection_id))
    return view(row) if row is not None else None


def _locked(session: Session, organization_id: str, connection_id: str) -> CertificateRotation | None:
    # FOR UPDATE on the organization, then the rotation: two admins (or a double submit) step one rotation one
    # after the other, the first start included (there is no rotation row to lock yet).
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(Organization.id).where(Organization.id == organization_id).with_for_update())
    else:  # SQLite has no row lock: a no-op write takes the database's write lock until commit
        session.execute(update(Organization).where(Organization.id == organization_id)
                        .values(updated_at=Organization.updated_at))
    return session.scalar(select(CertificateRotation).where(
        CertificateRotation.organization_id == organization_id,
        CertificateRotation.connection_id == connection_id).with_for_update())


def connection_of(organization: Organization) -> str:
    """The organization's SSO connection id; 409 ``no_connection`` without one."""
    if not organization.connection_id:
        raise RotationError("This organization has no SSO connection to rotate.", code="no_connection")
    return organization.connection_id


def _newest(metadata: SamlMetadata, held: tuple[HeldCertificate, ...], now: datetime) -> CertificateInfo:
    known = {h.fingerprint for h in held}
    fresh = [c for c in metadata.certificates if c.sha256_fingerprint.replace(":", "").lower() not in known
             and c.not_after > now]
    if not fresh:
        raise RotationError("This metadata holds no certificate the connection does not already trust: download "
                            "the metadata of the new certificate.", code="no_new_certificate", status=422)
    return max(fresh, key=lambda c: c.not_after)


def _audit(session: Session, cause: Cause, row: CertificateRotation, action: str, **details: Any) -> None:
    audit.record(session, action=f"sso.certificate_rotation.{action}", cause=cause,
                 organization_id=row.organization_id, target_type="connection", target_id=row.connection_id,
                 details={"rotation_id": row.id, "state": row.state, **details})


def start(session: Session, client: WorkOSClient, organization: Organization, metadata: SamlMetadata,
          source: str, cause: Cause, *, now: datetime | None = None) -> RotationView:
    """Trust the newest certificate of *metadata* beside the connection's current ones (``both_trusted``).

    *source*: ``xml`` or ``url``. Repeating it with metadata whose new certificate is already being rotated in
    answers the same rotation. Raises :class:`RotationError` (409 ``no_connection`` / ``rotation_in_progress``,
    422 ``no_new_certificate``) and ``WorkOSFailure``; audits ``sso.certificate_rotation.started``.
    """
    now = now or utcnow()
    connection_id = connection_of(organization)
    row = _locked(session, organization.id, connection_id)
    if row is not None and row.state != "retired":
        fingerprints = {c.sha256_fingerprint.replace(":", "").lower() for c in metadata.certificates}
        if row.new_fingerprint in fingerprints:
            return view(row)
        raise RotationError("A rotation of this connection is in progress: finish it first.",
                            code="rotation_in_progress")
    held = held_certificates(client, connection_id)
    new = _newest(metadata, held, now)
    with translate_errors():
        created = client.sso.create_connection_saml_idp_signing_cert(connection_id, value=new.pem)
    if row is None:
        row = CertificateRotation(organization_id=organization.id, connection_id=connection_id)
        session.add(row)
    row.state, row.new_certificate_id, row.new_fingerprint = "both_trusted", created.id, _fingerprint(new.pem)
    row.new_not_after, row.metadata_source = new.not_after, source
    row.old_certificate_ids = [h.id for h in held if h.id != created.id]
    row.switched_at = row.retired_at = row.verified_by = None
    session.flush()
    _audit(session, cause, row, "started", new_certificate_id=created.id, new_fingerprint=row.new_fingerprint,
           new_not_after=new.not_after.isoformat(), old_certificate_ids=list(row.old_certificate_ids),
           metadata_source=source)
    return view(row)


def _in_progress(session: Session, organization: Organization) -> CertificateRotation:
    row = _locked(session, organization.id, connection_of(organization))
    if row is None:
        raise RotationError("Start a certificate rotation first.", code="no_rotation", status=404)
    return row


def mark_switched(session: Session, organization: Organization, cause: Cause, *,
                  now: datetime | None = None) -> RotationView:
    """The admin made the new certificate the IdP's active one (``switched``); a repeat is a no-op.

    Raises :class:`RotationError` (404 ``no_rotation``, 409 when already retired); audits
    ``sso.certificate_rotation.switched``.
    """
    row = _in_progress(session, organization)
    if row.state == "retired":
        raise RotationError("This rotation is finished.", code="rotation_finished")
    if row.state == "both_trusted":
        row.state, row.switched_at = "switched", now or utcnow()
        _audit(session, cause, row, "switched")
    return view(row)


def connection_for_test(session: Session, organization: Organization) -> str:
    """The connection a rotation's test sign-in must go through (409 unless the rotation is ``switched``)."""
    row = _in_progress(session, organization)
    if row.state != "switched":
        raise RotationError("Run the test sign-in after the IdP signs with the new certificate.",
                            code="rotation_not_switched")
    return row.connection_id


def finish_test_sign_in(session: Session, client: WorkOSClient, organization: Organization, code: str,
                        cause: Cause, *, now: datetime | None = None) -> RotationView:
    """Exchange the test sign-in's *code*; when it came through the rotated connection after the switch, remove
    the old certificates at WorkOS and resolve the renewal alert and their expiry forecasts (``retired``).

    A repeat after ``retired`` answers the rotation. Raises :class:`RotationError` (409 not switched / another
    connection, 403 another organization, 502 WorkOS refused the code); audits
    ``sso.certificate_rotation.verified`` and ``.retired``.
    """
    row = _in_progress(session, organization)
    if row.state == "retired":
        return view(row)
    if row.state != "switched":
        raise RotationError("Run the test sign-in after the IdP signs with the new certificate.",
                            code="rotation_not_switched")
    try:
        with translate_errors():
            profile = client.sso.get_profile_and_token(code=code).profile.to_dict()
    except WorkOSFailure as exc:
        raise RotationError(f"WorkOS refused the test sign-in: {exc.message}", status=502,
                            code="test_sign_in_failed") from exc
    if profile.get("organization_id") not in (None, organization.workos_organization_id):
        raise RotationError("The test sign-in came from another organization.", status=403)
    if profile.get("connection_id") != row.connection_id:
        raise RotationError("The test sign-in came through another connection; start it again.")
    row.verified_by = str(profile.get("email") or "")[:320] or None
    _audit(session, cause, row, "verified", email=row.verified_by)
    _retire(session, client, row, cause, now or utcnow())
    return view(row)


def _retire(session: Session, client: WorkOSClient, row: CertificateRotation, cause: Cause, now: datetime) -> None:
    removed: list[str] = []
    for cert_id in row.old_certificate_ids or []:
        try:
            with translate_errors():
                client.sso.delete_connection_saml_idp_signing_cert(row.connection_id, cert_id)
        except WorkOSNotFound:
            pass  # already removed (a repeat after a crash, or by hand in WorkOS's dashboard)
        removed.append(cert_id)
    row.state, row.retired_at = "retired", now
    _audit(session, cause, row, "retired", removed_certificate_ids=removed)
    alerts.resolve_raised(session, organization_id=row.organization_id, kind=RENEWAL_KIND,
                          target_id=row.connection_id, resolution="certificate_rotated", cause=cause, now=now)
    for cert_id in removed:
        alerts.resolve_raised(session, organization_id=row.organization_id, kind=EXPIRY_KIND, target_id=cert_id,
                              resolution="certificate_retired", cause=cause, now=now)


def open_renewal_alert(session: Session, organization_id: str, connection_id: str | None) -> bool:
    """Whether the connection's ``saml_certificate_renewal`` alert is open."""
    return connection_id is not None and session.scalar(select(OrganizationAlert.id).where(
        OrganizationAlert.organization_id == organization_id, OrganizationAlert.kind == RENEWAL_KIND,
        OrganizationAlert.target_id == connection_id, OrganizationAlert.resolved_at.is_(None))) is not None
