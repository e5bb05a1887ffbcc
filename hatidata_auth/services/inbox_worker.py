"""The appliers: they apply the events the webhook stored (status ``received``) in batches, in order per entity.

A batch is one transaction: :func:`claim` takes up to *limit* events, each the oldest pending event of its
:func:`~hatidata_auth.services.inbox.entity_key` (by event time, then arrival), so the events of one directory
user, group or directory never overtake each other and never run in two appliers at once. On PostgreSQL the
claim locks the rows with ``FOR UPDATE SKIP LOCKED``: appliers in any number of processes share the inbox, and
a crashed applier's rows are unlocked by its rollback and claimed again. On SQLite the claim is an ``UPDATE``,
which takes the database's write lock: appliers take turns. Each event is applied by the inbox's handlers under
a savepoint, with its audit events; a failing event is rolled back alone and recorded ``failed`` with its error
summary (a transient WorkOS outage, or a row another transaction created first, keeps it ``received`` for a
later attempt, at most :data:`MAX_TRANSIENT_ATTEMPTS`), the rest of the batch commits. A batch of several events is
first applied optimistically, all of it under one savepoint (two statements per batch instead of two per event);
only when an event fails is that savepoint rolled back and the batch applied again, event by event, each under its
own. What is the same for every event of a batch is established once per batch (``events.batch_scope``: the
tenants' row locks, the verified domains, the role mappings, the known directories), and the batch's audit events
are chained and written at its commit (``audit.deferred``).

:class:`~hatidata_auth.services.applier_pool.ApplierPool` runs appliers as threads. Nothing here knows Flask.
"""

from __future__ import annotations

import functools
import logging
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from ..causes import Actor, Cause
from ..errors import is_connection_error
from ..models import WebhookEvent, utcnow
from ..models.inbox import INTERNAL_SOURCE, status_is
from ..trace_context import apply_span, quiet
from ..workos import WorkOSClient, WorkOSUnavailable
from . import audit, db_conflicts, event_source, fanout_jobs, inbox_coalesce, workos_role_push
from .events import HANDLERS, batch_users, session_jobs
from .events.batch_scope import BatchScope
from .inbox import InboxResult, apply_event, error_summary
from .inbox_claim import DEFAULT_BATCH, MAX_CLAIM, RETRY_DELAY, Claimed, claim

__all__ = ["DEFAULT_BATCH", "MAX_CLAIM", "MAX_TRANSIENT_ATTEMPTS", "RETRY_DELAY", "BatchReport", "Claimed",
           "apply_batch", "apply_entity_now", "apply_one", "claim", "drain", "pending", "revokes_access"]

log = logging.getLogger(__name__)

MAX_TRANSIENT_ATTEMPTS = 5
TRANSIENT_ATTEMPTS = {workos_role_push.JOB_TYPE: workos_role_push.ATTEMPTS}
"""Types tried more often than :data:`MAX_TRANSIENT_ATTEMPTS` while WorkOS is unavailable."""


@dataclass(frozen=True, slots=True)
class BatchReport:
    """What one batch did: the events it claimed and each one's result (``applied``, ``ignored``, ``failed``, or
    ``received`` when a transient failure left it for a later attempt)."""

    claimed: int
    results: tuple[InboxResult, ...] = ()
    rows: tuple[int, ...] = ()  # the inbox rows (``webhook_events.id``) of the claimed events

    def count(self, status: str) -> int:
        """How many events of the batch ended with *status*."""
        return sum(1 for r in self.results if r.status == status)


def revokes_access(event_type: str, payload: dict[str, Any]) -> bool:
    """Whether the event can take access away, as its handler declared (``services.events.registry``); stored
    with the event (``webhook_events.revokes``) when it is written."""
    data = payload.get("data")
    return HANDLERS.revokes(event_type, data if isinstance(data, dict) else {})


def _outcome(event: Claimed, result: InboxResult, tried: int = 0) -> dict[str, Any]:
    """The parameters of :func:`_finish_statement` that record *result* as the event's outcome, now; *tried*: 1 for
    an event applied without being claimed (the newest of a run, applied in place of its head), whose try then
    counts in its ``attempts`` as a claim's does."""
    now = utcnow()
    return {"event_row": event.id, "status": result.status,
            "last_error": result.error if result.error is not None else result.note, "updated_at": now,
            "applied_at": now if result.status == "applied" else None, "tried": tried}


