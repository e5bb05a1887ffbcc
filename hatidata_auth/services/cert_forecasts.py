"""Expiry forecasts of the SAML signing certificates a connection holds: alerts 90, 30 and 7 days ahead, and when
it has expired.

One ``saml_certificate_expiry`` alert per certificate (its target is WorkOS's certificate id). A run opens it
when the certificate is within 90 days of expiry and updates it when it crosses 30 and then 7 days, and once more
when it has expired (threshold 0: the message then says it has expired, never "expires in N days"); a run that
finds the same threshold changes nothing, so a forecast is raised once per threshold crossing, however often it
runs. The alert is resolved when the certificate is no longer held (a rotation retired it, or it was removed at
WorkOS). Run by ``flask --app wsgi hatidata sso forecast-certificates`` (a cron job, daily); the clock is an
argument so tests inject one."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..causes import Cause
from ..models import Organization, OrganizationAlert
from ..workos import WorkOSClient
from . import alerts
from .cert_rotation import EXPIRY_KIND, HeldCertificate, held_certificates

THRESHOLDS = (90, 30, 7, 0)
"""Days before expiry at which a forecast is raised, widest first; ``0``: the certificate has expired."""


@dataclass(frozen=True, slots=True)
class ForecastRun:
    """What one run did for one organization: alerts ``raised`` (opened or moved to a nearer threshold) and
    ``resolved`` (certificate no longer held)."""

    organization_id: str
    raised: tuple[str, ...]
    resolved: tuple[str, ...]


def threshold(not_after: datetime | None, now: datetime) -> int | None:
    """The nearest threshold of :data:`THRESHOLDS` that *not_after* is within (``None``: none yet, or no expiry)."""
    if not_after is None:
        return None
    days_left = (not_after - now).total_seconds() / 86400
    crossed = [t for t in THRESHOLDS if days_left <= t]
    return min(crossed) if crossed else None


def _message(cert: HeldCertificate, days: int, now: datetime) -> str:
    assert cert.not_after is not None
    # An unreadable certificate is forecast from the expiry WorkOS gives; the note says why it has no fingerprint.
    note = "" if cert.fingerprint else " (HatiData cannot read this certificate; check it in the WorkOS dashboard)"
    if days == 0:
        return (f"A SAML signing certificate of your SSO connection has expired ({cert.not_after:%Y-%m-%d}){note}: "
                "sign-ins it verified now fail. Rotate the certificate from the SSO page.")
    left = (cert.not_after - now).days
    return (f"A SAML signing certificate of your SSO connection expires in {left} day(s) "
            f"({cert.not_after:%Y-%m-%d}; within {days} days){note}. Rotate the certificate from the SSO page "
            "before it expires.")


def forecast(session: Session, client: WorkOSClient, organization: Organization, cause: Cause,
             now: datetime) -> ForecastRun:
    """Raise, move on or resolve *organization*'s certificate-expiry alerts from the certificates WorkOS holds;
    audited by :mod:`.alerts` in the caller's transaction. Raises ``WorkOSFailure`` (nothing changed)."""
    connection_id = organization.connection_id
    held = held_certificates(client, connection_id) if connection_id else ()
    open_rows = {row.target_id: row for row in session.scalars(select(OrganizationAlert).where(
        OrganizationAlert.organization_id == organization.id, OrganizationAlert.kind == EXPIRY_KIND,
        OrganizationAlert.resolved_at.is_(None)))}
    raised: list[str] = []
    for cert in held:
        days = threshold(cert.not_after, now)
        row = open_rows.pop(cert.id, None)
        if days is None or (row is not None and (row.details or {}).get("threshold_days") == days):
            continue
        assert cert.not_after is not None
        alerts.raise_alert(session, organization_id=organization.id, kind=EXPIRY_KIND, target_type="certificate",
                           target_id=cert.id, message=_message(cert, days, now),
                           details={"threshold_days": days, "connection_id": connection_id,
                                    "fingerprint": cert.fingerprint, "expiry_date": cert.not_after.isoformat()},
                           cause=cause, now=now)
        raised.append(cert.id)
    resolved = _resolve(session, organization.id, list(open_rows), cause, now)
    return ForecastRun(organization.id, tuple(raised), tuple(resolved))


def resolve_unheld(session: Session, organization_id: str, held_ids: set[str], cause: Cause,
                   now: datetime) -> list[str]:
    """Resolve the organization's open expiry forecasts about certificates WorkOS no longer holds (a rotation
    retired them; a restore gave a certificate a new id); returns their targets."""
    targets = session.scalars(select(OrganizationAlert.target_id).where(
        OrganizationAlert.organization_id == organization_id, OrganizationAlert.kind == EXPIRY_KIND,
        OrganizationAlert.resolved_at.is_(None))).all()
    return _resolve(session, organization_id, [t for t in targets if t and t not in held_ids], cause, now)


def _resolve(session: Session, organization_id: str, targets: list[str | None], cause: Cause,
             now: datetime) -> list[str]:
    return [target for target in targets if target and alerts.resolve_raised(
        session, organization_id=organization_id, kind=EXPIRY_KIND, target_id=target,
        resolution="certificate_retired", cause=cause, now=now)]
