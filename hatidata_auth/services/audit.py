"""Writing and verifying the audit log.

Events are appended in the caller's transaction, so a change and its audit event commit or roll back
together. Each organization's events form a hash chain: ``hash = sha256(prev_hash + canonical_json)``; the
chain's head (last ``seq`` and ``hash``) is kept in ``audit_chain_heads`` and locked while appending: by
``SELECT … FOR UPDATE`` of the head row on PostgreSQL, by the database's write lock on SQLite (taken with a
write to the head before reading it), so appends from any number of threads and processes are serialized.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import String, bindparam, func, insert, select, update
from sqlalchemy import event as sa_event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from .. import metrics
from ..causes import Cause
from ..models import AuditChainHead, AuditEvent, new_id, utcnow
from ..models.base import BinaryArray
from ..unit_of_work import AppSession, built_from_values, unit_of_work

GENESIS_HASH = "0" * 64


def canonical_json(event: AuditEvent) -> str:
    """Return the canonical JSON of the fields an event's hash covers."""
    created = event.created_at
    return canonical_dumps({
        "public_id": event.public_id,
        "organization_id": event.organization_id,
        "seq": event.seq,
        "actor": {"type": event.actor_type, "id": event.actor_id, "email": event.actor_email},
        "action": event.action,
        "target": {"type": event.target_type, "id": event.target_id},
        "outcome": event.outcome,
        "ip_address": event.ip_address,
        "user_agent": event.user_agent,
        "request_id": event.request_id,
        "source_event_id": event.source_event_id,
        "details": event.details,
        "created_at": created.isoformat(timespec="microseconds") if created else None,
    })


def canonical_dumps(body: dict[str, Any]) -> str:
    """The canonical JSON text of an event's hashed fields (sorted keys, no spaces)."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def chain_hash(prev_hash: str, event: AuditEvent) -> str:
    """Return the hash of *event* chained after *prev_hash*."""
    return hashlib.sha256((prev_hash + canonical_json(event)).encode()).hexdigest()


# The transaction's audit events in the order recorded, and how many of them (a prefix) are written.
_PENDING_KEY = "hatidata_audit_pending"
_WRITTEN_KEY = "hatidata_audit_written"
_HEADS_KEY = "hatidata_audit_heads"  # {chain key: (seq, hash)} this transaction holds locked and wrote last
_MARKS_KEY = "hatidata_audit_savepoints"  # {open savepoint: (events recorded, events written) when it began}
_DEFER_KEY = "hatidata_audit_deferred"  # set: a savepoint's commit leaves the events pending (:func:`deferred`)
_NO_ORG_KEY = "-"  # chain key of the events that belong to no organization (organization ids never look like this)


_AUDIT_COLUMNS = tuple(c.key for c in AuditEvent.__table__.columns if c.key != "id")


def _chain_key(organization_id: str | None) -> str:
    return organization_id or _NO_ORG_KEY


def record(
    session: Session,
    *,
    action: str,
    cause: Cause,
    organization_id: str | None,
    target_type: str | None = None,
    target_id: str | None = None,
    outcome: str = "success",
    details: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> AuditEvent:
    """Append one audit event to *session*'s transaction (the caller commits it with the change it describes).

    The event is chained (``seq``, ``prev_hash``, ``hash``) and written when the transaction commits, after
    everything else it holds is flushed: the organization's chain is locked only for that last moment, by
    one ``SELECT … FOR UPDATE`` of its head row, and all the transaction's events of that organization are
    inserted together. A rollback drops them with the change.
    """
    # Built without the ORM constructor's per-attribute events: a batch records three events per created user.
    event = built_from_values(AuditEvent, dict(
        public_id=new_id("evt"),
        organization_id=organization_id,
        actor_type=cause.actor.type,
        actor_id=cause.actor.id,
        actor_email=cause.actor.email,
        action=action,
        target_type=target_type,
        target_id=target_id,
        outcome=outcome,
        ip_address=cause.request.ip_address,
        user_agent=(cause.request.user_agent or None) and cause.request.user_agent[:512],
        request_id=cause.request.request_id,
        source_event_id=cause.source_event_id,
        details=details or {},
        # Hashed as it is stored (UTC): the isoformat of another offset broke the chain (a naive value is refused).
        created_at=at.astimezone(UTC) if at is not None and at.tzinfo is not None else at or utcnow(),
    ))
    unit_of_work(session).info.setdefault(_PENDING_KEY, []).append(event)
    return event


def pending(session: Session) -> list[AuditEvent]:
    """Audit events recorded in *session*'s current transaction and not yet written."""
    return list((session.info.get(_PENDING_KEY) or [])[session.info.get(_WRITTEN_KEY, 0):])


