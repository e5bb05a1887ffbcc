"""An organization's SSO connection health for the SSO index: connection state, last successful sign-in,
certificate expiry, open alerts, directory state and the last directory event applied."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models import AuditEvent, Organization
from . import alerts, sign_in_attempts

DIRECTORY_TARGETS = ("directory", "directory_user", "directory_group")
"""Audit target types of the changes a directory event makes (``services/events``)."""


@dataclass(frozen=True, slots=True)
class ConnectionHealth:
    """What an admin checks first when sign-ins fail. ``certificate_not_after``: the earliest expiry we hold
    (the uploaded metadata's, or an open certificate alert's); ``last_directory_event``: the action it caused."""

    connection_id: str | None
    connection_state: str | None
    last_success_at: datetime | None
    certificate_not_after: datetime | None
    open_alerts: tuple[alerts.AlertView, ...]
    directory_id: str | None
    directory_state: str | None
    last_directory_event: str | None
    last_directory_event_at: datetime | None


def _parse(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def connection_health(session: Session, org: Organization, *,
                      metadata_not_after: datetime | None = None) -> ConnectionHealth:
    """The health of *org*'s SSO connection and directory; *metadata_not_after*: the certificate expiry of the
    metadata the wizard holds, if any."""
    if metadata_not_after is not None and metadata_not_after.tzinfo is None:
        metadata_not_after = metadata_not_after.replace(tzinfo=UTC)
    open_alerts = tuple(alerts.open_alerts(session, org.id))
    expiries = [d for d in (metadata_not_after, *(_parse(a.details.get("expiry_date")) for a in open_alerts
                                                   if a.kind == "saml_certificate_renewal")) if d is not None]
    last = session.execute(select(AuditEvent.action, AuditEvent.created_at).where(
        AuditEvent.organization_id == org.id, AuditEvent.source_event_id.is_not(None),
        AuditEvent.target_type.in_(DIRECTORY_TARGETS)).order_by(AuditEvent.seq.desc()).limit(1)).first()
    return ConnectionHealth(
        connection_id=org.connection_id, connection_state=org.connection_state,
        last_success_at=sign_in_attempts.last_success(session, org.id),
        certificate_not_after=min(expiries) if expiries else None, open_alerts=open_alerts,
        directory_id=org.directory_id, directory_state=org.directory_state,
        last_directory_event=last.action if last else None, last_directory_event_at=last.created_at if last else None)