def _finish(session: Session, outcomes: list[dict[str, Any]]) -> None:
    """Record the outcomes (:func:`_outcome`) of a batch's events: one execution, whatever their number."""
    if outcomes:
        session.execute(_finish_statement(), outcomes)


@functools.cache
def _finish_statement() -> Any:
    # Built once (bound parameters): a reused statement keeps its cache key; per event only the values bind.
    t = WebhookEvent.__table__
    recorded = {name: bindparam(name, type_=t.c[name].type) for name in ("status", "last_error", "updated_at",
                                                                         "applied_at")}
    return update(t).where(t.c.id == bindparam("event_row", type_=t.c.id.type)).values(
        {**recorded, "attempts": t.c.attempts + bindparam("tried", type_=t.c.attempts.type)})


def apply_one(session: Session, client: WorkOSClient, event: Claimed, cause: Cause, *,
              fanout_chunk: int | None = None, budget: fanout_jobs.MemberBudget | None = None,
              tracer: Any = None) -> InboxResult:
    """Apply one claimed event under a savepoint and record its outcome in the inbox (the caller commits);
    *budget*: the members the batch's transaction may still recompute; with *tracer*, in a span that continues the
    trace of the request or job that queued it."""
    result = _traced(session, client, event, cause, fanout_chunk, budget, tracer, BatchScope())
    _finish(session, [_outcome(event, result)])
    return result


def _span(tracer: Any, event: Claimed) -> Any:
    """The span an event is applied in, continuing the trace of the request or job that queued it."""
    attributes: dict[str, str | int] = {"hatidata.event_id": event.event_id, "hatidata.event_type": event.event_type,
                  "hatidata.inbox.source": event.source, "hatidata.inbox.attempt": event.attempts}
    return apply_span(tracer, f"inbox apply {event.event_type}", event.trace_context, attributes)


def _traced(session: Session, client: WorkOSClient, event: Claimed, cause: Cause, fanout_chunk: int | None,
            budget: fanout_jobs.MemberBudget | None, tracer: Any, scope: BatchScope) -> InboxResult:
    with _span(tracer, event):
        return _apply_one(session, client, event, cause, fanout_chunk, budget, scope)


def roll_back(session: Session, savepoint: Any) -> None:
    """Roll back *savepoint* and expire every object of *session*, so that what comes next reads the rows as the
    rollback left them. SQLAlchemy expires, on a savepoint's rollback, only the objects it saw change in it, and
    tracks them by weak reference: a row changed and flushed through one object that is then garbage-collected,
    and loaded again in the same savepoint by a later lookup (a new object, unchanged), kept the rolled-back values
    in memory. An event applied after such a rollback then saw, for example, an organization as deleted that the
    database still had active, and left it active (found by ``tests/test_inbox_batch_scope.py``)."""
    savepoint.rollback()
    session.expire_all()


def _apply_one(session: Session, client: WorkOSClient, event: Claimed, cause: Cause, fanout_chunk: int | None,
               budget: fanout_jobs.MemberBudget | None, scope: BatchScope) -> InboxResult:
    """Apply the event under a savepoint; its outcome is for the caller to record (:func:`_finish`). What the event
    established joins *scope* only if its savepoint commits; a rollback also drops its audit events (``audit``)."""
    staged = scope.event(session)
    savepoint = session.begin_nested()
    try:
        ctx = apply_event(session, client, event.payload, cause, source=event.source, fanout_chunk=fanout_chunk,
                          budget=budget, scope=staged)
        savepoint.commit()
        scope.promote(staged)
    except Exception as exc:
        roll_back(session, savepoint)
        waited = db_conflicts.waited_too_long(exc)  # a lock held elsewhere: this event only, the rest goes on
        if is_connection_error(exc) and not waited:
            raise  # the database is gone: the whole batch rolls back and stays pending
        error = error_summary(exc)
        # A unique violation: a writer outside the batch (a sign-in) created the row first; the batch's reads (and
        # caches) predate it, so the event is applied again by a later batch, which finds the row.
        transient = (isinstance(exc, WorkOSUnavailable) or db_conflicts.created_meanwhile(exc) or waited) \
            and event.attempts < TRANSIENT_ATTEMPTS.get(event.event_type, MAX_TRANSIENT_ATTEMPTS)
        log.warning("applying WorkOS event %s (%s) failed: %s", event.event_id, event.event_type, error,
                    exc_info=not transient and exc)
        if not transient and event.event_type == workos_role_push.JOB_TYPE:
            workos_role_push.give_up(session, event.payload, error)
        return InboxResult(event.event_id, event.event_type, "received" if transient else "failed", error=error)
    return InboxResult(event.event_id, event.event_type, ctx.outcome, note=ctx.note)


