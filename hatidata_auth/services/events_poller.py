"""The Events API poller: fetches events after a persisted cursor, oldest first, and applies each through the
inbox (so an event that also arrived by webhook is a duplicate and changes nothing). It asks for exactly the
types the handler registry handles (:func:`services.events.handled_event_types`). Idempotent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import islice
from typing import Any

from sqlalchemy.orm import Session

from ..models import SyncCursor, utcnow
from ..workos import WorkOSClient
from . import inbox
from .events import handled_event_types

EVENTS_CURSOR = "workos-events"


@dataclass(frozen=True, slots=True)
class PollResult:
    """What one poll processed, and where the cursor now stands."""

    processed: int
    applied: int
    duplicates: int
    ignored: int
    failed: int
    cursor: str | None


def _event_dict(event: Any) -> dict[str, Any]:
    raw = event.to_dict() if hasattr(event, "to_dict") else dict(event)
    # A JSON round trip keeps exactly what the inbox column can store.
    return dict(json.loads(json.dumps(raw, default=str)))


def poll_events(session: Session, client: WorkOSClient, *, cursor_name: str = EVENTS_CURSOR, page_size: int = 100,
                max_events: int = 100_000, event_types: list[str] | None = None) -> PollResult:
    """Fetch events after the persisted cursor (oldest first) and apply each through the inbox.

    The cursor advances after every event, in its own small commit, so a crash repeats at most one event
    (which the inbox then recognises as a duplicate). Failed events stay in the inbox for replay and do not
    stop the cursor.
    """
    row = session.get(SyncCursor, cursor_name)
    after = row.cursor if row else None
    session.rollback()
    counts = {"applied": 0, "duplicate": 0, "ignored": 0, "failed": 0}
    processed = 0
    types = event_types or handled_event_types()
    events = client.events.list_events(events=types, limit=page_size, after=after, order="asc").auto_paging_iter()
    for item in islice(events, max_events):
        payload = _event_dict(item)
        result = inbox.receive(session, client, payload, source="events_api")
        counts[result.status] = counts.get(result.status, 0) + 1
        after = payload["id"]
        _save_cursor(session, cursor_name, after)
        processed += 1
    return PollResult(processed, counts["applied"], counts["duplicate"], counts["ignored"], counts["failed"], after)


def _save_cursor(session: Session, name: str, value: str | None) -> None:
    row = session.get(SyncCursor, name)
    if row is None:
        session.add(SyncCursor(name=name, cursor=value))
    else:
        row.cursor = value
        row.updated_at = utcnow()
    session.commit()


def get_cursor(session: Session, name: str = EVENTS_CURSOR) -> str | None:
    """The last event id the poller processed."""
    row = session.get(SyncCursor, name)
    return row.cursor if row else None
