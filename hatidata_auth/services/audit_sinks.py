"""Delivery of the audit chains to their sinks (docs/audit.md, "Streaming to a SIEM"): at least once, in ``seq``
order, from each sink's cursor, with the chain's signed checkpoints in the stream.

A pass (:func:`run`, called by the audit worker after it signed the due checkpoints) takes each due sink, at the
time of its turn, with a conditional UPDATE stamping a claim and a lease (never ``FOR UPDATE``, which SQLite
ignores: two workers never deliver one sink at once; a dead worker's lease expires), renewed from the current time
before every batch for at least two delivery timeouts, then sends batches of the events after the cursor, each
followed by the checkpoint that signs its ``seq`` if there is one, led by the newest checkpoint signed after its
events were delivered (``checkpoint_seq`` < its ``seq`` <= the cursor). The cursor advances only after the sink
confirmed a batch, so a failure resends that batch (duplicates, never a gap or a reorder). A failed batch (any
exception while building, sending or reading it) sets ``retrying`` with an exponential backoff with jitter, capped;
after ``max_attempts`` failures in a row the sink is ``dead_letter`` (audited ``audit_stream.dead_lettered``) until
an admin retries it. Settling writes the delivery columns only: an admin's pause (``enabled``/``state``) made
while a batch is in flight stays.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, or_, select, update
from sqlalchemy.orm import Session

from .. import metrics
from ..causes import Cause
from ..models import AuditCheckpoint, AuditEvent, AuditStream, new_id, utcnow
from . import alerts, audit, audit_checkpoints, secret_seal
from .audit_queries import event_view
from .audit_sink_endpoints import parse
from .audit_sink_wire import DeliveryFailed, Line, Target, deliver
from .audit_stream_admin import PURPOSE

log = logging.getLogger(__name__)

DUE_STATES = ("active", "retrying")
MAX_BATCHES_PER_PASS = 20  # then the next sink: one busy chain does not starve the others
DATADOG_MAX_ENTRIES = 1000  # Datadog's limit per request


@dataclass(frozen=True, slots=True)
class Policy:
    """How sinks are delivered to (the ``HATIDATA_AUDIT_STREAM_*`` settings, read by
    ``audit_runtime.stream_policy``): events per batch, failures before ``dead_letter``, the backoff's first delay
    and cap (s), one delivery's timeout (s), the lease (s), loopback allowed, the CA bundle (PEM path)."""

    batch: int
    max_attempts: int
    backoff: float
    backoff_max: float
    timeout: float
    lease: float
    allow_loopback: bool
    ca_bundle: str | None


@dataclass(frozen=True, slots=True)
class SinkReport:
    """What one sink's turn did: lines confirmed, its state after, and the error that stopped it."""

    stream_id: str
    delivered: int
    state: str
    error: str | None = None


def backoff_delay(attempts: int, policy: Policy, rand: Callable[[], float] = random.random) -> float:
    """Seconds before attempt *attempts* + 1: ``backoff * 2**(attempts-1)``, capped at ``backoff_max``, scaled by
    a jitter in [0.5, 1)."""
    base = min(policy.backoff_max, policy.backoff * 2 ** max(attempts - 1, 0))
    return base * (0.5 + rand() / 2)


def _due(now: datetime) -> Any:
    return and_(AuditStream.enabled.is_(True), AuditStream.state.in_(DUE_STATES),
                or_(AuditStream.next_attempt_at.is_(None), AuditStream.next_attempt_at <= now),
                or_(AuditStream.lease_until.is_(None), AuditStream.lease_until <= now))


def due_streams(session: Session, *, now: datetime) -> list[str]:
    """Ids of the sinks a worker may deliver now (enabled, active or retrying past their backoff, not leased)."""
    return list(session.scalars(select(AuditStream.id).where(_due(now)).order_by(AuditStream.id)))


def lease_seconds(policy: Policy) -> float:
    """How long one claim or renewal holds a sink (s): ``lease``, and at least two delivery timeouts, so a sink is
    never due for another worker while a batch is in flight."""
    return max(policy.lease, 2 * policy.timeout)


