"""The appliers' claim (:mod:`services.inbox_worker`): which pending events a batch takes, and how it holds them.

A claim takes up to *limit* due events, each the oldest pending event of its
:func:`~hatidata_auth.services.inbox.entity_key` (by event time, then id), those revoking access first. On
PostgreSQL the rows are locked with ``FOR UPDATE SKIP LOCKED`` and each key with a transaction-level advisory lock;
on SQLite the claim is one ``UPDATE``, which takes the database's write lock. The statements are built once per
variant, with bound parameters.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Integer, String, and_, bindparam, func, literal_column, or_, select, text, true, update
from sqlalchemy.orm import Session

from ..models import WebhookEvent, utcnow
from ..models.inbox import INTERNAL_SOURCE, claim_time, entity, status_is
from .events import parse_time
from .workos_revocations import JOB_TYPE as REVOCATION_JOB
from .workos_revocations import PER_BATCH

DEFAULT_BATCH = 20
MAX_CLAIM = 2**31 - 1
"""The largest batch a claim takes (a larger *limit* is this one): the statements' ``LIMIT`` is an ``integer``."""
REVOCATIONS_PER_BATCH = PER_BATCH
"""How many WorkOS session revocations (``services.workos_revocations``: one HTTP call each, made side by side by
``services.events.session_jobs.revoked_together``) a batch takes at most, besides its one other job: one at a
time, a mass deprovisioning's revocations took a batch (and WorkOS's latency) each."""
RETRY_DELAY = timedelta(seconds=5)
"""After a transient failure (WorkOS unreachable) an event waits this long before the next try; the events of its
entity key wait behind it."""


@dataclass(frozen=True, slots=True)
class Claimed:
    """One event taken by a batch. *followed*: whether another event of its entity key was pending when it was
    taken (``inbox_coalesce`` reads a run only for those); ``True`` when not known."""

    id: int
    event_id: str
    event_type: str
    payload: dict[str, Any]
    attempts: int
    source: str = "webhook"
    trace_context: dict[str, str] | None = None
    followed: bool = True



def _head(t: Any) -> Any:
    """SQL condition: the event of *t* is the head of its entity key: no older pending event of its key (by event
    time, then id), i.e. it is the first of its key in ``ix_webhook_events_pending_key``: one probe of that
    index, whatever the backlog."""
    # Not ``NOT EXISTS (an older one)``: PostgreSQL flattens that into an anti join, and without statistics (a
    # fresh database) it joined every candidate to a scan of the whole backlog (32 ms per claim at 1,000 events,
    # 37,611 rows filtered). A scalar subquery with LIMIT stays a per-row probe on both databases.
    return t.c.id == _head_of_key(t)


def _head_of_key(t: Any) -> Any:
    """SQL scalar: the id of the head of the entity key of the event of *t* (one probe of the pending-key index)."""
    first = WebhookEvent.__table__.alias("first_of_key")
    return (select(first.c.id).where(status_is("received", first), entity(first) == entity(t))
            .order_by(claim_time(first), first.c.id).limit(1).scalar_subquery())


REVOKING_SCAN = 10
"""A revoking claim of *limit* events reads at most this many times *limit* pending revoking events for their
heads (a mass deprovisioning is claimed a window at a time, not read whole by every claim)."""


def _revoking_heads(session: Session, limit: int) -> list[int]:
    """The heads of :func:`_heads_of_revoking_keys` for the first ``REVOKING_SCAN * limit`` pending revoking events
    in claim order (PostgreSQL)."""
    heads = session.scalars(_revoking_heads_statement(), {"scan": min(limit * REVOKING_SCAN, MAX_CLAIM)})
    return [i for i in heads.unique() if i is not None]


@functools.cache
def _revoking_heads_statement() -> Any:
    return _heads_of_revoking_keys(in_claim_order=True)


def _heads_of_revoking_keys(in_claim_order: bool = False) -> Any:
    """SQL: the ids of the heads of the entity keys that hold a pending event taking access away. The revoking
    thread claims these, not only revoking heads: an event that takes access away behind an older one of its key
    (a connection deactivated after its activation, an organization deleted after an update) would otherwise
    wait for the batch appliers to reach that older one. Read from the revoking events (the claim index's first
    column), a probe of the pending-key index each: the backlog of other keys is never read."""
    revoking = WebhookEvent.__table__.alias("revoking")
    heads = select(_head_of_key(revoking)).where(status_is("received", revoking), revoking.c.revokes.is_(True))
    if in_claim_order:  # at most *scan* of them
        heads = heads.order_by(revoking.c.revokes.desc(), claim_time(revoking), revoking.c.id).limit(
            bindparam("scan", type_=Integer))
    return heads


