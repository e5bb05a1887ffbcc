"""Delivery of the audit chains to their sinks (docs/audit.md, "Streaming to a SIEM"): at least once, in ``seq``
order, from each sink's cursor, with the chain's signed checkpoints in the stream.

A pass (:func:`run`, called by the audit worker after it signed the due checkpoints) takes each due sink with a
conditional UPDATE stamping a claim and a lease (never ``FOR UPDATE``, which SQLite ignores: two workers never
deliver one sink at once; a dead worker's lease expires), then sends batches of the events after the cursor, each
followed by the checkpoint that signs its ``seq`` if there is one. The cursor advances only after the sink
confirmed a batch, so a failure resends that batch (duplicates, never a gap or a reorder). A failed batch sets
``retrying`` with an exponential backoff with jitter, capped; after ``max_attempts`` failures in a row the sink is
``dead_letter`` (audited ``audit_stream.dead_lettered``) until an admin retries it.
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

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from .. import metrics
from ..causes import Cause
from ..models import AuditEvent, AuditStream, new_id, utcnow
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


def _claim(session: Session, stream_id: str, now: datetime, lease: float) -> str | None:
    claim = new_id("clm")
    taken = session.execute(update(AuditStream).where(AuditStream.id == stream_id, _due(now))
                            .values(claim=claim, lease_until=now + timedelta(seconds=lease))
                            .execution_options(synchronize_session=False))
    session.commit()
    return claim if getattr(taken, "rowcount", 0) == 1 else None


def _settle(session: Session, stream_id: str, held: str, **values: Any) -> bool:
    """Write the sink's progress only while this worker holds its claim *held*."""
    done = session.execute(update(AuditStream).where(AuditStream.id == stream_id, AuditStream.claim == held)
                           .values(**values).execution_options(synchronize_session=False))
    return bool(getattr(done, "rowcount", 0))


def _line(value: dict[str, Any], at: float) -> Line:
    return Line(json.dumps(value, sort_keys=True, ensure_ascii=False, default=str), value, at)


def batch_lines(session: Session, organization_id: str, after_seq: int, limit: int, *,
                reveal_session_ids: bool) -> tuple[list[Line], int]:
    """The stream lines of up to *limit* events after *after_seq* in ``seq`` order, each signed ``seq`` followed by
    its checkpoint line (only one whose hash is the event's), and the last ``seq`` of the batch."""
    events = list(session.scalars(select(AuditEvent).where(AuditEvent.organization_id == organization_id,
                                                           AuditEvent.seq > after_seq)
                                  .order_by(AuditEvent.seq).limit(limit)))
    if not events:
        return [], after_seq
    last = events[-1].seq
    signed = {c.seq: c for c in audit_checkpoints.checkpoints(session, organization_id, after_seq=after_seq,
                                                              up_to_seq=last)}
    lines: list[Line] = []
    for event in events:
        at = event.created_at.timestamp()
        lines.append(_line(event_view(event, reveal_session_ids=reveal_session_ids).to_json(), at))
        checkpoint = signed.get(event.seq)
        if checkpoint is not None and checkpoint.hash == event.hash:
            lines.append(_line(checkpoint.to_json(), checkpoint.created_at.timestamp()))
    return lines, last


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
    settled = _settle(session, row.id, claim, state=state, attempts=attempts, next_attempt_at=next_at,
                      last_error=error[:512], lease_until=None, updated_at=now)
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


def deliver_stream(session: Session, stream_id: str, *, seal_key: str, policy: Policy, now: datetime | None = None,
                   rand: Callable[[], float] = random.random, clock: Callable[[], float] = time.time
                   ) -> SinkReport | None:
    """Take the sink (``None`` if it is not due or another worker holds it) and deliver batches until it is caught
    up, a batch fails, or :data:`MAX_BATCHES_PER_PASS` batches went."""
    now = now or utcnow()
    claim = _claim(session, stream_id, now, policy.lease)
    if claim is None:
        return None
    row = session.get(AuditStream, stream_id, populate_existing=True)
    assert row is not None
    # the row is read once and never assigned to: progress is written by _settle under the claim only
    delivered, cursor = 0, row.cursor
    recovering = row.last_error is not None
    size = min(policy.batch, DATADOG_MAX_ENTRIES // 2) if row.kind == "datadog" else policy.batch
    try:
        target = _target(row, seal_key, policy)
    except (secret_seal.SecretUnreadable, ValueError) as exc:
        return SinkReport(stream_id, 0, _fail(session, row, claim, str(exc), 0, policy, now, rand, cursor), str(exc))
    for _ in range(MAX_BATCHES_PER_PASS):
        lines, last = batch_lines(session, row.organization_id, cursor, size,
                                  reveal_session_ids=row.reveal_session_ids)
        if not lines:
            break
        session.commit()  # no transaction stays open while the sink answers
        try:
            deliver(target, lines, now=clock)
        except DeliveryFailed as exc:
            return SinkReport(stream_id, delivered, _fail(session, row, claim, str(exc), len(lines), policy, now,
                                                          rand, cursor), str(exc))
        newest = max(line.at for line in lines)
        if not _settle(session, stream_id, claim, cursor=last, state="active", attempts=0, next_attempt_at=None,
                       last_error=None, last_delivered_at=now,
                       delivered_events=AuditStream.delivered_events + len(lines)):
            session.rollback()
            return SinkReport(stream_id, delivered, "lost_lease")
        if recovering:  # the first delivery after failures ends a dead-letter alert, if one is open
            alerts.resolve_raised(session, organization_id=row.organization_id, kind=alerts.AUDIT_STREAM_DEAD_LETTER,
                                  target_id=row.id, resolution="delivered",
                                  cause=Cause.system("audit stream delivered again"), now=now)
            recovering = False
        session.commit()
        metrics.audit_stream(row.kind, "delivered", len(lines), lag=clock() - newest)
        delivered, cursor = delivered + len(lines), last
    _settle(session, stream_id, claim, lease_until=None, claim=None)
    session.commit()
    return SinkReport(stream_id, delivered, "active")


def run(session: Session, *, seal_key: str, policy: Policy, now: datetime | None = None,
        rand: Callable[[], float] = random.random, clock: Callable[[], float] = time.time) -> list[SinkReport]:
    """One pass over every due sink of every organization."""
    now = now or utcnow()
    reports = []
    for stream_id in due_streams(session, now=now):
        report = deliver_stream(session, stream_id, seal_key=seal_key, policy=policy, now=now, rand=rand,
                                clock=clock)
        if report is not None:
            reports.append(report)
    return reports
