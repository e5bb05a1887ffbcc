"""Durable inbox of WorkOS events, and cursors of the Events API poller."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Index, Integer, String, Text, false, text
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .base import TimestampMixin, UTCDateTime, utcnow

INBOX_CHANNEL = "hatidata_inbox"
"""The PostgreSQL ``NOTIFY`` channel a transaction that queues inbox work signals on; the appliers ``LISTEN``."""

INTERNAL_SOURCE = "internal"
"""``webhook_events.source`` of work we queue ourselves (``services.fanout_jobs``), never of a WorkOS event."""


class WebhookEvent(TimestampMixin, db.Model):  # type: ignore[name-defined]
    """A WorkOS event received by webhook or fetched from the Events API, stored before it is applied."""

    __tablename__ = "webhook_events"
    # Indexes: the primary key, the unique event id (dedupe, lookups) and ``ix_webhook_events_open`` below; no
    # other: every index is maintained on each insert and status change, and no query leads with
    # ``event_type`` or ``organization_id`` (``concerning()`` filters them after ``status`` or ``event_id``).
    # The open index holds only rows still to apply or failed (partial on PostgreSQL, so its size follows the
    # backlog, not the table); it serves the failed lists (``status = 'failed'``, paged by ``id``), the
    # appliers' ``status = 'received'`` claims and the gauges. Settled rows are found by primary key ranges
    # (``services.inbox_retention``). SQLite cannot prove the predicate from ``status = 'failed'``: it gets
    # the full index.
    __table_args__ = (
        Index("ix_webhook_events_open", "status", "id",
              postgresql_where=text("status NOT IN ('applied', 'ignored', 'duplicate')")),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    event_type: Mapped[str] = mapped_column(String(96), nullable=False)
    organization_id: Mapped[str | None] = mapped_column(String(40))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    event_created_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    # "received", "applied", "failed" or "ignored".
    status: Mapped[str] = mapped_column(String(16), default="received", nullable=False)
    # "webhook", "events_api", ... or INTERNAL_SOURCE (our own queued work: services.fanout_jobs).
    source: Mapped[str] = mapped_column(String(16), default="webhook", nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    last_error: Mapped[str | None] = mapped_column(Text)
    applied_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # What the event is about ("user:<directory user id>", "group:<id>", "directory:<id>", ...): the appliers
    # apply the events of one key in order, one at a time (services.inbox.entity_key).
    entity_key: Mapped[str | None] = mapped_column(String(160))
    # Whether applying it can take access away (its handler's declaration, services.events.registry): claimed
    # before any other event.
    revokes: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false(), nullable=False)
    # The W3C trace context ({"traceparent", "tracestate"}) of the request or job that queued it, when traces
    # are on: its application continues that trace (hatidata_auth.trace_context).
    trace_context: Mapped[dict[str, str] | None] = mapped_column(JSON)


class SyncCursor(TimestampMixin, db.Model):  # type: ignore[name-defined]
    """The last event id a reconciliation consumer processed."""

    __tablename__ = "sync_cursors"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    cursor: Mapped[str | None] = mapped_column(String(64))