def _heads(t: Any, now_due: Any, entity_key: Any = None) -> list[Any]:
    """SQL conditions: the event is pending, the head of its entity key (or of *entity_key*, exactly, a bound
    parameter), and due: not waiting after a transient failure (which left its error), or waiting since before
    *now_due*."""
    # A key is matched as the index holds it (coalesce), and as stored: an event id is never an entity key.
    of_key = [entity(t) == entity_key, t.c.entity_key == entity_key] if entity_key is not None else []
    return [status_is("received", t), *of_key, _head(t), or_(t.c.last_error.is_(None), t.c.updated_at <= now_due)]


def _not_after(t: Any, event_id: Any) -> Any:
    """SQL condition: the event of *t* does not come after the stored event *event_id* in claim order (event time,
    then id); false when no event has that id."""
    given = WebhookEvent.__table__.alias("given")
    when = select(claim_time(given)).where(given.c.event_id == event_id).scalar_subquery()
    row = select(given.c.id).where(given.c.event_id == event_id).scalar_subquery()
    return or_(claim_time(t) < when, and_(claim_time(t) == when, t.c.id <= row))


def claim(session: Session, limit: int = DEFAULT_BATCH, *, revoking_only: bool = False,
          entity_key: str | None = None, up_to: str | None = None) -> list[Claimed]:
    """Take up to *limit* due events, the oldest pending one of each entity key, those revoking access first, then
    oldest first; they stay claimed until *session*'s transaction ends (the caller commits their outcome, or rolls
    them back). With *revoking_only*, only the heads of the keys that hold an event taking access away (the pool's
    deprovisioning thread: such an event behind an older one of its key is reached through it); with
    *entity_key*, only the head of that key, and with *up_to* (an event id) only if it is not after that stored
    event (``inbox_worker.apply_entity_now``: once an applier applied that event, the key's later ones are the
    appliers'). At most one recompute job (``services.fanout_jobs``) is taken per batch, and at most
    :data:`REVOCATIONS_PER_BATCH` WorkOS session revocations. A *limit* of zero or less
    takes nothing; one past :data:`MAX_CLAIM` is that.

    The cost does not grow with the backlog: the pending events are read in claim order
    (``ix_webhook_events_claim_order``) until *limit* heads are found, each tested by one index probe; only the
    events read past add to it (heads not due or locked by another applier, their keys' later events, and the
    revoking events that wait behind an older event of their key, read before any other). A *revoking_only* claim
    reads the revoking events and one probe each (:func:`_heads_of_revoking_keys`)."""
    if limit <= 0:  # SQLite reads a negative LIMIT as none, PostgreSQL refuses it
        return []
    now = utcnow()
    bound = min(limit, MAX_CLAIM)
    params = {"due": now - RETRY_DELAY, "limit": bound, "key": entity_key,
              "up_to": up_to}  # due: a retried event's updated_at is its last try
    postgres = session.get_bind().dialect.name == "postgresql"
    by_key = entity_key is not None
    statements = _claim_statements(postgres, revoking_only, by_key, by_key and up_to is not None)
    candidates_query, lock_query, take = statements
    if not postgres or (by_key and not revoking_only):  # one statement (on PostgreSQL one key's: the lock in it)
        rows = session.execute(take, {**params, "now": now}).all()
    else:
        if revoking_only:
            params["heads"] = _revoking_heads(session, bound)
            if not params["heads"]:
                return []
            # The few heads free to take, sorted here: ordered in SQL, the planner read the whole backlog in claim
            # order to find them. Those past *limit* stay locked until this batch ends (the next one takes them).
            found = session.execute(candidates_query, params).all()
            candidates = [r.id for r in sorted(found, key=lambda r: (not r.revokes, r.at, r.id))][:bound]
        else:
            candidates = _unsorted(session, candidates_query, params)
        if not candidates:
            return []
        # The row lock alone does not hold an entity: an older event of it stored after this batch's claim comes
        # first, unlocked. A transaction-level advisory lock per entity key does, until this batch ends.
        picked = session.scalars(lock_query, {"candidates": candidates}).all()
        if not picked:
            return []
        rows = session.execute(take, {"picked": picked, "now": now}).all()
    rows = sorted(rows, key=lambda r: (not r.revokes, parse_time(r.event_created_at) or r.received_at, r.id))
    return [Claimed(r.id, r.event_id, r.event_type, dict(r.payload), r.attempts, r.source, r.trace_context,
                    r.followed) for r in rows]


