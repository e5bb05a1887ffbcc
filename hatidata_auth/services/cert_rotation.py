"""SAML signing-certificate rotation with overlap: no failed sign-in while the IdP switches certificates.

The states of one connection's rotation (a :class:`~hatidata_auth.models.CertificateRotation` row, locked for
every step, so repeats and concurrent requests apply one after the other):

1. :func:`start`: the IdP's new metadata (an uploaded file, or a URL fetched by :mod:`.metadata_fetch`) names the
   new certificate; it is added beside the old ones (WorkOS's ``POST /connections/{id}/saml_idp_signing_certs``),
   or, when WorkOS already trusts it (added in WorkOS's dashboard, or by its metadata refresh), nothing is added,
   so both verify sign-ins: ``both_trusted``.
2. :func:`mark_switched`: the admin says the new certificate is the IdP's active one: ``switched``.
3. The proof (:mod:`.rotation_proof`): WorkOS does not say which certificate verified a sign-in, so for the test
   sign-in the old certificates are set aside at WorkOS (their public PEMs kept on the row) and only the new one
   verifies it. It succeeds: the old ones stay removed, the renewal alert and their expiry forecasts are resolved
   (``retired``). It fails, is abandoned past :data:`TEST_WINDOW`, or the rotation is cancelled: the old ones are
   restored at WorkOS at once (:func:`restore_set_aside`) and the rotation is back to ``both_trusted``.

:func:`cancel` ends a rotation that is not ``retired`` (wrong metadata): the certificate it added is removed at
WorkOS and the row deleted, so a new one can start. Every step is audited in the caller's transaction; the caller
commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ..causes import Cause
from ..errors import AppError
from ..idp import CertificateInfo, SamlMetadata
from ..models import CertificateRotation, Organization, OrganizationAlert, utcnow
from ..unit_of_work import undo_unless_committed
from ..workos import WorkOSClient, WorkOSNotFound, WorkOSRejected, translate_errors
from . import alerts, audit

STATES = ("both_trusted", "switched", "retired")
RENEWAL_KIND = "saml_certificate_renewal"
EXPIRY_KIND = alerts.CERTIFICATE_EXPIRY
# How long the old certificates may stay set aside for a test sign-in before any request restores them: a real
# user's sign-in in this window fails only if the IdP did not switch.
TEST_WINDOW = timedelta(minutes=10)
STILL_OLD = ("Your identity provider still signs with the old certificate: the old certificate is trusted again. "
             "Make the new certificate the active one in your identity provider, then confirm and test again.")


class RotationError(AppError):
    """A rotation step refused; the message is safe to show to the admin."""

    status = 409
    code = "certificate_rotation_refused"


@dataclass(frozen=True, slots=True)
class HeldCertificate:
    """A signing certificate WorkOS holds for the connection; ``not_after`` aware UTC (``None``: WorkOS gave none);
    ``fingerprint`` SHA-256 hex, ``None`` when ``cryptography`` cannot read the PEM WorkOS holds (unreadable);
    ``pem`` its public PEM."""

    id: str
    fingerprint: str | None
    not_after: datetime | None
    pem: str


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
    test_started_at: datetime | None = None  # the old certificates are set aside for a test sign-in since then
    notice: str | None = None  # why the last step put the old certificates back (not stored)


def view(row: CertificateRotation, notice: str | None = None) -> RotationView:
    """The admin view of one rotation row (*notice*: what the step that produced it tells the admin)."""
    return RotationView(row.id, row.connection_id, row.state, row.new_certificate_id, row.new_fingerprint,
                        row.new_not_after, tuple(row.old_certificate_ids or ()), row.metadata_source,
                        row.switched_at, row.retired_at, row.verified_by, row.test_started_at, notice)


def _fingerprint(pem: str) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    return x509.load_pem_x509_certificate(pem.encode()).fingerprint(hashes.SHA256()).hex()


def held_certificates(client: WorkOSClient, connection_id: str) -> tuple[HeldCertificate, ...]:
    """The signing certificates WorkOS holds for *connection_id*, oldest first; raises ``WorkOSFailure``."""
    with translate_errors():
        listed = client.sso.list_connection_saml_idp_signing_certs(connection_id).data
    return tuple(HeldCertificate(c.id, _readable_fingerprint(c.value), c.not_after, c.value) for c in listed)


def certificate_key(fingerprint: str | None, pem: str) -> str:
    """What identifies a held certificate across its removal and re-addition (WorkOS gives it a new id): its
    fingerprint, or its PEM text when ``cryptography`` cannot read it."""
    return fingerprint or pem.strip()


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


def _plain(fingerprint: str) -> str:
    return fingerprint.replace(":", "").lower()


def _newest(metadata: SamlMetadata, held: tuple[HeldCertificate, ...],
            now: datetime) -> tuple[CertificateInfo, HeldCertificate | None]:
    """The certificate to rotate to and WorkOS's copy of it (``None``: WorkOS does not hold it yet).

    The newest unexpired certificate of *metadata* WorkOS does not hold; else one it holds already, if WorkOS
    holds others and it outlives each of them (retiring them never shortens the connection's trust).
    """
    fresh = [c for c in metadata.certificates if c.not_after > now]
    by_fingerprint = {h.fingerprint: h for h in held}
    unheld = [c for c in fresh if _plain(c.sha256_fingerprint) not in by_fingerprint]
    if unheld:
        return max(unheld, key=lambda c: c.not_after), None
    for cert in sorted(fresh, key=lambda c: c.not_after, reverse=True):
        mine = by_fingerprint[_plain(cert.sha256_fingerprint)]
        others = [h for h in held if h.id != mine.id]
        if others and all(h.not_after is None or h.not_after < cert.not_after for h in others):
            return cert, mine
    raise RotationError("This metadata holds no certificate newer than the ones the connection trusts: download "
                        "the metadata of the new certificate.", code="no_new_certificate", status=422)


def audit_step(session: Session, cause: Cause, row: CertificateRotation, action: str, **details: Any) -> None:
    """Audit ``sso.certificate_rotation.<action>`` of *row* (its id and state in the details); a failed test
    sign-in is recorded with outcome ``failure``."""
    audit.record(session, action=f"sso.certificate_rotation.{action}", cause=cause,
                 organization_id=row.organization_id, target_type="connection", target_id=row.connection_id,
                 outcome="failure" if action == "test_failed" else "success",
                 details={"rotation_id": row.id, "state": row.state, **details})


def start(session: Session, client: WorkOSClient, organization: Organization, metadata: SamlMetadata,
          source: str, cause: Cause, *, now: datetime | None = None) -> RotationView:
    """Trust the newest certificate of *metadata* beside the connection's current ones (``both_trusted``).

    *source*: ``xml`` or ``url``. Repeating it with metadata whose new certificate is already being rotated in
    answers the same rotation. A new certificate WorkOS already trusts is not added again (a :func:`cancel`
    then leaves it); one it adds is removed again if the caller's transaction ends uncommitted
    (``unit_of_work.undo_unless_committed``). Raises :class:`RotationError` (409 ``no_connection`` /
    ``rotation_in_progress``, 422 ``no_new_certificate``) and ``WorkOSFailure``; audits
    ``sso.certificate_rotation.started``.
    """
    now = now or utcnow()
    connection_id = connection_of(organization)
    row = _locked(session, organization.id, connection_id)
    if row is not None and row.state != "retired":
        fingerprints = {_plain(c.sha256_fingerprint) for c in metadata.certificates}
        if row.new_fingerprint in fingerprints:
            return view(row)
        raise RotationError("A rotation of this connection is in progress: finish or cancel it first.",
                            code="rotation_in_progress")
    held = held_certificates(client, connection_id)
    new, trusted = _newest(metadata, held, now)
    if trusted is None:
        with translate_errors():
            new_id = client.sso.create_connection_saml_idp_signing_cert(connection_id, value=new.pem).id
        # Recorded only by this transaction's row: left trusted without it, a retry would find it trusted already
        # and record that the rotation had not added it (a cancel would then leave it).
        undo_unless_committed(session, f"the certificate {new_id} added to {connection_id}",
                              lambda: _remove(client, connection_id, new_id))
    else:
        new_id = trusted.id
    if row is None:
        row = CertificateRotation(organization_id=organization.id, connection_id=connection_id)
        session.add(row)
    row.state, row.new_certificate_id, row.new_fingerprint = "both_trusted", new_id, _fingerprint(new.pem)
    row.new_not_after, row.metadata_source, row.added_new_certificate = new.not_after, source, trusted is None
    row.old_certificate_ids = [h.id for h in held if h.id != new_id]
    row.switched_at = row.retired_at = row.verified_by = row.test_started_at = row.set_aside = None
    session.flush()
    audit_step(session, cause, row, "started", new_certificate_id=new_id, new_fingerprint=row.new_fingerprint,
           new_not_after=new.not_after.isoformat(), old_certificate_ids=list(row.old_certificate_ids),
           metadata_source=source, already_trusted=trusted is not None)
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
        audit_step(session, cause, row, "switched")
    return view(row)


def in_progress(session: Session, organization: Organization) -> CertificateRotation:
    """The organization's rotation row, locked (404 ``no_rotation`` when none was started)."""
    return _in_progress(session, organization)


def restore_set_aside(session: Session, client: WorkOSClient, row: CertificateRotation, cause: Cause,
                      reason: str) -> None:
    """Trust the certificates set aside for a test sign-in again and put *row* back to ``both_trusted``.

    Idempotent: a certificate WorkOS holds again (same fingerprint) is not added twice, so a restore that failed
    half-way is rerun whole. One that expired meanwhile (WorkOS refuses it) is not restored. Raises
    ``WorkOSFailure`` (nothing in *session* changed then); audits ``sso.certificate_rotation.test_failed``.
    """
    held = {certificate_key(h.fingerprint, h.pem): h.id for h in held_certificates(client, row.connection_id)}
    restored: list[str] = []
    expired: list[str] = []
    for cert in row.set_aside or []:
        cert_id = held.get(certificate_key(cert["fingerprint"], cert["pem"]))
        if cert_id is None:
            try:
                with translate_errors():
                    cert_id = client.sso.create_connection_saml_idp_signing_cert(row.connection_id,
                                                                                 value=cert["pem"]).id
            except WorkOSRejected:
                expired.append(cert["id"])
                continue
        restored.append(cert_id)
    row.old_certificate_ids = restored
    row.state, row.switched_at, row.test_started_at, row.set_aside = "both_trusted", None, None, None
    audit_step(session, cause, row, "test_failed", reason=reason, restored_certificate_ids=restored,
           not_restored_certificate_ids=expired)


def window_over(row: CertificateRotation, now: datetime) -> bool:
    """Whether *row*'s old certificates are set aside for a test sign-in since longer than :data:`TEST_WINDOW`."""
    return row.test_started_at is not None and now - row.test_started_at > TEST_WINDOW


def restore_abandoned(session: Session, client: WorkOSClient, organization: Organization, cause: Cause, *,
                      now: datetime | None = None) -> RotationView | None:
    """Restore the old certificates of a test sign-in abandoned past :data:`TEST_WINDOW` (any request may call
    it; the caller commits). Answers the rotation with a ``notice`` when it restored, else ``None``; raises
    ``WorkOSFailure``."""
    now = now or utcnow()
    found = current(session, organization.id, organization.connection_id)
    if found is None or found.test_started_at is None or now - found.test_started_at <= TEST_WINDOW:
        return None  # the common case reads only: no lock taken
    row = _in_progress(session, organization)
    if not window_over(row, now):
        return None
    restore_set_aside(session, client, row, cause, "test_sign_in_abandoned")
    return view(row, f"The test sign-in did not come back within {int(TEST_WINDOW.total_seconds() // 60)} "
                     f"minutes. {STILL_OLD}")


def cancel(session: Session, client: WorkOSClient, organization: Organization, cause: Cause) -> RotationView:
    """End a rotation that is not ``retired`` (e.g. started with the wrong metadata) so another can start.

    Certificates set aside for a test sign-in are restored first; the new certificate is removed at WorkOS only
    when the rotation added it (a 404 there counts as removed), then the row is deleted. Answers the rotation as
    it was. Raises :class:`RotationError` (404 ``no_rotation``, 409 ``rotation_finished``) and ``WorkOSFailure``
    (nothing changed here then); audits ``sso.certificate_rotation.cancelled``.
    """
    row = _in_progress(session, organization)
    if row.state == "retired":
        raise RotationError("This rotation is finished: its old certificates are already removed.",
                            code="rotation_finished")
    if row.test_started_at is not None:
        restore_set_aside(session, client, row, cause, "rotation_cancelled")
    cancelled = view(row)
    if row.added_new_certificate:
        _remove(client, row.connection_id, row.new_certificate_id)
    audit_step(session, cause, row, "cancelled", new_certificate_id=row.new_certificate_id,
           new_certificate_removed=row.added_new_certificate)
    session.delete(row)
    session.flush()
    return cancelled


def _remove(client: WorkOSClient, connection_id: str, certificate_id: str) -> None:
    try:
        with translate_errors():
            client.sso.delete_connection_saml_idp_signing_cert(connection_id, certificate_id)
    except WorkOSNotFound:
        pass  # already removed (a repeat after a crash, or by hand in WorkOS's dashboard)


def open_renewal_alert(session: Session, organization_id: str, connection_id: str | None) -> bool:
    """Whether the connection's ``saml_certificate_renewal`` alert is open."""
    return connection_id is not None and session.scalar(select(OrganizationAlert.id).where(
        OrganizationAlert.organization_id == organization_id, OrganizationAlert.kind == RENEWAL_KIND,
        OrganizationAlert.target_id == connection_id, OrganizationAlert.resolved_at.is_(None))) is not None
