"""Bulk-seed one organization's audit chain for ``bench/audit_scale.py`` (10M events in minutes, not hours).

The events are the same as the ORM seeder's (``audit_scale.seed``) and hash exactly as ``services.audit`` hashes
them (``canonical_json`` over the stored fields, chained with ``chain_hash``'s rule), so every reader, verifier and
the next real append treat the chain as their own. On PostgreSQL the rows go in with ``COPY`` while the secondary
indexes are dropped, and the indexes are rebuilt from their own definitions afterwards; elsewhere with multi-row
inserts. With a signer, a signed checkpoint is stored every *every* events, as the checkpoint worker would have
left them (the steady state of a long-running deployment).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, text
from sqlalchemy.orm import Session

from hatidata_auth.models import AuditChainHead, AuditCheckpoint, AuditEvent
from hatidata_auth.services import audit, audit_signing

T0 = datetime(2026, 1, 1, tzinfo=UTC)
COLUMNS = ("public_id", "organization_id", "seq", "actor_type", "actor_id", "actor_email", "action", "target_type",
           "target_id", "outcome", "ip_address", "user_agent", "request_id", "source_event_id", "details",
           "created_at", "prev_hash", "hash")


@dataclass(slots=True)
class _Event:
    """The fields ``audit.canonical_json`` reads (duck-typed: no ORM instance per row)."""

    public_id: str
    organization_id: str
    seq: int
    actor_type: str
    actor_id: str
    actor_email: str
    action: str
    target_type: str
    target_id: str
    outcome: str
    ip_address: str
    user_agent: str
    request_id: str
    source_event_id: None
    details: dict[str, Any]
    created_at: datetime


def event(organization_id: str, seq: int) -> _Event:
    """The *seq*-th bench event (1-based), as ``audit_scale.seed`` records its ``seq - 1``-th."""
    i = seq - 1
    target_type = ("session", "api_key", "membership", "user", "role")[i % 5]
    return _Event(f"evt_b{organization_id[-10:]}{seq:012d}", organization_id, seq,
                  "api_key" if i % 10 == 3 else "user", f"usr_{i % 7}",
                  f"u{i % 7}@x.test", f"bench.action{i % 3}", target_type, f"ses_{i % 11}",
                  "failure" if i % 5 == 0 else "success", "10.0.0.1", "bench", f"r{i}", None,
                  {"i": i}, T0 + timedelta(seconds=i))


def chained(organization_id: str, count: int, *, after_seq: int = 0,
            prev_hash: str = audit.GENESIS_HASH) -> Iterator[tuple[Any, ...]]:
    """Rows (values in :data:`COLUMNS` order) of events ``after_seq + 1 … after_seq + count``, chained."""
    for seq in range(after_seq + 1, after_seq + count + 1):
        e = event(organization_id, seq)
        digest = hashlib.sha256((prev_hash + audit.canonical_json(e)).encode()).hexdigest()  # type: ignore[arg-type]
        yield (e.public_id, organization_id, seq, e.actor_type, e.actor_id, e.actor_email, e.action, e.target_type,
               e.target_id, e.outcome, e.ip_address, e.user_agent, e.request_id, None, e.details, e.created_at,
               prev_hash, digest)
        prev_hash = digest


def seed(session: Session, organization_id: str, count: int, *, signer: audit_signing.Signer | None = None,
         every: int = 1000, progress: Callable[[int], None] | None = None) -> str:
    """Append *count* events to the (empty) chain of *organization_id* and commit; returns the head's hash.

    *progress* is called with the number of events written so far, every 100,000."""
    marks: list[tuple[int, str]] = []
    head = audit.GENESIS_HASH

    def rows() -> Iterator[tuple[Any, ...]]:
        nonlocal head
        for row in chained(organization_id, count):
            seq, head = row[2], row[-1]
            if signer is not None and seq % every == 0:
                marks.append((seq, head))
            if progress is not None and seq % 100_000 == 0:
                progress(seq)
            yield row

    if session.get_bind().dialect.name == "postgresql":
        _copy(session, rows())
    else:
        _insert(session, rows())
    session.merge(AuditChainHead(chain_key=organization_id, seq=count, hash=head))
    if signer is not None:
        now = T0 + timedelta(seconds=count)
        audit_signing.register(session, signer, now=now)
        checkpoints = [{"organization_id": organization_id, "seq": seq, "hash": digest, "kid": signer.kid,
                        "signature": signer.sign(organization_id, seq, digest), "created_at": now}
                       for seq, digest in marks]
        for start in range(0, len(checkpoints), 5000):
            session.execute(insert(AuditCheckpoint), checkpoints[start:start + 5000])
    session.commit()
    return head


def _insert(session: Session, rows: Iterator[tuple[Any, ...]]) -> None:
    table = AuditEvent.__table__
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(dict(zip(COLUMNS, row, strict=True)))
        if len(batch) == 5000:
            session.execute(insert(table), batch)
            batch = []
    if batch:
        session.execute(insert(table), batch)


def _copy(session: Session, rows: Iterator[tuple[Any, ...]]) -> None:
    """COPY the rows with only the constraint indexes (primary key, unique public id) kept, then rebuild the others
    from their stored definitions, in the same transaction."""
    session.execute(text("SET LOCAL maintenance_work_mem = '512MB'"))
    definitions = session.execute(text(
        "SELECT i.relname, pg_get_indexdef(x.indexrelid) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
        "WHERE x.indrelid = 'audit_events'::regclass AND NOT EXISTS "
        "(SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)")).all()
    for name, _ in definitions:
        session.execute(text(f'DROP INDEX "{name}"'))
    raw = session.connection().connection.driver_connection
    assert raw is not None
    with raw.cursor() as cursor, cursor.copy(f"COPY audit_events ({', '.join(COLUMNS)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row((*row[:14], json.dumps(row[14]), *row[15:]))
    for _, definition in definitions:
        session.execute(text(definition))

