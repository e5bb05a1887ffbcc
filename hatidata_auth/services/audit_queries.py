"""Reading the audit log: filtered pages, streaming NDJSON/CSV export, and verification of every chain.

Writing stays in :mod:`hatidata_auth.services.audit` (``record``). Nothing here updates or deletes an event.
Exports are generators over a server-side cursor (``yield_per``): a range is never loaded into memory.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
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


def count_matching(session: Session, organization_id: str | None, flt: AuditFilter | None, *, limit: int) -> int:
    """How many events match, counting at most *limit* (a bounded scan of the index)."""
    ids = filtered(organization_id, flt).with_only_columns(AuditEvent.id).limit(limit).subquery()
    return int(session.execute(select(func.count()).select_from(ids)).scalar_one())


# A page scans the chain downwards in ``seq`` windows, the first of PAGE_WINDOW seqs, each twice the last, and
# stops when the page is full, at the chain's start, or past PAGE_BUDGET seconds (after one window at least): a
# filter whose matches are rare or absent costs a bounded part of the chain per request, never a walk of it.
PAGE_WINDOW = 4096
PAGE_BUDGET = 0.025
# A time range holding fewer events than this is turned into its exact ``seq`` range first (through the
# ``(organization_id, created_at, seq)`` index); a larger one is only a filter of the scan.
TIME_RANGE_PROBE = 10_000


def page(session: Session, organization_id: str, flt: AuditFilter | None, *, before_seq: int | None,
         limit: int, budget: float | None = None,
         clock: Callable[[], float] = time.monotonic) -> tuple[list[AuditEvent], int | None]:
    """Newest-first page of at most *limit* events with ``seq`` below *before_seq*; returns the events and the
    ``seq`` to continue before (``None``: no older event matches).

    Past *budget* seconds (default :data:`PAGE_BUDGET`; ``HATIDATA_AUDIT_PAGE_BUDGET``) the page may hold fewer
    than *limit* events, even none, with a ``seq`` to continue before: following it yields exactly the matching
    events, each once, newest first."""
    flt = flt or AuditFilter()
    deadline = clock() + (PAGE_BUDGET if budget is None else budget)
    bounds = _seq_bounds(session, organization_id, flt)
    if bounds is None:
        return [], None
    low, top = bounds
    if before_seq is not None:
        top = min(top, before_seq - 1)
    rows: list[AuditEvent] = []
    window = PAGE_WINDOW
    while top >= low:
        bottom = max(low, top - window + 1)
        query = (filtered(organization_id, flt).where(AuditEvent.seq.between(bottom, top))
                 .order_by(AuditEvent.seq.desc()).limit(limit + 1 - len(rows)))
        rows.extend(session.scalars(query))
        if len(rows) > limit:
            return rows[:limit], rows[limit - 1].seq
        top, window = bottom - 1, window * 2
        if top >= low and clock() >= deadline:
            return rows, top + 1
    return rows, None


def _seq_bounds(session: Session, organization_id: str, flt: AuditFilter) -> tuple[int, int] | None:
    """The inclusive ``seq`` range that can hold *flt*'s events (``None``: none can): the chain's, narrowed to a
    time range's exact ``seq`` range when that range holds fewer than :data:`TIME_RANGE_PROBE` events."""
    chain = filtered(organization_id, None).with_only_columns(AuditEvent.seq)
    first = session.scalar(chain.order_by(AuditEvent.seq).limit(1))
    if first is None:
        return None
    last = int(session.scalar(chain.order_by(AuditEvent.seq.desc()).limit(1)) or first)
    if flt.since is None and flt.until is None:
        return int(first), last
    in_range = filtered(organization_id, AuditFilter(since=flt.since, until=flt.until))
    # In time order: the probe reads the first entries of the range in ``ix_audit_org_time`` and stops at the
    # limit (unordered, PostgreSQL may scan the table up to the limit's match).
    probe = (in_range.with_only_columns(AuditEvent.seq).order_by(AuditEvent.created_at)
             .limit(TIME_RANGE_PROBE).subquery())
    low, high, count = session.execute(select(func.min(probe.c.seq), func.max(probe.c.seq), func.count())).one()
    if count == 0:
        return None
    if count < TIME_RANGE_PROBE:
        return int(low), int(high)
    return int(first), last


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


