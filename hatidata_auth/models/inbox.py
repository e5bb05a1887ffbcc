"""Durable inbox of WorkOS events, and cursors of the Events API poller."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .base import TimestampMixin, UTCDateTime, utcnow


class WebhookEvent(TimestampMixin, db.Model):  # type: ignore[name-defined]
    """A WorkOS event received by webhook or fetched from the Events API, stored before it is applied."""

    __tablename__ = "webhook_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    event_type: Mapped[str] = mapped_column(String(96), nullable=False, index=True)
    organization_id: Mapped[str | None] = mapped_column(String(40), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    event_created_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    # "received", "applied", "failed" or "ignored".
    status: Mapped[str] = mapped_column(String(16), default="received", nullable=False, index=True)
    source: Mapped[str] = mapped_column(String(16), default="webhook", nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    last_error: Mapped[str | None] = mapped_column(Text)
    applied_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # What the event is about ("user:<directory user id>", "group:<id>", "directory:<id>", ...): the appliers
    # apply the events of one key in order, one at a time (services.inbox.entity_key).
    entity_key: Mapped[str | None] = mapped_column(String(160))


class SyncCursor(TimestampMixin, db.Model):  # type: ignore[name-defined]
    """The last event id a reconciliation consumer processed."""

    __tablename__ = "sync_cursors"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    cursor: Mapped[str | None] = mapped_column(String(64))
