"""Applying stored events again: a failed one by its id (an organization's admin through the API, an operator through
``flask hatidata inbox replay``), or every failed one (``--all-failed``). An event of our own (a fan-out job) is
queued again for the appliers instead, which apply it in its entity's order.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ..causes import Actor, Cause
from ..models import WebhookEvent, utcnow
from ..models.inbox import INTERNAL_SOURCE, status_is
from ..workos import WorkOSClient
from . import inbox
from .events import PayloadError
from .inbox import InboxResult, OnResult, reported


def replay(session: Session, client: WorkOSClient, event_id: str, *, cause: Cause | None = None,
           on_result: OnResult | None = None) -> InboxResult:
    """Apply a stored event again (normally a ``failed`` one); duplicates of applied events change nothing.
    *on_result*: as :func:`services.inbox.receive`'s (a ``failed`` payload, or an event of our own queued
    again: before the commit that records it)."""
    done = on_result or (lambda result: None)
    row = session.scalar(select(WebhookEvent).where(WebhookEvent.event_id == event_id))
    if row is None:
        raise LookupError(f"no stored event {event_id}")
    payload, source = dict(row.payload), row.source
    if source == INTERNAL_SOURCE:  # our own work: queued again for the appliers, which apply it in order
        requeued = session.execute(update(WebhookEvent).where(WebhookEvent.id == row.id,
                                                              WebhookEvent.status == "failed")
                                   .values(status="received", last_error=None, attempts=0, updated_at=utcnow()))
        status = "received" if getattr(requeued, "rowcount", 0) else "duplicate"
        result = reported(done, InboxResult(event_id, str(payload.get("event")), status,
                                         note="queued for the appliers"))
        session.commit()
        return result
    session.rollback()
    try:
        return inbox.receive(session, client, payload, source=source,
                             cause=cause or Cause.by(Actor.system("replay")), on_result=on_result)
    except PayloadError as exc:
        error = inbox.error_summary(exc)
        inbox.record_failure(session, payload, source, error)
        result = reported(done, InboxResult(event_id, payload.get("event", "?"), "failed", error=error))
        session.commit()
        return result


def list_failed(session: Session, limit: int = 100) -> Sequence[WebhookEvent]:
    """Failed events of every organization, oldest first (operators: the CLI and ``replay_failed``)."""
    return session.scalars(select(WebhookEvent).where(status_is("failed"))
                           .order_by(WebhookEvent.received_at, WebhookEvent.id).limit(limit)).all()


def replay_failed(session: Session, client: WorkOSClient, *, limit: int = 1000) -> list[InboxResult]:
    """Replay every failed event, in the order they were received."""
    ids = [row.event_id for row in list_failed(session, limit)]
    session.rollback()
    return [replay(session, client, event_id) for event_id in ids]
