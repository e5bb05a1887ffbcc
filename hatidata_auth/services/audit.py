"""Writing and verifying the audit log.

Events are appended in the caller's transaction, so a change and its audit event commit or roll back
together. Each organization's events form a hash chain: ``hash = sha256(prev_hash + canonical_json)``.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from ..context import NO_REQUEST, Actor, RequestInfo
from ..models import AuditEvent, new_id, utcnow

GENESIS_HASH = "0" * 64


def canonical_json(event: AuditEvent) -> str:
    """Return the canonical JSON of the fields an event's hash covers."""
    created = event.created_at
    body = {
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
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def chain_hash(prev_hash: str, event: AuditEvent) -> str:
    """Return the hash of *event* chained after *prev_hash*."""
    return hashlib.sha256((prev_hash + canonical_json(event)).encode()).hexdigest()


def _lock_chain(session: Session, organization_id: str | None) -> None:
    # Serialise appends to one organization's chain across processes (PostgreSQL only; SQLite's
    # single writer already serialises them).
    if session.get_bind().dialect.name == "postgresql":
        key = zlib.crc32((organization_id or "-").encode())
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})


def record(
    session: Session,
    *,
    action: str,
    actor: Actor,
    organization_id: str | None,
    target_type: str | None = None,
    target_id: str | None = None,
    outcome: str = "success",
    request: RequestInfo = NO_REQUEST,
    source_event_id: str | None = None,
    details: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> AuditEvent:
    """Append one audit event to *session* (the caller commits it with the change it describes)."""
    _lock_chain(session, organization_id)
    head = session.execute(
        select(AuditEvent.seq, AuditEvent.hash)
        .where(AuditEvent.organization_id.is_(None) if organization_id is None
               else AuditEvent.organization_id == organization_id)
        .order_by(AuditEvent.seq.desc())
        .limit(1)
    ).first()
    prev_seq, prev_hash = (head[0], head[1]) if head else (0, GENESIS_HASH)
    event = AuditEvent(
        public_id=new_id("evt"),
        organization_id=organization_id,
        seq=prev_seq + 1,
        actor_type=actor.type,
        actor_id=actor.id,
        actor_email=actor.email,
        action=action,
        target_type=target_type,
        target_id=target_id,
        outcome=outcome,
        ip_address=request.ip_address,
        user_agent=(request.user_agent or None) and request.user_agent[:512],
        request_id=request.request_id,
        source_event_id=source_event_id,
        details=details or {},
        created_at=at or utcnow(),
        prev_hash=prev_hash,
    )
    event.hash = chain_hash(prev_hash, event)
    session.add(event)
    session.flush()
    return event


@dataclass(frozen=True, slots=True)
class ChainReport:
    """The result of verifying one organization's chain."""

    organization_id: str | None
    checked: int
    first_broken_seq: int | None
    problem: str | None

    @property
    def ok(self) -> bool:
        """Whether every link held."""
        return self.first_broken_seq is None


def verify_chain(events: Iterable[AuditEvent], organization_id: str | None) -> ChainReport:
    """Check events (in ``seq`` order) link up; name the first broken link."""
    prev_hash = GENESIS_HASH
    expected_seq = 1
    checked = 0
    for event in events:
        if event.seq != expected_seq:
            return ChainReport(organization_id, checked, expected_seq,
                               f"expected event #{expected_seq}, found #{event.seq} (missing or reordered)")
        if event.prev_hash != prev_hash:
            return ChainReport(organization_id, checked, event.seq, "prev_hash does not match the previous event")
        if chain_hash(prev_hash, event) != event.hash:
            return ChainReport(organization_id, checked, event.seq, "content does not match its hash (edited)")
        prev_hash = event.hash
        expected_seq += 1
        checked += 1
    return ChainReport(organization_id, checked, None, None)


def verify_organization(session: Session, organization_id: str | None) -> ChainReport:
    """Verify one organization's chain, streaming it from the database."""
    query = (
        select(AuditEvent)
        .where(AuditEvent.organization_id.is_(None) if organization_id is None
               else AuditEvent.organization_id == organization_id)
        .order_by(AuditEvent.seq)
        .execution_options(yield_per=500)
    )
    return verify_chain(session.scalars(query), organization_id)


def count(session: Session, organization_id: str | None = None, action: str | None = None) -> int:
    """Count audit events, optionally of one organization and action."""
    query = select(func.count()).select_from(AuditEvent)
    if organization_id is not None:
        query = query.where(AuditEvent.organization_id == organization_id)
    if action is not None:
        query = query.where(AuditEvent.action == action)
    return int(session.execute(query).scalar_one())