@dataclass(frozen=True, slots=True)
class AuditEventView:
    """An audit event as its reader may see it: ``details`` already redacted for that reader (:func:`event_view`);
    ``hash`` covers the stored details."""

    id: str
    organization_id: str | None
    seq: int
    created_at: datetime
    actor_type: str
    actor_id: str | None
    actor_email: str | None
    action: str
    target_type: str | None
    target_id: str | None
    outcome: str
    ip_address: str | None
    user_agent: str | None
    request_id: str | None
    source_event_id: str | None
    details: dict[str, Any]
    prev_hash: str
    hash: str

    def to_json(self) -> dict[str, Any]:
        """The event's JSON object: the API's, and one line of the NDJSON export (docs/audit.md)."""
        return {
            "id": self.id,
            "organization_id": self.organization_id,
            "seq": self.seq,
            "created_at": self.created_at.isoformat(timespec="microseconds"),
            "actor": {"type": self.actor_type, "id": self.actor_id, "email": self.actor_email},
            "action": self.action,
            "target": {"type": self.target_type, "id": self.target_id},
            "outcome": self.outcome,
            "ip_address": self.ip_address,
            "user_agent": self.user_agent,
            "request_id": self.request_id,
            "source_event_id": self.source_event_id,
            "details": self.details,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }

    def csv_row(self) -> list[Any]:
        """The event's row of the CSV export, in :data:`CSV_COLUMNS` order (``details`` as JSON); every text cell
        passes :func:`csv_cell` in :func:`csv_line`."""
        return [
            self.id, self.organization_id, self.seq, self.created_at.isoformat(timespec="microseconds"),
            self.actor_type, self.actor_id, self.actor_email, self.action, self.target_type, self.target_id,
            self.outcome, self.ip_address, self.user_agent, self.request_id, self.source_event_id,
            json.dumps(self.details, sort_keys=True, ensure_ascii=False), self.prev_hash, self.hash,
        ]


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A CSV cell a spreadsheet will not run: text starting with ``= + - @``, tab or CR gets a leading ``'``
    (OWASP CSV injection); numbers stay numbers."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_line(cells: Sequence[Any]) -> str:
    """One CSV record (RFC 4180: CRLF ends it, so a CR or LF inside a cell is quoted and never splits the row),
    each cell through :func:`csv_cell`."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow([csv_cell(cell) for cell in cells])
    return buffer.getvalue()


def event_view(event: AuditEvent, *, reveal_session_ids: bool = False) -> AuditEventView:
    """The one view of an event (the API's and the exports'). ``details`` hide WorkOS session ids unless
    *reveal_session_ids* (a reader who may revoke sessions)."""
    details = event.details or {}
    return AuditEventView(
        id=event.public_id, organization_id=event.organization_id, seq=event.seq, created_at=event.created_at,
        actor_type=event.actor_type, actor_id=event.actor_id, actor_email=event.actor_email, action=event.action,
        target_type=event.target_type, target_id=event.target_id, outcome=event.outcome,
        ip_address=event.ip_address, user_agent=event.user_agent, request_id=event.request_id,
        source_event_id=event.source_event_id, details=details if reveal_session_ids else redacted(details),
        prev_hash=event.prev_hash, hash=event.hash)


def events_page(session: Session, organization_id: str, flt: AuditFilter | None, *, before_seq: int | None,
                limit: int, reveal_session_ids: bool = False,
                budget: float | None = None) -> tuple[list[AuditEventView], int | None]:
    """:func:`page` as the reader may see it (:func:`event_view`)."""
    rows, next_seq = page(session, organization_id, flt, before_seq=before_seq, limit=limit, budget=budget)
    return [event_view(e, reveal_session_ids=reveal_session_ids) for e in rows], next_seq


def get_event_view(session: Session, organization_id: str, public_id: str, *,
                   reveal_session_ids: bool = False) -> AuditEventView | None:
    """:func:`get_event` as the reader may see it (:func:`event_view`)."""
    event = get_event(session, organization_id, public_id)
    return None if event is None else event_view(event, reveal_session_ids=reveal_session_ids)


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
    """One JSON object per line (:meth:`AuditEventView.to_json`), in chain order."""
    for event in iter_events(session, organization_id, flt):
        view = event_view(event, reveal_session_ids=reveal_session_ids)
        yield json.dumps(view.to_json(), sort_keys=True, ensure_ascii=False, default=str) + "\n"


def export_csv(session: Session, organization_id: str | None, flt: AuditFilter | None = None, *,
               reveal_session_ids: bool = False) -> Iterator[str]:
    """A header line, then one CSV row per event (:meth:`AuditEventView.csv_row`), in chain order."""
    yield csv_line(CSV_COLUMNS)
    for event in iter_events(session, organization_id, flt):
        yield csv_line(event_view(event, reveal_session_ids=reveal_session_ids).csv_row())


EXPORT_FORMATS = {"ndjson": (export_ndjson, "application/x-ndjson"), "csv": (export_csv, "text/csv")}


def chain_owners(session: Session) -> list[str | None]:
    """Every organization id that has a chain (``None`` for the events of no tenant)."""
    rows = session.scalars(select(AuditEvent.organization_id).distinct())
    return sorted(rows, key=lambda v: (v is not None, v or ""))


def verify_all(session: Session, organization_ids: Sequence[str | None] | None = None, *, full: bool = True,
               signer: Any = None, previous: Sequence[str] | str | None = ()) -> list[audit.ChainReport]:
    """Verify the named chains (default: every chain in the database): each from its newest trusted checkpoint
    unless *full* (the events of no organization have no checkpoints)."""
    from . import audit_checkpoints, audit_signing

    owners = list(organization_ids) if organization_ids is not None else chain_owners(session)
    keys = {} if full else audit_signing.trusted_keys(signer, previous)
    return [audit.verify_organization(session, org_id) if full or org_id is None
            else audit_checkpoints.verify(session, org_id, keys).report for org_id in owners]