def _optimistic(session: Session, client: WorkOSClient, events: list[Claimed], cause: Cause,
                fanout_chunk: int | None, tracer: Any) -> list[InboxResult] | None:
    """Apply *events* under one savepoint, none of their own; ``None`` when one of them raised: the savepoint is
    then rolled back (the locks taken in it, its audit events and what the batch scope learnt in it go with it)
    and the caller applies the batch again event by event. Raises what means the database is gone.

    Sound because an event's savepoint only matters when the event fails: a batch that fails nowhere commits
    exactly what the event-by-event path would. The cost of a failure is the batch's work done twice; what an
    event asked of WorkOS is asked again (WorkOS's calls made by handlers are idempotent)."""
    budget = fanout_jobs.MemberBudget(fanout_jobs.chunk_size(fanout_chunk))
    scope = BatchScope(batch_users.wanted(event.payload for event in events))
    savepoint = session.begin_nested()
    results = []
    try:
        for event in events:
            staged = scope.event(session)
            with _span(tracer, event):
                ctx = apply_event(session, client, event.payload, cause, source=event.source,
                                  fanout_chunk=fanout_chunk, budget=budget, scope=staged)
            scope.promote(staged)
            results.append(InboxResult(event.event_id, event.event_type, ctx.outcome, note=ctx.note))
        savepoint.commit()
    except Exception as exc:
        roll_back(session, savepoint)
        if is_connection_error(exc) and not db_conflicts.waited_too_long(exc):
            raise  # the database is gone: the whole batch rolls back and stays pending
        log.debug("an event of the batch failed (%s); applying the batch again event by event", error_summary(exc))
        return None
    return results


def apply_batch(session: Session, client: WorkOSClient, *, limit: int = DEFAULT_BATCH,
                cause: Cause | None = None, revoking_only: bool = False, entity_key: str | None = None,
                up_to: str | None = None, fanout_chunk: int | None = None, tracer: Any = None,
                coalesce: bool = True) -> BatchReport:
    """Claim and apply one batch in one transaction (committed; rolled back on a database error, which is raised).

    Each event acts as WorkOS unless *cause* says who (a recompute job acts with the cause it stored). A recompute
    job is claimed alone (:func:`claim`), and the batch's events share one chunk (*fanout_chunk*,
    ``HATIDATA_FANOUT_CHUNK``) of members to recompute (``fanout_jobs.MemberBudget``): the transaction touches at
    most one chunk of members in fan-outs, whatever the batch holds. With *tracer*, each event is applied in its
    span (:func:`apply_one`); the claim itself is not traced (most polls claim nothing). *revoking_only*,
    *entity_key* and *up_to* choose the events as :func:`claim` does. With *coalesce* (and no *up_to*), a claimed
    head with a run of snapshots pending behind it is applied as the run's newest (``services.inbox_coalesce``);
    the report then counts, and gives a result for, every event settled, the superseded ones included. The batch's
    WorkOS session revocations (up to ``inbox_claim.REVOCATIONS_PER_BATCH``) make their calls side by side first
    (``session_jobs.revoked_together``).
    """
    cause = cause or Cause.by(Actor.workos())
    try:
        with quiet() if tracer is not None else nullcontext():
            events = claim(session, limit, revoking_only=revoking_only, entity_key=entity_key, up_to=up_to)
        if not events:
            session.rollback()
            return BatchReport(0)
        runs = inbox_coalesce.runs(session, events) if coalesce and up_to is None else {}
        applied = [runs[event.id].newest if event.id in runs else event for event in events]
        event_source.lock_directory_changes_first(session, [event.payload for event in applied])
        jobs = [(event.payload, event.trace_context) for event in applied if event.source == INTERNAL_SOURCE]
        together = session_jobs.revoked_together(session, client, jobs, tracer, alone=len(applied) == 1)
        with audit.deferred(session), together:
            # Audit rows are written at the batch's commit: one statement, one head lock.
            results = _optimistic(session, client, applied, cause, fanout_chunk, tracer) if len(applied) > 1 else None
            if results is None:  # an event failed (or the batch is one event): each event under its savepoint
                budget = fanout_jobs.MemberBudget(fanout_jobs.chunk_size(fanout_chunk))
                scope = BatchScope(batch_users.wanted(event.payload for event in applied))
                results = [_traced(session, client, event, cause, fanout_chunk, budget, tracer, scope)
                           for event in applied]
        settled = _settled(events, applied, results, runs)
        # The outcomes of the whole batch in one execution (one round trip), outside any event's span: not traced,
        # like the claim, so that every span of an application belongs to the trace of the event it applies.
        with quiet() if tracer is not None else nullcontext():
            _finish(session, [outcome for _row, _result, outcome in settled])
            session.commit()
    except BaseException:
        session.rollback()
        raise
    done = [(row, result) for row, result, _outcome in settled if result is not None]
    return BatchReport(len(done), tuple(result for _row, result in done), tuple(row for row, _result in done))


