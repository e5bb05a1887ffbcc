"""Organization alerts: what an organization's admins must see until its cause ends.

An alert is one row per (organization, kind, target object), e.g. ("saml_certificate_renewal",
"conn_01…"). WorkOS events open and resolve it (:data:`KINDS`), under the same ordering rules as every other
event type: the row keeps the version (event ``created_at``, event id) of the last event applied to it, and
an older event is a no-op, so a warning created before the renewal but delivered after it cannot reopen it.
A resolving event that arrives first leaves a resolved row holding its version for the same reason. A
``connection.deleted`` is final: the connection's alerts never reopen.

Admins read them with :func:`alerts_query` / :func:`open_alerts` (API, home page, SSO wizard).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ..causes import Cause
from ..errors import AppError
from ..models import Organization, OrganizationAlert, new_id, utcnow
from . import audit, paging

if TYPE_CHECKING:
    from .events import EventContext


@dataclass(frozen=True, slots=True)
class AlertKind:
    """An alert kind: the event types that open it and those that end its cause."""

    name: str
    target_type: str
    opened_by: frozenset[str]
    resolved_by: frozenset[str]


KINDS: tuple[AlertKind, ...] = (
    AlertKind("saml_certificate_renewal", "connection",
              opened_by=frozenset({"connection.saml_certificate_renewal_required"}),
              resolved_by=frozenset({"connection.saml_certificate_renewed", "connection.deleted"})),
    AlertKind("connection_inactive", "connection",
              opened_by=frozenset({"connection.deactivated"}),
              resolved_by=frozenset({"connection.activated", "connection.deleted"})),
)
FINAL_EVENTS: frozenset[str] = frozenset({"connection.deleted"})
ALERT_EVENT_TYPES: frozenset[str] = frozenset().union(*(k.opened_by | k.resolved_by for k in KINDS))
STATUSES = ("open", "resolved", "all")


@dataclass(frozen=True, slots=True)
class AlertView:
    """An alert as admins see it; times are aware UTC datetimes."""

    id: str
    organization_id: str
    kind: str
    target_type: str | None
    target_id: str | None
    message: str
    details: dict[str, Any]
    status: str  # "open" | "resolved"
    occurred_at: datetime | None  # created_at of the last WorkOS event applied to the alert
    resolved_at: datetime | None
    resolution: str | None  # the event type that resolved it
    source_event_id: str | None
    created_at: datetime
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (timestamps as ISO 8601 strings)."""
        def iso(value: datetime | None) -> str | None:
            return None if value is None else value.isoformat()

        return {"id": self.id, "organization_id": self.organization_id, "kind": self.kind,
                "target_type": self.target_type, "target_id": self.target_id, "message": self.message,
                "details": dict(self.details), "status": self.status, "occurred_at": iso(self.occurred_at),
                "resolved_at": iso(self.resolved_at), "resolution": self.resolution,
                "source_event_id": self.source_event_id, "created_at": iso(self.created_at),
                "updated_at": iso(self.updated_at)}


def view(alert: OrganizationAlert) -> AlertView:
    """The admin view of one alert row."""
    return AlertView(id=alert.id, organization_id=alert.organization_id, kind=alert.kind,
                     target_type=alert.target_type, target_id=alert.target_id, message=alert.message,
                     details=dict(alert.details or {}), status="open" if alert.resolved_at is None else "resolved",
                     occurred_at=alert.version_at, resolved_at=alert.resolved_at, resolution=alert.resolution,
                     source_event_id=alert.source_event_id, created_at=alert.created_at,
                     updated_at=alert.updated_at)


def alerts_query(organization_id: str, status: str = "open") -> Select[OrganizationAlert]:
    """The organization's alerts with *status* ``open`` (default), ``resolved`` or ``all``; unordered.

    Raises ``ValueError`` for another status.
    """
    if status not in STATUSES:
        raise ValueError(f"unknown alert status {status!r}")
    query = select(OrganizationAlert).where(OrganizationAlert.organization_id == organization_id)
    if status == "open":
        query = query.where(OrganizationAlert.resolved_at.is_(None))
    elif status == "resolved":
        query = query.where(OrganizationAlert.resolved_at.is_not(None))
    return query


PAGE_KEY = paging.key_kind(OrganizationAlert.id)


