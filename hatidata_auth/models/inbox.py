"""Durable inbox of WorkOS events, and cursors of the Events API poller."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ColumnElement, Index, Integer, String, Text, false, func, literal_column, text
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .base import TimestampMixin, UTCDateTime, utcnow

INBOX_CHANNEL = "hatidata_inbox"
"""The PostgreSQL ``NOTIFY`` channel a transaction that queues inbox work signals on; the appliers ``LISTEN``."""

PERSONAL_KEYS = frozenset({"user", "organization_membership", "session"})
"""Entity kinds (``services.inbox.entity_key``) of one person: bounded work. An event of one of them that takes
access away is applied by the request that acknowledges it (``inbox_runtime.acknowledged``), not by an applier
thread."""


def about_one_person(key: str) -> bool:
    """Whether the entity key *key* (``services.inbox.entity_key``) is of one of the :data:`PERSONAL_KEYS`."""
    return key.split(":", 1)[0] in PERSONAL_KEYS


REVOKING_NOTE = "revoking"
"""The ``NOTIFY`` payload of work that may take access away and waits for an applier thread (else ``""``; a person's
event is applied by its request, and announced so only when that request could not): only it wakes the
deprovisioning thread of every process (``services.applier_pool``)."""

INTERNAL_SOURCE = "internal"
"""``webhook_events.source`` of work we queue ourselves (``services.fanout_jobs``), never of a WorkOS event."""


class WebhookEvent(TimestampMixin, db.Model):  # type: ignore[name-defined]
    """A WorkOS event received by webhook or fetched from the Events API, stored before it is applied."""

    __tablename__ = "webhook_events"
    # Indexes: the primary key, the unique event id and the three partial indexes below; no other: every index
    # is maintained on each insert and status change, and no query leads with ``event_type`` or
    # ``organization_id`` (``concerning()`` filters them after ``status`` or ``event_id``). The partial ones hold
    # only rows still to apply (or failed), so their size follows the backlog, not the table; their queries name
    # the status as a literal (``PENDING``, ``FAILED``), which both databases need to prove the predicate (a bound
    # parameter proves nothing in a prepared, generic plan):
    # * ``ix_webhook_events_claim_order``: the pending events in the appliers' claim order (revoking first, then
    #   event time, then id): a claim reads it from the start and stops at its batch (``inbox_worker.claim``);
    #   it also counts the pending events (the gauges);
    # * ``ix_webhook_events_pending_key``: the pending events of one entity key in order: whether an event is its
    #   key's head (no older pending event of its key) is one probe of it;
    # * ``ix_webhook_events_internal_order``: our own pending jobs in claim order (a batch takes at most one: the
    #   first, found without reading the other events);
    # * ``ix_webhook_events_failed``: the failed lists (paged by ``id``) and their gauge.
    # Settled rows are found by primary key ranges (``services.inbox_retention``). The claim expressions must be
    # written exactly as here (``claim_time``, ``entity``) for the planners to match them.

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


def claim_time(table: Any = None) -> ColumnElement[Any]:
    """An event's place in time: its ``created_at``, else when we received it (of *table*, an alias of the inbox)."""
    t = table if table is not None else WebhookEvent.__table__
    return func.coalesce(t.c.event_created_at, t.c.received_at)


def entity(table: Any = None) -> ColumnElement[Any]:
    """What an event is about, for ordering: its entity key, else its own id (alone in its order)."""
    t = table if table is not None else WebhookEvent.__table__
    return func.coalesce(t.c.entity_key, t.c.event_id)


def status_is(status: str, table: Any = None) -> ColumnElement[bool]:
    """``status = '<status>'`` with the status as a literal, which a partial index's predicate needs."""
    t = table if table is not None else WebhookEvent.__table__
    assert status.isalpha()
    return t.c.status == literal_column(f"'{status}'", String)


_PENDING_SQL = "status = 'received'"
Index("ix_webhook_events_claim_order", WebhookEvent.revokes.desc(), claim_time(), WebhookEvent.id,
      postgresql_where=text(_PENDING_SQL), sqlite_where=text(_PENDING_SQL))
Index("ix_webhook_events_pending_key", entity(), claim_time(), WebhookEvent.id,
      postgresql_where=text(_PENDING_SQL), sqlite_where=text(_PENDING_SQL))
_INTERNAL_SQL = f"status = 'received' AND source = '{INTERNAL_SOURCE}'"
Index("ix_webhook_events_internal_order", WebhookEvent.revokes.desc(), claim_time(), WebhookEvent.id,
      postgresql_where=text(_INTERNAL_SQL), sqlite_where=text(_INTERNAL_SQL))
_FAILED_SQL = "status = 'failed'"
Index("ix_webhook_events_failed", WebhookEvent.id,
      postgresql_where=text(_FAILED_SQL), sqlite_where=text(_FAILED_SQL))


class SyncCursor(TimestampMixin, db.Model):  # type: ignore[name-defined]
    """The last event id a reconciliation consumer processed."""

    __tablename__ = "sync_cursors"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    cursor: Mapped[str | None] = mapped_column(String(64))