def pending_count(session: Session) -> int:
    """How many audit events *session*'s transaction holds so far: a mark for :func:`discard_after`."""
    return len(session.info.get(_PENDING_KEY) or [])


def discard_after(session: Session, mark: int) -> None:
    """Drop the audit events recorded after *mark* (:func:`pending_count`): the work they describe was rolled
    back to a savepoint. (A savepoint's rollback does this by itself: :func:`_undo_savepoint`.)"""
    events = session.info.get(_PENDING_KEY)
    if events:
        del events[mark:]
        session.info[_WRITTEN_KEY] = min(session.info.get(_WRITTEN_KEY, 0), mark)


@contextmanager
def deferred(session: Session) -> Iterator[None]:
    """Within the block, a savepoint's commit leaves its audit events pending: all the transaction's events are
    chained and written at its outer commit, in one statement and under one lock of each chain head (an
    applier's batch: each event under its savepoint). A savepoint rolled back still drops its own events.

    Leave every savepoint opened in the block closed before the outer commit: SQLAlchemy fires the outer
    ``before_commit`` first when it commits a transaction with savepoints still open."""
    session.info[_DEFER_KEY] = True
    try:
        yield
    finally:
        session.info.pop(_DEFER_KEY, None)


def _take_write_lock(session: Session, key: str) -> None:
    """Serialize appends on SQLite, which ignores ``FOR UPDATE``: write before reading the head.

    A write takes the database's write lock (held by this transaction until it ends, and waited for by
    every other connection, in any process, up to the busy timeout), so the head read next cannot be
    stale. The driver opens the transaction before an UPDATE, never before a SELECT: reading first would
    read outside the lock and let two appends take the same ``seq``.
    """
    table = AuditChainHead.__table__
    session.execute(update(table).where(table.c.chain_key == key).values(seq=table.c.seq))


def _head_for_update(session: Session, key: str) -> tuple[int, str]:
    held = session.info.get(_HEADS_KEY)
    if held and key in held:
        # This transaction locked and moved the head already (an earlier event of an applier's batch, each under
        # its savepoint): the lock is held until the transaction ends, so no one else moved it since.
        return held[key]
    if session.get_bind().dialect.name == "sqlite":
        _take_write_lock(session, key)
    query = select(AuditChainHead.seq, AuditChainHead.hash).where(AuditChainHead.chain_key == key).with_for_update()
    head = session.execute(query).first()
    if head is not None:
        return int(head[0]), str(head[1])
    # First append to this chain (or a chain written before head rows existed): start the head row from the
    # chain's last event; a concurrent first append is resolved by the primary key, then the lock.
    last = session.execute(
        select(AuditEvent.seq, AuditEvent.hash)
        .where(AuditEvent.organization_id.is_(None) if key == _NO_ORG_KEY else AuditEvent.organization_id == key)
        .order_by(AuditEvent.seq.desc()).limit(1)
    ).first()
    seq, prev = (int(last[0]), str(last[1])) if last else (0, GENESIS_HASH)
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(insert(AuditChainHead).values(chain_key=key, seq=seq, hash=prev)
                    .on_conflict_do_nothing(index_elements=["chain_key"]))
    head = session.execute(query).first()
    assert head is not None
    return int(head[0]), str(head[1])