def alerts_page(session: Session, organization_id: str, status: str, page: paging.PageRequest) -> \
        paging.Page[AlertView]:
    """One page of the organization's alerts with *status* (see :func:`alerts_query`), in id order."""
    return paging.paginate(session, alerts_query(organization_id, status), OrganizationAlert.id, page, view)


def open_alerts(session: Session, organization_id: str, limit: int = 20) -> list[AlertView]:
    """The organization's open alerts, most recent event first (at most *limit*)."""
    query = alerts_query(organization_id).order_by(OrganizationAlert.version_at.desc(), OrganizationAlert.id)
    return [view(a) for a in session.scalars(query.limit(limit))]


# --- applying events -----------------------------------------------------------------------------------------


def _locked(session: Session, organization_id: str, kind: str, target_id: str) -> OrganizationAlert | None:
    # FOR UPDATE: two events for one alert apply one after the other, each against the committed version.
    return session.scalar(select(OrganizationAlert).where(
        OrganizationAlert.organization_id == organization_id, OrganizationAlert.kind == kind,
        OrganizationAlert.target_id == target_id).with_for_update())


def _row(ctx: EventContext, org: Organization, kind: AlertKind, target_id: str) -> tuple[OrganizationAlert, bool]:
    """The alert row, locked; inserted (empty, resolved, unversioned) when missing. Returns (row, created)."""
    row = _locked(ctx.session, org.id, kind.name, target_id)
    if row is not None:
        return row, False
    insert = postgresql.insert if ctx.session.get_bind().dialect.name == "postgresql" else sqlite.insert
    stmt = (insert(OrganizationAlert)
            .values(id=new_id("alert"), organization_id=org.id, kind=kind.name, target_type=kind.target_type,
                    target_id=target_id, message="", details={}, resolved_at=ctx.event_time)
            .on_conflict_do_nothing(index_elements=["organization_id", "kind", "target_id"])
            .returning(OrganizationAlert))
    created = ctx.session.scalars(stmt).first()
    if created is not None:
        return created, True
    row = _locked(ctx.session, org.id, kind.name, target_id)  # inserted concurrently: apply on top of it
    assert row is not None
    return row, False


def apply_event(ctx: EventContext, org: Organization, target_id: str, *, message: str = "",
                details: dict[str, Any] | None = None) -> bool:
    """Open or resolve the alerts *ctx*'s event type drives for *target_id*; returns whether any changed.

    *message* and *details* describe an alert the event opens. Audits ``organization_alert.opened|resolved``.
    """
    changed = False
    for kind in KINDS:
        if ctx.event_type in kind.opened_by or ctx.event_type in kind.resolved_by:
            changed |= _transition(ctx, org, kind, target_id, ctx.event_type in kind.opened_by, message,
                                   details or {})
    return changed


def _transition(ctx: EventContext, org: Organization, kind: AlertKind, target_id: str, opens: bool,
                message: str, details: dict[str, Any]) -> bool:
    row, created = _row(ctx, org, kind, target_id)
    final = ctx.event_type in FINAL_EVENTS
    if row.resolution in FINAL_EVENTS:
        return False
    version = (ctx.event_time, ctx.event_id or "")
    if not created and not final and row.version_at is not None \
            and version < (row.version_at, row.version_event_id or ""):
        return False  # stale: a newer event for this alert is already applied
    was_open = not created and row.resolved_at is None
    if row.version_at is None or version >= (row.version_at, row.version_event_id or ""):
        row.version_at, row.version_event_id = version[0], ctx.event_id
    if opens:
        if was_open and (row.message, row.details) == (message, details):
            return False
        row.message, row.details, row.source_event_id = message, details, ctx.event_id
        row.resolved_at, row.resolution = None, None
        action = "organization_alert.updated" if was_open else "organization_alert.opened"
    else:
        becomes_final = final and row.resolution != ctx.event_type
        if not (was_open or created or becomes_final):
            return False  # already resolved: only the version moved on
        if was_open:
            row.resolved_at = ctx.event_time
        row.resolution = ctx.event_type
        if created:
            row.message = f"{kind.name} of {kind.target_type} {target_id} resolved before it was raised."
        action = "organization_alert.resolved"
    ctx.record(action, organization_id=org.id, target_type="organization_alert", target_id=row.id,
               details={"kind": kind.name, "target_type": kind.target_type, "target_id": target_id,
                        "was_open": was_open, "event_type": ctx.event_type})
    return True


# --- alerts the application raises ----------------------------------------------------------------------------