def _claim(session: Session, stream_id: str, now: datetime, lease: float) -> str | None:
    claim = new_id("clm")
    taken = session.execute(update(AuditStream).where(AuditStream.id == stream_id, _due(now))
                            .values(claim=claim, lease_until=now + timedelta(seconds=lease))
                            .execution_options(synchronize_session=False))
    session.commit()
    return claim if getattr(taken, "rowcount", 0) == 1 else None


def _keep_paused(state: str) -> Any:
    """The state to write: *state* unless an admin paused the sink meanwhile (only a due sink's state changes)."""
    return case((and_(AuditStream.enabled.is_(True), AuditStream.state.in_(DUE_STATES)), state),
                else_=AuditStream.state)


def _settle(session: Session, stream_id: str, held: str, **values: Any) -> bool:
    """Write the sink's progress only while this worker holds its claim *held*."""
    done = session.execute(update(AuditStream).where(AuditStream.id == stream_id, AuditStream.claim == held)
                           .values(**values).execution_options(synchronize_session=False))
    return bool(getattr(done, "rowcount", 0))


def _line(value: dict[str, Any], at: float) -> Line:
    return Line(json.dumps(value, sort_keys=True, ensure_ascii=False, default=str), value, at)


@dataclass(frozen=True, slots=True)
class Batch:
    """One delivery's lines, the last event ``seq`` they carry (the cursor once confirmed) and the newest
    checkpoint ``seq`` they carry (``checkpoint_seq`` once confirmed)."""

    lines: list[Line]
    last_seq: int
    checkpoint_seq: int


def late_checkpoint(session: Session, organization_id: str, sent: int, cursor: int) -> Any:
    """The newest checkpoint signed after its events were delivered: ``sent`` < its ``seq`` <= *cursor*, its hash
    the stored event's (``None`` if there is none; older ones add nothing, the chain links them)."""
    return session.scalar(
        select(AuditCheckpoint).join(AuditEvent, and_(AuditEvent.organization_id == AuditCheckpoint.organization_id,
                                                      AuditEvent.seq == AuditCheckpoint.seq,
                                                      AuditEvent.hash == AuditCheckpoint.hash))
        .where(AuditCheckpoint.organization_id == organization_id, AuditCheckpoint.seq > sent,
               AuditCheckpoint.seq <= cursor).order_by(AuditCheckpoint.seq.desc()).limit(1))


def batch_lines(session: Session, organization_id: str, after_seq: int, limit: int, *,
                reveal_session_ids: bool, checkpoint_seq: int | None = None) -> Batch:
    """The stream lines of up to *limit* events after *after_seq* in ``seq`` order, each signed ``seq`` followed by
    its checkpoint line (only one whose hash is the event's), led by :func:`late_checkpoint` when *checkpoint_seq*
    (the newest checkpoint the sink received) is given. A checkpoint line may thus follow later events in what a
    receiver holds; ``verify-stream`` matches it against the event it signs."""
    lines: list[Line] = []
    signed_through = checkpoint_seq or 0
    if checkpoint_seq is not None and checkpoint_seq < after_seq:
        late = late_checkpoint(session, organization_id, checkpoint_seq, after_seq)
        if late is not None:
            lines.append(_line(audit_checkpoints.view(late).to_json(), late.created_at.timestamp()))
            signed_through = late.seq
    events = list(session.scalars(select(AuditEvent).where(AuditEvent.organization_id == organization_id,
                                                           AuditEvent.seq > after_seq)
                                  .order_by(AuditEvent.seq).limit(limit)))
    if not events:
        return Batch(lines, after_seq, signed_through)
    last = events[-1].seq
    signed = {c.seq: c for c in audit_checkpoints.checkpoints(session, organization_id, after_seq=after_seq,
                                                              up_to_seq=last)}
    for event in events:
        at = event.created_at.timestamp()
        lines.append(_line(event_view(event, reveal_session_ids=reveal_session_ids).to_json(), at))
        checkpoint = signed.get(event.seq)
        if checkpoint is not None and checkpoint.hash == event.hash:
            lines.append(_line(checkpoint.to_json(), checkpoint.created_at.timestamp()))
            signed_through = event.seq
    return Batch(lines, last, signed_through)


