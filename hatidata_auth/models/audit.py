"""The audit log: append-only and hash-chained per organization."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .base import UTCDateTime, utcnow


class AuditEvent(db.Model):  # type: ignore[name-defined]
    """One authentication, provisioning, session, key or configuration event.

    ``organization_id`` is empty only for events that belong to no tenant (e.g. a webhook with a bad
    signature). ``hash`` covers ``prev_hash`` and the event's canonical JSON, chaining the events of one
    organization in ``seq`` order.
    """

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_org_seq", "organization_id", "seq", unique=True),
        Index("ix_audit_org_time", "organization_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    public_id: Mapped[str] = mapped_column(String(40), unique=True, nullable=False)
    organization_id: Mapped[str | None] = mapped_column(String(40))
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    actor_type: Mapped[str] = mapped_column(String(16), nullable=False)
    actor_id: Mapped[str | None] = mapped_column(String(64))
    actor_email: Mapped[str | None] = mapped_column(String(320))
    action: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    target_type: Mapped[str | None] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16), default="success", nullable=False)
    ip_address: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    request_id: Mapped[str | None] = mapped_column(String(64))
    source_event_id: Mapped[str | None] = mapped_column(String(64), index=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    prev_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    hash: Mapped[str] = mapped_column(String(64), nullable=False)


class AuditChainHead(db.Model):  # type: ignore[name-defined]
    """The last link of one organization's audit chain (``chain_key`` = organization id, ``-`` for none).

    Appending locks this one row (``SELECT … FOR UPDATE``) instead of searching ``audit_events`` for the head:
    one statement serialises the appends of one organization across processes and yields the previous link.
    """

    __tablename__ = "audit_chain_heads"

    chain_key: Mapped[str] = mapped_column(String(40), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    hash: Mapped[str] = mapped_column(String(64), nullable=False)