# Raised by this application, not by a WorkOS event: a break-glass sign-in (an admin resolves it once reviewed)
# and an organization left without an active admin by its directory (resolved when an admin exists again).
BREAK_GLASS_USED = "break_glass_used"
NO_ACTIVE_ADMIN = "no_active_admin"
# A SAML signing certificate within 90/30/7 days of expiry (services/cert_forecasts.py; resolved when retired).
CERTIFICATE_EXPIRY = "saml_certificate_expiry"
# An audit stream stopped after too many failed deliveries (services/audit_sinks.py; resolved when a batch is
# delivered again after an admin's retry, or when the stream is deleted).
AUDIT_STREAM_DEAD_LETTER = "audit_stream_dead_letter"
RAISED_KINDS: frozenset[str] = frozenset({BREAK_GLASS_USED, NO_ACTIVE_ADMIN, CERTIFICATE_EXPIRY,
                                          AUDIT_STREAM_DEAD_LETTER})
ADMIN_RESOLVABLE: frozenset[str] = frozenset({BREAK_GLASS_USED})


class AlertNotResolvable(AppError):
    """Only alerts an admin reviews (a break-glass sign-in) are resolved by hand; the others by their cause."""

    status = 409
    code = "alert_not_resolvable"


def raise_alert(session: Session, *, organization_id: str, kind: str, target_type: str, target_id: str,
                message: str, details: dict[str, Any], cause: Cause, now: datetime | None = None) -> AlertView:
    """Open (or update) the application-raised alert *kind* about *target_id*; audits
    ``organization_alert.opened`` or ``organization_alert.updated`` in the caller's transaction."""
    assert kind in RAISED_KINDS, kind
    now = now or utcnow()
    row = _locked(session, organization_id, kind, target_id)
    was_open = row is not None and row.resolved_at is None
    if row is None:
        row = OrganizationAlert(organization_id=organization_id, kind=kind, target_type=target_type,
                                target_id=target_id, message=message, details=details)
        session.add(row)
    row.message, row.details, row.version_at = message, details, now
    row.resolved_at, row.resolution, row.updated_at = None, None, now
    session.flush()
    audit.record(session, action="organization_alert.updated" if was_open else "organization_alert.opened",
                 cause=cause, organization_id=organization_id, target_type="organization_alert", target_id=row.id,
                 details={"kind": kind, "target_type": target_type, "target_id": target_id, "was_open": was_open})
    return view(row)


def resolve_raised(session: Session, *, organization_id: str, kind: str, target_id: str, resolution: str,
                   cause: Cause, now: datetime | None = None) -> bool:
    """Resolve the open alert *kind* about *target_id* (audited ``organization_alert.resolved``); whether one was.

    The resolution is a version like an event's, at *now*: an event about the alert created before it (a WorkOS
    warning delayed in its retry queue) is older, so it cannot reopen what this resolved; a later one can.
    """
    row = _locked(session, organization_id, kind, target_id)
    if row is None or row.resolved_at is not None:
        return False
    now = now or utcnow()
    row.resolved_at, row.resolution, row.updated_at = now, resolution, now
    if row.version_at is None or now > row.version_at:
        row.version_at, row.version_event_id = now, None
    audit.record(session, action="organization_alert.resolved", cause=cause, organization_id=organization_id,
                 target_type="organization_alert", target_id=row.id,
                 details={"kind": kind, "target_type": row.target_type, "target_id": target_id, "was_open": True,
                          "resolution": resolution})
    return True


def resolve_by_admin(session: Session, *, organization_id: str, alert_id: str, cause: Cause) -> AlertView:
    """An admin marks an alert of theirs reviewed (:data:`ADMIN_RESOLVABLE` kinds); 404 for another
    organization's alert, 409 ``alert_not_resolvable`` for a kind its cause resolves."""
    row = session.scalar(select(OrganizationAlert).where(OrganizationAlert.organization_id == organization_id,
                                                         OrganizationAlert.id == alert_id))
    if row is None:
        raise AppError("No such alert.", status=404, code="not_found")
    if row.kind not in ADMIN_RESOLVABLE:
        raise AlertNotResolvable("This alert resolves when its cause ends.", details={"kind": row.kind})
    resolve_raised(session, organization_id=organization_id, kind=row.kind, target_id=row.target_id or "",
                   resolution="resolved_by_admin", cause=cause)
    session.flush()
    return view(row)