def _settled(heads: list[Claimed], applied: list[Claimed], results: list[InboxResult],
             runs: dict[int, inbox_coalesce.Run]) -> list[tuple[int, InboxResult | None, dict[str, Any]]]:
    """(inbox row, its result, its outcome) of every event the batch settles: each applied one, and with it the
    events of its run it supersedes (``services.inbox_coalesce``) once it was applied or ignored. When the newest
    event of a run fails or stays pending, the head goes back to the queue (result ``None``) and nothing is
    superseded."""
    settled: list[tuple[int, InboxResult | None, dict[str, Any]]] = []
    for head, event, result in zip(heads, applied, results, strict=True):
        run = runs.get(head.id)
        if run is not None and result.status not in ("applied", "ignored"):
            settled.append((head.id, None, _outcome(head, InboxResult(head.event_id, head.event_type, "received"))))
        elif run is not None:  # recorded in their order, before the newest (each ``applied_at`` in event order)
            note = inbox_coalesce.superseded_note(event)
            for old in run.superseded:
                done = InboxResult(old.event_id, old.event_type, "applied", note=note)
                settled.append((old.id, done, _outcome(old, done)))
        settled.append((event.id, result, _outcome(event, result, tried=int(event is not head))))
    return settled


APPLY_NOW_MAX = 10
"""How many events of its entity :func:`apply_entity_now` applies at most before (and with) the one it was given."""


def apply_entity_now(session: Session, client: WorkOSClient, event_id: str, entity_key: str, *,
                     cause: Cause, fanout_chunk: int | None = None, tracer: Any = None) -> InboxResult | None:
    """Apply the pending events of *entity_key* in order, up to and including the stored event *event_id*, in the
    caller's thread: a deprovisioning acknowledged by the webhook request never waits behind a backlog of other
    entities' events. Order is kept: an older pending event of the same entity is applied first.

    Returns the event's result, or ``None`` when an applier holds the entity's head (``SKIP LOCKED``: it applies
    it) or has applied the event already (the key's later events are then left to the appliers), the event is not
    due, or more than :data:`APPLY_NOW_MAX` older events are ahead of it; the appliers then apply it as any other.
    Raises what :func:`apply_batch` raises (a database error)."""
    for _ in range(APPLY_NOW_MAX):
        report = apply_batch(session, client, limit=1, cause=cause, entity_key=entity_key, up_to=event_id,
                             fanout_chunk=fanout_chunk, tracer=tracer)
        if not report.claimed:
            return None
        for result in report.results:
            if result.event_id == event_id:
                return result
    return None


def drain(session: Session, client: WorkOSClient, *, limit: int = DEFAULT_BATCH, max_batches: int = 10_000,
          fanout_chunk: int | None = None, tracer: Any = None) -> int:
    """Apply batches until none is due (or *max_batches*); returns how many events were claimed in all."""
    total = 0
    for _ in range(max_batches):
        report = apply_batch(session, client, limit=limit, fanout_chunk=fanout_chunk, tracer=tracer)
        if not report.claimed:
            break
        total += report.claimed
    return total


def pending(session: Session) -> int:
    """How many events wait for an applier (status ``received``)."""
    n = session.scalar(select(func.count()).select_from(WebhookEvent).where(status_is("received")))
    session.rollback()
    return int(n or 0)