def _target(row: AuditStream, seal_key: str, policy: Policy) -> Target:
    secret = secret_seal.unseal(seal_key, PURPOSE, row.secret_sealed) if row.secret_sealed else None
    return Target(row.kind, parse(row.kind, row.endpoint, allow_loopback=policy.allow_loopback),
                  row.organization_id, secret, policy.timeout, policy.ca_bundle, policy.allow_loopback)


def _fail(session: Session, row: AuditStream, claim: str, error: str, lines: int, policy: Policy, now: datetime,
          rand: Callable[[], float], cursor: int) -> str:
    attempts = row.attempts + 1
    dead = attempts >= policy.max_attempts
    state = "dead_letter" if dead else "retrying"
    next_at = None if dead else now + timedelta(seconds=backoff_delay(attempts, policy, rand))
    settled = _settle(session, row.id, claim, state=_keep_paused(state), attempts=attempts,
                      next_attempt_at=next_at, last_error=error[:512], lease_until=None, updated_at=now)
    if settled and dead:
        settled = session.scalar(select(AuditStream.state).where(AuditStream.id == row.id)) == "dead_letter"
    if settled and dead:
        log.warning("audit stream %s is dead-lettered after %d attempts", row.id, attempts)
        audit.record(session, action="audit_stream.dead_lettered",
                     cause=Cause.system("audit stream delivery failed too often"),
                     organization_id=row.organization_id, target_type="audit_stream", target_id=row.id,
                     outcome="failure", details={"attempts": attempts, "cursor": cursor, "error": error})
        alerts.raise_alert(session, organization_id=row.organization_id, kind=alerts.AUDIT_STREAM_DEAD_LETTER,
                           target_type="audit_stream", target_id=row.id,
                           message=f"The audit stream {row.name!r} stopped after {attempts} failed deliveries: "
                                   "fix the receiver, then retry the stream.",
                           details={"attempts": attempts, "cursor": cursor, "error": error[:512]},
                           cause=Cause.system("audit stream delivery failed too often"), now=now)
    session.commit()
    metrics.audit_stream(row.kind, state if dead else "failed", lines)
    return state


def _failure(exc: BaseException, known: tuple[type[BaseException], ...] = (DeliveryFailed,)) -> str:
    """What ``last_error`` says of *exc*: the message of one of our own *known* errors (the wire's bounded one,
    ``secret_unreadable``, an endpoint's), else the exception's type only (a receiver's answer or a secret may be
    in its message)."""
    return str(exc) if isinstance(exc, known) else f"{type(exc).__name__} while delivering"


def _renew(session: Session, stream_id: str, held: str, at: datetime, policy: Policy) -> str | None:
    """Extend the lease from *at* while this worker holds the claim and the sink is still enabled and due; else
    release a claim still held and return why it stops (``lost_lease`` or the admin's ``paused``)."""
    renewed = session.execute(update(AuditStream).where(AuditStream.id == stream_id, AuditStream.claim == held,
                                                        AuditStream.enabled.is_(True),
                                                        AuditStream.state.in_(DUE_STATES))
                              .values(lease_until=at + timedelta(seconds=lease_seconds(policy)))
                              .execution_options(synchronize_session=False))
    stopped = None
    if not getattr(renewed, "rowcount", 0):
        stopped = "paused" if _settle(session, stream_id, held, lease_until=None, claim=None) else "lost_lease"
    session.commit()
    return stopped


