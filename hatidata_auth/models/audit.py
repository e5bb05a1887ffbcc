"""The audit log: append-only and hash-chained per organization."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Index, Integer, String
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
        # ``seq`` last: a time range's seq range (``audit_queries._seq_bounds``) is read from the index alone.
        Index("ix_audit_org_time", "organization_id", "created_at", "seq"),
        # One per filter of the API (``audit_queries.filtered``), ending in ``seq``: a page reads its rows in
        # index order (newest first) whatever the chain's length.
        Index("ix_audit_org_actor_id_seq", "organization_id", "actor_id", "seq"),
        Index("ix_audit_org_actor_type_seq", "organization_id", "actor_type", "seq"),
        Index("ix_audit_org_actor_email_seq", "organization_id", "actor_email", "seq"),
        Index("ix_audit_org_action_seq", "organization_id", "action", "seq"),
        Index("ix_audit_org_target_type_seq", "organization_id", "target_type", "seq"),
        Index("ix_audit_org_target_id_seq", "organization_id", "target_id", "seq"),
        Index("ix_audit_org_outcome_seq", "organization_id", "outcome", "seq"),
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
    action: Mapped[str] = mapped_column(String(64), nullable=False)
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


class AuditSigningKey(db.Model):  # type: ignore[name-defined]
    """A public key that signs (or signed) audit checkpoints; kept after rotation so old checkpoints still verify.

    ``kid`` is derived from the public key (:func:`hatidata_auth.services.audit_signing.key_id`); the private key
    is never stored here (``HATIDATA_AUDIT_SIGNING_KEY``).
    """

    __tablename__ = "audit_signing_keys"

    kid: Mapped[str] = mapped_column(String(40), primary_key=True)
    algorithm: Mapped[str] = mapped_column(String(16), nullable=False, default="Ed25519")
    public_key: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class AuditCheckpoint(db.Model):  # type: ignore[name-defined]
    """A signed statement that one organization's chain had ``hash`` at ``seq`` (docs/audit.md, "Checkpoints")."""

    __tablename__ = "audit_checkpoints"
    __table_args__ = (Index("ix_audit_checkpoint_org_seq", "organization_id", "seq", unique=True),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    organization_id: Mapped[str] = mapped_column(String(40), nullable=False)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    hash: Mapped[str] = mapped_column(String(64), nullable=False)
    kid: Mapped[str] = mapped_column(String(40), nullable=False)
    signature: Mapped[str] = mapped_column(String(128), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)


class AuditExportJob(db.Model):  # type: ignore[name-defined]
    """A background export of one organization's events to a file under the instance folder.

    A worker takes a job with a conditional UPDATE (``pending``, or ``running`` past ``lease_until``) and stamps it
    with its own ``claim``: a worker that died leaves a lease that expires, and only the claim's holder finishes.
    """

    __tablename__ = "audit_export_jobs"
    __table_args__ = (Index("ix_audit_export_org_created", "organization_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(40), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")
    format: Mapped[str] = mapped_column(String(8), nullable=False, default="ndjson")
    filters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, nullable=False)
    reveal_session_ids: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    requested_by: Mapped[str | None] = mapped_column(String(64))
    count: Mapped[int | None] = mapped_column(BigInteger)
    final_hash: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    claim: Mapped[str | None] = mapped_column(String(40))