@functools.cache
def _claim_statements(postgres: bool, revoking_only: bool, by_key: bool, up_to: bool) -> tuple[Any, Any, Any]:
    """:func:`claim`'s statements for one variant, built once with bound parameters (``due``, ``limit``, ``key``,
    ``up_to``;
    ``candidates``; ``picked`` or, on SQLite, the candidates' parameters; ``now``): building them on every claim
    cost about 1 ms of CPU, more than a claim's queries. Returns (candidates, advisory lock, update-returning);
    on PostgreSQL one key's update-returning holds the other two, which are then not run apart."""
    t = WebhookEvent.__table__
    due = bindparam("due", type_=t.c.updated_at.type)
    key = bindparam("key", type_=t.c.entity_key.type) if by_key else None
    order = (t.c.revokes.desc(), claim_time(t), t.c.id)
    # PostgreSQL: the heads are read first (:func:`_revoking_heads`) and given as a list, unordered (the claim
    # sorts what it takes): as a subquery, or ordered, the planner read the whole backlog in claim order to test
    # each event against them.
    heads = bindparam("heads", expanding=True) if postgres else _heads_of_revoking_keys()
    wanted = [*_heads(t, due, key), *([t.c.id.in_(heads)] if revoking_only else []),
              *([_not_after(t, bindparam("up_to", type_=t.c.event_id.type))] if up_to else [])]
    # At most one recompute job per batch: a job is one chunk of members, and a batch is one transaction. (On
    # PostgreSQL the oldest due job may be one another applier holds: jobs then run one at a time, a throttle.)
    job = WebhookEvent.__table__.alias("job")
    first_job = (select(job.c.id).where(*_heads(job, due, key), job.c.source == literal_column(
        f"'{INTERNAL_SOURCE}'", String)).order_by(job.c.revokes.desc(), claim_time(job), job.c.id).limit(1))
    jobs = [t.c.source != INTERNAL_SOURCE, t.c.id == first_job.scalar_subquery()]
    if not (revoking_only or by_key):
        # WorkOS revocations are light (one HTTP call, made side by side with the batch's others) and never wait for
        # one another (a key per session): up to a bound of them, the oldest due, whatever other job the batch
        # takes. Not for a revoking claim (none is revoking) nor one key's (one job is all a key has due).
        revocation = WebhookEvent.__table__.alias("revocation")
        of_type = [revocation.c.source == literal_column(f"'{INTERNAL_SOURCE}'", String),
                   revocation.c.event_type == literal_column(f"'{REVOCATION_JOB}'", String)]
        jobs.append(t.c.id.in_(
            select(revocation.c.id).where(*_heads(revocation, due), *of_type)
            .order_by(revocation.c.revokes.desc(), claim_time(revocation), revocation.c.id)
            .limit(REVOCATIONS_PER_BATCH)))
    wanted.append(or_(*jobs))
    if postgres and revoking_only:  # sorted by :func:`claim`, which takes the first *limit*
        candidates = select(t.c.id, t.c.revokes, claim_time(t).label("at")).where(*wanted)
    else:
        candidates = select(t.c.id).where(*wanted).order_by(*order).limit(bindparam("limit", type_=Integer))
    lock = None
    picked: Any
    if postgres and by_key and not revoking_only:
        # One key's claim (``inbox_worker.apply_entity_now``, in a request) is one statement, the queue's usual
        # ``UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED)``: a round trip each for the candidates and
        # the lock cost a deprovisioning request two of its nineteen. Both steps are materialized, so the advisory
        # lock is tried on the candidates' key only, after their rows are locked, as the three statements did.
        found = candidates.with_for_update(skip_locked=True).cte("candidates").prefix_with("MATERIALIZED")
        held = select(found.c.id).where(func.pg_try_advisory_xact_lock(func.hashtextextended(key, 0)))
        picked = select(held.cte("picked").prefix_with("MATERIALIZED").c.id)
    elif postgres:
        candidates = candidates.with_for_update(skip_locked=True)
        lock = select(t.c.id).where(t.c.id.in_(bindparam("candidates", expanding=True)),
                                    func.pg_try_advisory_xact_lock(func.hashtextextended(entity(t), 0)))
        picked = bindparam("picked", expanding=True)
    else:
        picked = candidates.scalar_subquery()
    take = (update(t).where(t.c.id.in_(picked))
            .values(attempts=t.c.attempts + 1, updated_at=bindparam("now", type_=t.c.updated_at.type))
            .returning(t.c.id, t.c.event_id, t.c.event_type, t.c.payload, t.c.attempts, t.c.event_created_at,
                       t.c.received_at, t.c.revokes, t.c.source, t.c.trace_context,
                       (_followed(t) if postgres else true()).label("followed")))
    return candidates, lock, take


