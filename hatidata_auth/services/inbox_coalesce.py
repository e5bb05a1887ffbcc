"""Runs of snapshots: a backlog of one entity's whole-state events applied as its newest (issue #14).

A burst of webhooks is acknowledged first and applied after (``applier_pool.GiveWay``), so a directory user updated
several times during a burst has several snapshots pending on its entity key. Each ``dsync.user.updated`` carries
the user's whole state, and its handler reaches the same state from any older one (delivery out of order already
requires it: an older snapshot delivered later is stale). Applying every snapshot of the backlog in turn writes the
row, its person and an audit event per snapshot; applying the newest alone writes what the last of them would have
left, once.

Rule: **a run of snapshots that differ in nothing that decides access is applied as its newest.** A run starts at
the claimed head of an entity key and takes the key's next pending events, in claim order, while each is:

- of a type whose handler declares it a snapshot (``handles(..., snapshot=True)``), from the same source, not
  declared as taking access away, and never tried (a head tried before, after a transient failure or a replay, is
  applied alone);
- for the same directory and organization, with the same email as the head (the one the handler reads: ``email``,
  else the primary of ``emails``, normalised): a move of the email
  (onto another person's, or onto a domain another organization verified) can take access away, so it ends the run
  and is applied in its turn;
- versioned (``data.updated_at``, else the event's ``created_at``) no older than the event before it, so the last
  event of the run is the state applying them in order would leave.

An event that takes access away (a suspension), a group membership event of the user, or an internal job ends the
run: it is applied in its order, never skipped. The newest event of the run is applied in place of the head; the
head and the events between are recorded ``applied`` with the note ``superseded by <event id>`` in the same
transaction, once the newest one is applied (or ignored). When it fails, or a transient failure leaves it pending,
nothing is superseded: the head goes back to the queue, is applied alone next (it counts as tried), and the events
between form a run of their own without the one that failed.

At most :data:`RUN_MAX` events follow a head in one run, read per head in claim order. On PostgreSQL the events of
the runs are locked (``FOR UPDATE``) before they are used; no other applier can take them meanwhile, since they are
not heads and the batch holds each key's advisory lock. Nothing here knows Flask.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, bindparam, func, select, true
from sqlalchemy.orm import Session

from ..models import WebhookEvent
from ..models.inbox import INTERNAL_SOURCE, claim_time, entity, status_is
from .events import HANDLERS, parse_time
from .events.directory_state import directory_user_email
from .inbox_claim import Claimed, unsorted_rows

__all__ = ["RUN_MAX", "Run", "runs", "superseded_note"]

RUN_MAX = 100
"""At most this many pending events after a head are read for its run (a longer backlog is several runs)."""


@dataclass(frozen=True, slots=True)
class Run:
    """The head a batch claimed, the newest event of its run applied in its place, and the events between."""

    head: Claimed
    newest: Claimed
    between: tuple[Claimed, ...]

    @property
    def superseded(self) -> tuple[Claimed, ...]:
        """The events recorded as superseded by :attr:`newest` once it is applied: the head and those between."""
        return (self.head, *self.between)


def superseded_note(newest: Claimed) -> str:
    """The note an event superseded by *newest* is recorded with."""
    return f"superseded by {newest.event_id}"


def _data(payload: dict[str, Any]) -> dict[str, Any]:
    data = payload.get("data")
    return data if isinstance(data, dict) else {}


def _version(payload: dict[str, Any]) -> datetime | None:
    """The object's version as the handler reads it; ``None`` (no run) when a time does not parse: the handler
    then fails that event alone, in its savepoint, as without runs."""
    try:
        return parse_time(_data(payload).get("updated_at")) or parse_time(payload.get("created_at"))
    except (TypeError, ValueError):
        return None


def _starts_run(event: Claimed) -> bool:
    # A head tried before (a transient failure, a replay) is applied alone, as it was claimed.
    return (event.attempts == 1 and event.source != INTERNAL_SOURCE and HANDLERS.snapshot(event.event_type)
            and not HANDLERS.revokes(event.event_type, _data(event.payload)) and _version(event.payload) is not None)


def _joins(head: Claimed, before: Claimed, row: Any) -> bool:
    """Whether the pending event *row* continues the run of *head* after *before*."""
    if (row.source != head.source or row.revokes or row.attempts != 0 or row.last_error is not None
            or not HANDLERS.snapshot(row.event_type) or not isinstance(row.payload, dict)):
        return False
    data, first = _data(row.payload), _data(head.payload)
    if HANDLERS.revokes(row.event_type, data):
        return False
    if any(data.get(name) != first.get(name) for name in ("id", "directory_id", "organization_id")):
        return False
    if directory_user_email(data) != directory_user_email(first):  # the email the handler reads
        return False
    version, previous = _version(row.payload), _version(before.payload)
    return version is not None and previous is not None and version >= previous


def runs(session: Session, heads: Sequence[Claimed]) -> dict[int, Run]:
    """The runs of the claimed *heads* (the caller's transaction holds them and their keys), by head row id; a head
    whose next pending event does not join it has none. No statement when no head can start a run or none had a
    pending event of its key behind it when claimed (``Claimed.followed``); else one to read the next events of
    their keys (on PostgreSQL planned without sorting, ``inbox_claim.unsorted_rows``: three statements more) and,
    on PostgreSQL, one to lock those used."""
    starting = [head for head in heads if head.followed and _starts_run(head)]
    if not starting:
        return {}
    postgres = session.get_bind().dialect.name == "postgresql"
    params = {"heads": [head.id for head in starting], "run": RUN_MAX + 1}
    statement = _pending_statement(postgres)
    rows = unsorted_rows(session, statement, params) if postgres else session.execute(statement, params).all()
    by_head: dict[int, list[Any]] = {}
    for row in sorted(rows, key=lambda r: (r.head_id, r.place)):
        by_head.setdefault(row.head_id, []).append(row)
    found: dict[int, Run] = {}
    for head in starting:
        between: list[Claimed] = []
        before = head
        for row in by_head.get(head.id, []):
            if row.id == head.id:
                continue
            if not _joins(head, before, row):
                break
            before = Claimed(row.id, row.event_id, row.event_type, dict(row.payload), row.attempts, row.source,
                             row.trace_context)
            between.append(before)
        if between:
            found[head.id] = Run(head, between[-1], tuple(between[:-1]))
    if found and postgres:
        found = _locked(session, found)
    return found


def _locked(session: Session, found: dict[int, Run]) -> dict[int, Run]:
    """*found*, each run cut at its first event that is no longer pending once locked (``FOR UPDATE``)."""
    wanted = [event.id for run in found.values() for event in (*run.between, run.newest)]
    t = WebhookEvent.__table__
    pending = set(session.scalars(select(t.c.id).where(t.c.id.in_(wanted), status_is("received", t))
                                  .order_by(t.c.id).with_for_update()))
    kept: dict[int, Run] = {}
    for head_id, run in found.items():
        events = [*run.between, run.newest]
        cut = next((i for i, event in enumerate(events) if event.id not in pending), len(events))
        if cut:
            kept[head_id] = Run(run.head, events[cut - 1], tuple(events[:cut - 1]))
    return kept


@functools.cache
def _pending_statement(postgres: bool) -> Any:
    """The first ``run`` pending events of each given head's entity key, the head first (a head is the oldest
    pending event of its key), with ``head_id`` and ``place`` (claim order within a head); unordered, the caller
    sorts. On PostgreSQL a ``LATERAL`` subquery per head, run without sorting, is an ordered scan of the
    pending-key index (``ix_webhook_events_pending_key``) that stops at ``run`` rows whatever the key's backlog
    (ranking the key's events read all 1,500 pending of one user for each batch: helper-147; with sorts allowed,
    statistics that make random reads dear planned a read and sort of the key's backlog, 303 rows in CI). SQLite
    (one applier, no ``LATERAL``) ranks the key's pending events with a window function."""
    t = WebhookEvent.__table__
    head = WebhookEvent.__table__.alias("head")
    columns = (t.c.id, t.c.event_id, t.c.event_type, t.c.payload, t.c.attempts, t.c.source, t.c.trace_context,
               t.c.revokes, t.c.last_error)
    heads = head.c.id.in_(bindparam("heads", expanding=True))
    run = bindparam("run", type_=Integer)
    if postgres:
        order = (claim_time(t), t.c.id)
        following = (select(*columns, func.row_number().over(order_by=order).label("place"))
                     .where(status_is("received", t), entity(t) == entity(head))
                     .order_by(*order).limit(run).lateral("following"))
        return select(head.c.id.label("head_id"), following).select_from(head).join(following, true()).where(heads)
    place = func.row_number().over(partition_by=head.c.id, order_by=(claim_time(t), t.c.id)).label("place")
    ranked = (select(head.c.id.label("head_id"), *columns, place).join(t, entity(t) == entity(head))
              .where(heads, status_is("received", t)).subquery("ranked"))
    return select(ranked).where(ranked.c.place <= run)
