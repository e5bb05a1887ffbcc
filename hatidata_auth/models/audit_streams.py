"""Audit streams: an organization's sinks (SIEM endpoints) and each one's delivery cursor."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .base import TenantMixin, UTCDateTime, utcnow

STREAM_KINDS = ("https", "splunk_hec", "datadog", "syslog_tls")
STREAM_STATES = ("active", "retrying", "dead_letter", "paused")


def _starting_cursor(context: Any) -> int:
    return int(context.get_current_parameters().get("cursor") or 0)


class AuditStream(TenantMixin, db.Model):  # type: ignore[name-defined]
    """One sink of an organization's audit chain (docs/audit.md, "Streaming to a SIEM").

    ``cursor`` is the last ``seq`` the sink confirmed: delivery resumes after it (at least once, in order).
    ``secret_sealed`` is the HMAC secret, HEC token or Datadog API key sealed with the deployment's key (never
    returned, never logged; ``secret_hint`` is its last four characters). A worker takes the sink with a
    conditional UPDATE stamping ``claim`` and ``lease_until`` (like export jobs): a worker that died leaves a lease
    that expires. ``checkpoint_seq`` is the ``seq`` of the newest checkpoint the sink received (at creation: its
    cursor, nothing before the stream is sent): a checkpoint signed after its events were delivered is sent later.
    """

    __tablename__ = "audit_streams"
    __tenant_index__ = False
    __table_args__ = (Index("ix_audit_streams_org_id", "organization_id", "id", unique=True),
                      Index("ix_audit_streams_due", "enabled", "next_attempt_at"))

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    endpoint: Mapped[str] = mapped_column(String(2048), nullable=False)
    secret_sealed: Mapped[str | None] = mapped_column(Text)
    secret_hint: Mapped[str | None] = mapped_column(String(8))
    reveal_session_ids: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    state: Mapped[str] = mapped_column(String(16), nullable=False, default="active")
    cursor: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(String(512))
    last_delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    delivered_events: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    checkpoint_seq: Mapped[int] = mapped_column(BigInteger, nullable=False, default=_starting_cursor)
    claim: Mapped[str | None] = mapped_column(String(40))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow, nullable=False)