def flush_pending(session: Session) -> int:
    """Chain and write the transaction's pending audit events now (normally done at commit); returns how many."""
    recorded: list[AuditEvent] = session.info.get(_PENDING_KEY) or []
    events = recorded[session.info.get(_WRITTEN_KEY, 0):]
    if not events:
        return 0
    if unit_of_work(session).in_nested_transaction():
        session.info[_WRITTEN_KEY] = len(recorded)  # a savepoint rolled back after this write resets it
    else:  # no savepoint is open that could undo the write: the written events need no keeping
        del recorded[:]
        session.info.pop(_MARKS_KEY, None)
    session.flush()  # the change itself first, so the chain lock is held only for the audit rows
    by_chain: dict[str, list[AuditEvent]] = {}
    for event in events:
        by_chain.setdefault(_chain_key(event.organization_id), []).append(event)
    heads: dict[str, tuple[int, str]] = {}
    for key in sorted(by_chain):  # a fixed lock order: no deadlock between transactions touching two chains
        seq, prev_hash = _head_for_update(session, key)
        for event in by_chain[key]:
            seq += 1
            event.seq, event.prev_hash = seq, prev_hash
            event.hash = prev_hash = chain_hash(prev_hash, event)
        heads[key] = (seq, prev_hash)
    if session.get_bind().dialect.name == "postgresql":
        # One statement of fixed text, whatever the batch holds: the rows as one array per column (unnest) and the
        # heads moved in a data-modifying CTE, so the whole audit trail costs one round trip after the lock. A
        # statement with a row of parameters per event (multi-row VALUES, or a CTE per row) was compiled anew for
        # every batch size: 14 ms at 20 rows, 67 ms at 50, most of an applier's CPU in a fresh process.
        params: dict[str, Any] = {c: [getattr(event, c) for event in events] for c in _AUDIT_COLUMNS}
        params.update(head_key=list(heads), head_seq=[seq for seq, _ in heads.values()],
                      head_hash=[head_hash for _, head_hash in heads.values()])
        session.execute(_unnest_statement(), params)
    else:
        # SQLite: one compiled INSERT executed over the rows (one executemany; the ORM sent one INSERT per event).
        session.execute(insert(AuditEvent.__table__), [{c: getattr(event, c) for c in _AUDIT_COLUMNS}
                                                       for event in events])
        heads_table = AuditChainHead.__table__
        for key, (seq, head_hash) in heads.items():
            session.execute(update(heads_table).where(heads_table.c.chain_key == key).values(seq=seq, hash=head_hash))
    metrics.audit_written(session, events)  # the ORM's after_flush hook does not see a Core INSERT
    session.info.setdefault(_HEADS_KEY, {}).update(heads)
    return len(events)


def _array_of(column: Any) -> Any:
    """The PostgreSQL array type a column's values are sent as, in binary format (``models.base.BinaryArray``):
    ``VARCHAR[]`` for a ``VARCHAR(n)``, since an explicit cast to ``VARCHAR(n)`` would truncate an over-long value
    silently (and break its hash), while the INSERT's assignment to the column refuses it, as a bound parameter
    would."""
    item = column.type
    return BinaryArray(String() if isinstance(item, String) else item)


@functools.cache
def _unnest_statement() -> Any:
    """The PostgreSQL statement that inserts the audit rows given as one array per column (bound parameters named
    after the columns, in recorded order) and moves the chain heads given as ``head_key`` / ``head_seq`` /
    ``head_hash`` arrays. Built once: its text and parameters do not depend on how many rows or chains it takes."""
    table, heads = AuditEvent.__table__, AuditChainHead.__table__

    def arrays(*pairs: tuple[str, Any]) -> list[Any]:
        # The psycopg dialect renders each with its cast (``%(seq)s::BIGINT[]``): unnest() needs the types.
        return [bindparam(name, type_=_array_of(column)) for name, column in pairs]

    rows = func.unnest(*arrays(*((c, table.c[c]) for c in _AUDIT_COLUMNS))).table_valued(
        *_AUDIT_COLUMNS, with_ordinality="ordinal").render_derived(name="audit_row")
    inserted = insert(table).from_select(list(_AUDIT_COLUMNS), select(*(rows.c[c] for c in _AUDIT_COLUMNS))
                                         .order_by(rows.c.ordinal)).cte("inserted")
    moved = func.unnest(*arrays(("head_key", heads.c.chain_key), ("head_seq", heads.c.seq),
                                ("head_hash", heads.c.hash))).table_valued(
        "chain_key", "seq", "hash").render_derived(name="moved")
    return (update(heads).where(heads.c.chain_key == moved.c.chain_key)
            .values(seq=moved.c.seq, hash=moved.c.hash).add_cte(inserted))


@sa_event.listens_for(AppSession, "before_commit")
def _write_pending_on_commit(session: Session) -> None:
    # SQLAlchemy fires before_commit for a savepoint's commit (release) too.
    if not (session.info.get(_DEFER_KEY) and unit_of_work(session).in_nested_transaction()):
        flush_pending(session)


@sa_event.listens_for(AppSession, "after_transaction_create")
def _mark_savepoint(session: Session, transaction: Any) -> None:
    if transaction.nested:
        session.info.setdefault(_MARKS_KEY, {})[transaction] = (pending_count(session),
                                                                session.info.get(_WRITTEN_KEY, 0))


@sa_event.listens_for(AppSession, "after_transaction_end")
def _drop_pending(session: Session, transaction: Any) -> None:
    if transaction.parent is None:  # the outermost transaction ended (committed or rolled back)
        for key in (_PENDING_KEY, _WRITTEN_KEY, _HEADS_KEY, _MARKS_KEY):
            session.info.pop(key, None)