def deliver_stream(session: Session, stream_id: str, *, seal_key: str, policy: Policy, now: datetime | None = None,
                   rand: Callable[[], float] = random.random, clock: Callable[[], float] = time.time
                   ) -> SinkReport | None:
    """Take the sink (``None`` if it is not due or another worker holds it) and deliver batches until it is caught
    up, a batch fails, or :data:`MAX_BATCHES_PER_PASS` batches went. *now* (default the clock) is the time of
    the claim; the lease is renewed before each batch from *now* plus the seconds *clock* saw go by."""
    now, started = now or utcnow(), clock()

    def current() -> datetime:
        return now + timedelta(seconds=max(clock() - started, 0.0))

    claim = _claim(session, stream_id, now, lease_seconds(policy))
    if claim is None:
        return None
    row = session.get(AuditStream, stream_id, populate_existing=True)
    assert row is not None
    # the row is read once and never assigned to: progress is written by _settle under the claim only
    delivered, cursor, signed = 0, row.cursor, row.checkpoint_seq
    recovering = row.last_error is not None
    size = min(policy.batch, DATADOG_MAX_ENTRIES // 2) if row.kind == "datadog" else policy.batch
    try:
        target = _target(row, seal_key, policy)
    except Exception as exc:  # noqa: BLE001 - a sink's failure fails that sink only
        session.rollback()
        error = _failure(exc, (secret_seal.SecretUnreadable, ValueError))
        return SinkReport(stream_id, 0, _fail(session, row, claim, error, 0, policy, current(), rand, cursor), error)
    for _ in range(MAX_BATCHES_PER_PASS):
        stopped = _renew(session, stream_id, claim, current(), policy)
        if stopped is not None:
            return SinkReport(stream_id, delivered, stopped)
        batch: Batch | None = None
        try:
            batch = batch_lines(session, row.organization_id, cursor, size, reveal_session_ids=row.reveal_session_ids,
                                checkpoint_seq=signed)
            if not batch.lines:
                break
            session.commit()  # no transaction stays open while the sink answers
            deliver(target, batch.lines, now=clock)
        except Exception as exc:  # noqa: BLE001 - any exception building, sending or reading fails this sink only
            session.rollback()
            if not isinstance(exc, DeliveryFailed):
                log.warning("audit stream %s: delivery raised %s", stream_id, type(exc).__name__)
            lines = len(batch.lines) if batch is not None else 0
            return SinkReport(stream_id, delivered, _fail(session, row, claim, _failure(exc), lines, policy,
                                                          current(), rand, cursor), _failure(exc))
        newest = max(line.at for line in batch.lines)
        at = current()
        if not _settle(session, stream_id, claim, cursor=batch.last_seq, checkpoint_seq=batch.checkpoint_seq,
                       state=_keep_paused("active"), attempts=0, next_attempt_at=None, last_error=None,
                       last_delivered_at=at, delivered_events=AuditStream.delivered_events + len(batch.lines)):
            session.rollback()
            return SinkReport(stream_id, delivered, "lost_lease")
        if recovering:  # the first delivery after failures ends a dead-letter alert, if one is open
            alerts.resolve_raised(session, organization_id=row.organization_id, kind=alerts.AUDIT_STREAM_DEAD_LETTER,
                                  target_id=row.id, resolution="delivered",
                                  cause=Cause.system("audit stream delivered again"), now=at)
            recovering = False
        session.commit()
        metrics.audit_stream(row.kind, "delivered", len(batch.lines), lag=clock() - newest)
        delivered, cursor, signed = delivered + len(batch.lines), batch.last_seq, batch.checkpoint_seq
    _settle(session, stream_id, claim, lease_until=None, claim=None)
    session.commit()
    return SinkReport(stream_id, delivered, "active")


def run(session: Session, *, seal_key: str, policy: Policy, now: datetime | None = None,
        rand: Callable[[], float] = random.random, clock: Callable[[], float] = time.time) -> list[SinkReport]:
    """One pass over every due sink of every organization, each claimed at the time of its turn (*now*, when
    given, is the pass's start; the seconds *clock* saw go by since are added). A sink that raises is logged and
    skipped (its lease expires): the others are still delivered."""
    started, start = clock(), now or utcnow()
    reports = []
    for stream_id in due_streams(session, now=start):
        turn = start + timedelta(seconds=max(clock() - started, 0.0))
        try:
            report = deliver_stream(session, stream_id, seal_key=seal_key, policy=policy, now=turn, rand=rand,
                                    clock=clock)
        except Exception:  # one sink never stops the others
            session.rollback()
            log.warning("audit stream %s: its turn failed", stream_id, exc_info=True)
            continue
        if report is not None:
            reports.append(report)
    return reports
