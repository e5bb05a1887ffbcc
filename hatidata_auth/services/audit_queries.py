"""Reading the audit log: filtered pages, streaming NDJSON/CSV export, and verification of every chain.

Writing stays in :mod:`hatidata_auth.services.audit` (``record``). Nothing here updates or deletes an event.
Exports are generators over a server-side cursor (``yield_per``): a range is never loaded into memory.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from ..models import AuditEvent
from . import audit

EXPORT_BATCH = 500

CSV_COLUMNS: tuple[str, ...] = (
    "id", "organization_id", "seq", "created_at", "actor_type", "actor_id", "actor_email", "action",
    "target_type", "target_id", "outcome", "ip_address", "user_agent", "request_id", "source_event_id",
    "details", "prev_hash", "hash",
)


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which events of one organization to read; every field is optional."""

    actor_id: str | None = None
    actor_type: str | None = None
    actor_email: str | None = None
    action: str | None = None
    target_type: str | None = None
    target_id: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def _org_clause(organization_id: str | None) -> Any:
    return (AuditEvent.organization_id.is_(None) if organization_id is None
            else AuditEvent.organization_id == organization_id)


def filtered(organization_id: str | None, flt: AuditFilter | None = None) -> Select[AuditEvent]:
    """The select of one organization's events matching *flt* (no order, no limit)."""
    flt = flt or AuditFilter()
    query = select(AuditEvent).where(_org_clause(organization_id))
    for column, value in (
        (AuditEvent.actor_id, flt.actor_id), (AuditEvent.actor_type, flt.actor_type),
        (AuditEvent.actor_email, flt.actor_email), (AuditEvent.action, flt.action),
        (AuditEvent.target_type, flt.target_type), (AuditEvent.target_id, flt.target_id),
        (AuditEvent.outcome, flt.outcome),
    ):
        if value is not None:
            query = query.where(column == value)
    if flt.since is not None:
        query = query.where(AuditEvent.created_at >= flt.since)
    if flt.until is not None:
        query = query.where(AuditEvent.created_at < flt.until)
    return query


def page(session: Session, organization_id: str, flt: AuditFilter | None, *, before_seq: int | None,
         limit: int) -> tuple[list[AuditEvent], int | None]:
    """Newest-first page of events; returns the events and the ``seq`` to continue before (or ``None``)."""
    query = filtered(organization_id, flt)
    if before_seq is not None:
        query = query.where(AuditEvent.seq < before_seq)
    rows = list(session.scalars(query.order_by(AuditEvent.seq.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].seq if more and rows else None)


def get_event(session: Session, organization_id: str, public_id: str) -> AuditEvent | None:
    """One event of an organization by its public id (another organization's event is ``None``)."""
    return session.scalar(select(AuditEvent).where(_org_clause(organization_id),
                                                   AuditEvent.public_id == public_id))


# Detail keys whose value lets its reader act on what it names: a WorkOS session id ends that session through
# WorkOS's logout URL. Rows written before new ones stored our own ``session_id`` still hold it.
REVOKING_DETAIL_KEYS = frozenset({"workos_session_id"})


def redacted(value: Any) -> Any:
    """*value* (JSON) with every :data:`REVOKING_DETAIL_KEYS` entry, at any depth, set to ``None``."""
    if isinstance(value, dict):
        return {k: None if k in REVOKING_DETAIL_KEYS else redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redacted(v) for v in value]
    return value


def event_view(event: AuditEvent, *, reveal_session_ids: bool = False) -> dict[str, Any]:
    """The JSON view of an event (the API's and the NDJSON export's). ``details`` hide WorkOS session ids
    unless *reveal_session_ids* (a reader who may revoke sessions); ``hash`` covers the stored details."""
    details = event.details or {}
    return {
        "id": event.public_id,
        "organization_id": event.organization_id,
        "seq": event.seq,
        "created_at": event.created_at.isoformat(timespec="microseconds"),
        "actor": {"type": event.actor_type, "id": event.actor_id, "email": event.actor_email},
        "action": event.action,
        "target": {"type": event.target_type, "id": event.target_id},
        "outcome": event.outcome,
        "ip_address": event.ip_address,
        "user_agent": event.user_agent,
        "request_id": event.request_id,
        "source_event_id": event.source_event_id,
        "details": details if reveal_session_ids else redacted(details),
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }


def iter_events(session: Session, organization_id: str | None, flt: AuditFilter | None = None, *,
                batch: int = EXPORT_BATCH) -> Iterator[AuditEvent]:
    """Stream matching events in chain order, *batch* rows at a time (server-side cursor on PostgreSQL)."""
    query = filtered(organization_id, flt).order_by(AuditEvent.seq).execution_options(yield_per=batch)
    for event in session.scalars(query):
        yield event
        # Keep the identity map small: exported rows are not needed afterwards.
        session.expunge(event)


def export_ndjson(session: Session, organization_id: str | None, flt: AuditFilter | None = None, *,
                  reveal_session_ids: bool = False) -> Iterator[str]:
    """One JSON object per line (:func:`event_view`), in chain order."""
    for event in iter_events(session, organization_id, flt):
        view = event_view(event, reveal_session_ids=reveal_session_ids)
        yield json.dumps(view, sort_keys=True, ensure_ascii=False, default=str) + "\n"


def export_csv(session: Session, organization_id: str | None, flt: AuditFilter | None = None, *,
               reveal_session_ids: bool = False) -> Iterator[str]:
    """A header line, then one CSV row per event (:func:`event_view`), in chain order (``details`` as JSON)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")

    def flush() -> str:
        value = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return value

    writer.writerow(CSV_COLUMNS)
    yield flush()
    for event in iter_events(session, organization_id, flt):
        view = event_view(event, reveal_session_ids=reveal_session_ids)
        writer.writerow([
            view["id"], view["organization_id"], view["seq"], view["created_at"], event.actor_type,
            event.actor_id, event.actor_email, event.action, event.target_type, event.target_id, event.outcome,
            event.ip_address, event.user_agent, event.request_id, event.source_event_id,
            json.dumps(view["details"], sort_keys=True, ensure_ascii=False), event.prev_hash, event.hash,
        ])
        yield flush()


EXPORT_FORMATS = {"ndjson": (export_ndjson, "application/x-ndjson"), "csv": (export_csv, "text/csv")}


def chain_owners(session: Session) -> list[str | None]:
    """Every organization id that has a chain (``None`` for the events of no tenant)."""
    rows = session.scalars(select(AuditEvent.organization_id).distinct())
    return sorted(rows, key=lambda v: (v is not None, v or ""))


def verify_all(session: Session, organization_ids: Sequence[str | None] | None = None) -> list[audit.ChainReport]:
    """Verify the named chains (default: every chain in the database)."""
    owners = list(organization_ids) if organization_ids is not None else chain_owners(session)
    return [audit.verify_organization(session, org_id) for org_id in owners]