@sa_event.listens_for(AppSession, "after_soft_rollback")
def _undo_savepoint(session: Session, previous_transaction: Any) -> None:
    # Any rollback, a savepoint's included, may have undone a head this transaction moved: read it again.
    session.info.pop(_HEADS_KEY, None)
    mark = (session.info.get(_MARKS_KEY) or {}).pop(previous_transaction, None)
    if mark is None:
        return
    recorded, written = mark
    # The savepoint's own events go with its work; events recorded before it and written inside it (an explicit
    # flush_pending) lost their rows: pending again, chained anew at the next write.
    discard_after(session, recorded)
    if session.info.get(_WRITTEN_KEY, 0) > written:
        for event in session.info[_PENDING_KEY][written:]:
            event.id = None  # its row was rolled back: the next insert numbers it again
        session.info[_WRITTEN_KEY] = written


@dataclass(frozen=True, slots=True)
class ChainReport:
    """The result of verifying one organization's chain (or its events after ``from_seq``)."""

    organization_id: str | None
    checked: int
    first_broken_seq: int | None
    problem: str | None
    from_seq: int = 0
    last_seq: int = 0
    last_hash: str = GENESIS_HASH
    complete: bool = True  # False: the budget ran out; continue after (last_seq, last_hash)

    @property
    def ok(self) -> bool:
        """Whether every link held."""
        return self.first_broken_seq is None


def verify_chain(events: Iterable[AuditEvent], organization_id: str | None, *, after_seq: int = 0,
                 prev_hash: str = GENESIS_HASH, deadline: float | None = None,
                 clock: Callable[[], float] = time.monotonic, check_every: int = 500,
                 on_link: Callable[[int, str], None] | None = None) -> ChainReport:
    """Check events (in ``seq`` order, those after *after_seq* whose predecessor hashed to *prev_hash*) link up;
    name the first broken link. Past *deadline* (checked every *check_every* events, so every call progresses)
    the report is incomplete and says where to continue."""
    expected_seq = after_seq + 1
    checked = 0
    for event in events:
        if event.seq != expected_seq:
            return ChainReport(organization_id, checked, expected_seq,
                               f"expected event #{expected_seq}, found #{event.seq} (missing or reordered)",
                               after_seq, expected_seq - 1, prev_hash)
        if event.prev_hash != prev_hash:
            return ChainReport(organization_id, checked, event.seq, "prev_hash does not match the previous event",
                               after_seq, expected_seq - 1, prev_hash)
        if chain_hash(prev_hash, event) != event.hash:
            return ChainReport(organization_id, checked, event.seq, "content does not match its hash (edited)",
                               after_seq, expected_seq - 1, prev_hash)
        prev_hash = event.hash
        expected_seq += 1
        checked += 1
        if on_link is not None:
            on_link(event.seq, event.hash)
        if deadline is not None and checked % check_every == 0 and clock() >= deadline:
            return ChainReport(organization_id, checked, None, None, after_seq, expected_seq - 1, prev_hash,
                               complete=False)
    return ChainReport(organization_id, checked, None, None, after_seq, expected_seq - 1, prev_hash)


def verify_organization(session: Session, organization_id: str | None, *, after_seq: int = 0,
                        prev_hash: str = GENESIS_HASH, deadline: float | None = None,
                        clock: Callable[[], float] = time.monotonic,
                        on_link: Callable[[int, str], None] | None = None) -> ChainReport:
    """Verify one organization's chain (after *after_seq*), streaming it from the database."""
    query = (
        select(AuditEvent)
        .where(AuditEvent.organization_id.is_(None) if organization_id is None
               else AuditEvent.organization_id == organization_id)
        .where(AuditEvent.seq > after_seq)
        .order_by(AuditEvent.seq)
        .execution_options(yield_per=500)
    )
    return verify_chain(session.scalars(query), organization_id, after_seq=after_seq, prev_hash=prev_hash,
                        deadline=deadline, clock=clock, on_link=on_link)


def count(session: Session, organization_id: str | None = None, action: str | None = None) -> int:
    """Count audit events, optionally of one organization and action."""
    query = select(func.count()).select_from(AuditEvent)
    if organization_id is not None:
        query = query.where(AuditEvent.organization_id == organization_id)
    if action is not None:
        query = query.where(AuditEvent.action == action)
    return int(session.execute(query).scalar_one())