def _followed(t: Any) -> Any:
    """SQL condition: another event of the entity key of the event of *t* is pending (one probe of the pending-key
    index, as :func:`_head_of_key`; an index probe in the claim's own statement costs less than the round trip it
    spares a batch with no backlog). PostgreSQL only: SQLite writes a ``RETURNING`` clause's columns unqualified,
    which inside a subquery name the subquery's own table."""
    # Ordered as the index: with only LIMIT 1, statistics that make random reads dear planned a sequential scan
    # expected to stop early, which read the whole table for every head with nothing behind it (helper-148).
    other = WebhookEvent.__table__.alias("other_of_key")
    return (select(other.c.id).where(status_is("received", other), entity(other) == entity(t), other.c.id != t.c.id)
            .order_by(claim_time(other), other.c.id).limit(1).scalar_subquery().is_not(None))


def _unsorted(session: Session, query: Any, params: dict[str, Any]) -> list[int]:
    """Run *query* (ids) on PostgreSQL planned without sorting (:func:`unsorted_rows`). Without statistics (a fresh
    database, ``ANALYZE`` not yet run) the planner took ``status = 'received'`` and the head test for a handful of
    rows and sorted the whole backlog after testing every event (600 ms per claim at 100,000 pending events)."""
    return [row[0] for row in unsorted_rows(session, query, params)]


_SORTS_OFF = text("SELECT was.sort, was.jit, set_config('enable_sort', 'off', true), set_config('jit', 'off', true) "
                  "FROM (SELECT current_setting('enable_sort') AS sort, current_setting('jit') AS jit OFFSET 0) AS was")
_RESTORED = text("SELECT set_config('enable_sort', :sort, true), set_config('jit', :jit, true)")


def unsorted_rows(session: Session, query: Any, params: dict[str, Any]) -> list[Any]:
    """The rows of *query* on PostgreSQL, planned without sorting (``enable_sort`` off for this statement alone),
    so each ``ORDER BY … LIMIT`` in it reads an index in its order and stops at its limit, whatever the statistics
    say; *query* must not need a sort for anything else (an outer ``ORDER BY``: the caller sorts in Python). Nor
    JIT-compiled (``jit`` off as well): the planner costs each ``LIMIT`` subquery by the rows it may read, and with
    the claim's WorkOS revocations' bound of 8 the estimate crossed ``jit_above_cost`` with a backlog of other jobs
    (a break-it review: 472 ms per claim against 21.5 ms, almost all of it JIT; the run read likewise at
    ``random_page_cost = 1000``, helper-148). A short read compiled is never repaid."""
    # Read before setting: read after, the "restored" setting stayed off for the rest of the batch: every sorted
    # query of it then carried the disabled sort's cost (1e10), past ``jit_above_cost``, and was JIT-compiled (about
    # 300 ms each). The fenced subquery (OFFSET 0) is a plan node of its own, run before the outer row's set_config.
    sort, jit = session.execute(_SORTS_OFF).one()[:2]
    rows = list(session.execute(query, params))
    # The settings are the transaction's (``true``): an error rolls them back with the rest.
    session.execute(_RESTORED, {"sort": sort, "jit": jit})
    return rows


def waiting_behind(session: Session, rows: Sequence[int]) -> bool:
    """Whether an event is pending on the entity key of any of the inbox rows *rows* (the events a batch just
    applied): the next claim takes it at once, one event per key, however long an applier waits first, so waiting
    cannot make that batch bigger on that key (``applier_pool.Linger``). An event of *rows* left pending by a
    transient failure counts too (its key waits; the applier then claims at once, as without a linger). One probe
    of ``ix_webhook_events_pending_key`` per key (0.35 ms at 200,000 rows, fresh or analyzed)."""
    if not rows:
        return False
    return session.scalar(_behind_statement(), {"rows": list(rows)}) is not None


@functools.cache
def _behind_statement() -> Any:
    t = WebhookEvent.__table__
    given = t.alias("given")
    keys = select(entity(given)).where(given.c.id.in_(bindparam("rows", expanding=True)))
    return select(t.c.id).where(status_is("received", t), entity(t).in_(keys)).limit(1)
