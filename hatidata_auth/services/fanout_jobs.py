"""Recompute jobs: fan-out work (many members' access) queued in the inbox and applied in chunks by the appliers.

A job is a row of ``webhook_events`` with ``source = 'internal'`` and the type :data:`JOB_TYPE` (the internal
namespace ``hatidata.``), so the appliers claim, order, retry, fail, replay and expire it as any event. Its payload
says whose members (``organization_id``, our tenant id, and a scope: ``group:<WorkOS group id>``,
``directory:<WorkOS directory id>`` or ``organization``), why (``reason`` and the whole ``cause`` it continues) and
where it stands (``cursor``: the last member key done, ``None`` before the first chunk). Applying a job
recomputes at most one chunk after the cursor and, when more remain, queues the next job (cursor advanced) in the
same transaction: a crash between chunks loses nothing and redoes nothing.

Only :func:`insert_job` writes such a row (for every internal type: these jobs, the WorkOS revocations, the
freed-email links); a webhook or the Events API cannot (``inbox.validate_envelope`` refuses the
namespace and the id prefix), and the appliers dispatch a row to the internal handlers only when its source is
internal. This module is low in the layers (models and causes only), so the services that fan out (the role
mappings, the directory handlers) can queue a job.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import ARRAY, String, bindparam, func, insert, literal, select
from sqlalchemy.orm import Session

from ..causes import Cause
from ..config import DEFAULTS
from ..models import Membership, WebhookEvent, utcnow
from ..models.inbox import INBOX_CHANNEL, INTERNAL_SOURCE, REVOKING_NOTE
from ..random_ids import uuid4_hex
from ..trace_context import carrier
from . import db_conflicts

JOB_TYPE = "hatidata.recompute_members"
INTERNAL_NAMESPACE = "hatidata."
"""Event types under this prefix are ours; WorkOS names none so, and no webhook may use it."""
JOB_ID_PREFIX = "hdjob_"
DEFAULT_CHUNK: int = DEFAULTS["HATIDATA_FANOUT_CHUNK"]
SCOPE_KINDS = ("group", "directory", "organization")


def is_internal(event_type: Any, event_id: Any = None) -> bool:
    """Whether an event type (or id) belongs to our internal work, which no webhook or Events API event may carry."""
    return (isinstance(event_type, str) and event_type.startswith(INTERNAL_NAMESPACE)) or (
        isinstance(event_id, str) and event_id.startswith(JOB_ID_PREFIX))


def chunk_size(value: Any = None) -> int:
    """A chunk size: *value* (a setting) when it is a positive integer, else :data:`DEFAULT_CHUNK`."""
    try:
        size = int(value) if value is not None else DEFAULT_CHUNK
    except (TypeError, ValueError):
        return DEFAULT_CHUNK
    return size if size > 0 else DEFAULT_CHUNK


@dataclass(frozen=True, slots=True)
class Job:
    """One recompute job: the members of *scope* in our organization *organization_id*, after *cursor*."""

    organization_id: str
    scope: str
    reason: str
    cause: Cause
    cursor: str | None = None
    started_at: datetime | None = None  # when the first job of the chain was queued (for operators)

    @property
    def kind(self) -> str:
        """``group``, ``directory`` or ``organization``."""
        return self.scope.split(":", 1)[0]

    @property
    def ref(self) -> str | None:
        """The WorkOS id of the group or directory (``None`` for the organization)."""
        return self.scope.split(":", 1)[1] if ":" in self.scope else None

    def after(self, cursor: str) -> Job:
        """The next job of the chain: the same work after *cursor*."""
        return replace(self, cursor=cursor)

    def data(self) -> dict[str, Any]:
        """The job's payload ``data``."""
        return {"organization_id": self.organization_id, "scope": self.scope, "reason": self.reason,
                "cause": self.cause.to_dict(), "cursor": self.cursor,
                "started_at": None if self.started_at is None else self.started_at.isoformat()}


@dataclass(slots=True)
class MemberBudget:
    """The members one transaction may still recompute: one chunk for a whole applier batch, however many events
    it holds (each fan-out spends what it recomputes; one that does not fit is queued as a job)."""

    remaining: int

    def allowance(self, chunk: int) -> int:
        """How many members the next fan-out may recompute now: at most *chunk*, at most what is left."""
        return max(0, min(chunk, self.remaining))

    def spend(self, members: int) -> None:
        """*members* were recomputed."""
        self.remaining -= members


class JobError(ValueError):
    """A stored job's payload does not have the shape :meth:`Job.data` writes."""


def parse(data: Any) -> Job:
    """The job a payload's ``data`` describes; :class:`JobError` otherwise."""
    try:
        scope = str(data["scope"])
        if scope.split(":", 1)[0] not in SCOPE_KINDS or (scope != "organization" and ":" not in scope):
            raise JobError(f"unknown scope {scope!r}")
        started = data.get("started_at")
        return Job(str(data["organization_id"]), scope, str(data["reason"]), Cause.from_dict(data["cause"]),
                   None if data.get("cursor") is None else str(data["cursor"]),
                   None if started is None else datetime.fromisoformat(started))
    except (KeyError, TypeError, ValueError) as exc:
        raise JobError(f"not a recompute job: {exc}") from exc


def entity_key(job: Job) -> str:
    """The inbox order key of a job's chain: its jobs run one after the other, never two at once."""
    return f"fanout:{job.organization_id}:{job.scope}"[:160]


def member_key(directory_user_id: str) -> str:
    """The inbox order key of one directory user's own events (``services.inbox.entity_key`` of ``dsync.user.*``
    and ``dsync.group.user_*``): ``user:<directory user id>``, at most 160 characters."""
    return f"user:{directory_user_id}"[:160]


def hold_members(session: Session, directory_user_ids: Iterable[str]) -> None:
    """Serialise a fan-out with the members' own events: on PostgreSQL, wait for and hold until *session*'s
    transaction ends the advisory lock of each member's entity key (:func:`member_key`), the lock an applier's
    claim and the webhook's in-request apply take (``pg_try_advisory_xact_lock``, ``services.inbox_worker``).
    Call it **before** reading the members' state: a member's event claimed by another transaction is then
    committed before this one reads, and one claimed after waits (its claim skips the held key) until this one
    commits. Keys are taken in one order (sorted) so that two fan-outs never wait on each other in a cycle; a cycle with
    a batch that holds some members' keys from its claim is broken by PostgreSQL's deadlock detection, whose
    error rolls that batch back whole (still pending, claimed again). SQLite needs nothing: its writers take
    turns under the database's write lock."""
    if session.get_bind().dialect.name != "postgresql":
        return
    keys = sorted({member_key(ref) for ref in directory_user_ids})
    if len(keys) == 1:
        session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(keys[0], 0))))
    elif keys:
        # One statement for the whole set (a round trip per key cost a resync page 60 ms): the aggregate reads the
        # sorted subquery in order, so the locks are taken one after the other in the database's order of the keys,
        # the same order for every caller.
        keyed = _keys_table(keys)
        ordered = select(keyed.c.key).order_by(keyed.c.key).subquery()
        session.execute(select(func.count(func.pg_advisory_xact_lock(func.hashtextextended(ordered.c.key, 0)))))


def _keys_table(keys: list[str]) -> Any:
    """*keys* as a one-column table (``key``) of a single statement: ``unnest`` of one array parameter."""
    return func.unnest(literal(keys, ARRAY(String))).table_valued("key").render_derived()


def try_hold_members(session: Session, directory_user_ids: Iterable[str]) -> bool:
    """Take, without waiting, the entity key of each member (:func:`hold_members`'s locks, held until *session*'s
    transaction ends); ``True`` when every key is held now, ``False`` when another transaction holds one (the free
    ones are taken all the same, in one statement). For a writer that already holds the organization's row: the
    appliers hold keys from their claim *before* they share that row, so waiting for a key there closed a cycle
    that PostgreSQL broke after ``deadlock_timeout`` by rolling back one side (a break-it review: under a storm of
    group-membership webhooks, 13-23 of 50 mapping edits answered 503 after three tries). SQLite needs nothing
    (``True``): its writers take turns under the database's write lock."""
    if session.get_bind().dialect.name != "postgresql":
        return True
    keys = sorted({member_key(ref) for ref in directory_user_ids})
    if not keys:
        return True
    keyed = _keys_table(keys)
    taken = func.bool_and(func.pg_try_advisory_xact_lock(func.hashtextextended(keyed.c.key, 0)))
    return bool(session.scalar(select(taken)))


def hold_member_of(session: Session, organization_id: str, membership_id: str) -> None:
    """Take without waiting (:func:`try_hold_members`) the key of the directory user the membership
    *membership_id* hangs on, if any, **before** the caller loads the membership to change its access (an admin's
    removal): a member's event then never reads the membership, lets the admin's change commit, and writes back
    what it read. Raises ``db_conflicts.KeyHeld`` when that member's event holds the key: the caller holds the
    organization's row, which that event's transaction shares next, so it gives up its transaction and runs it
    again after a pause (``db_conflicts.retrying``). Nothing to do on SQLite, or for a membership no directory
    user backs."""
    if session.get_bind().dialect.name != "postgresql":
        return
    held: set[str] = set()
    while True:  # until the membership's directory user is one we hold (a relink may move it meanwhile)
        ref = session.scalar(select(Membership.directory_user_id).where(Membership.organization_id == organization_id,
                                                                        Membership.id == membership_id))
        if not ref or ref in held:
            return
        if not try_hold_members(session, [ref]):
            raise db_conflicts.KeyHeld()
        held.add(ref)


def hold_membership(session: Session, membership: Membership) -> None:
    """Hold the key of the directory user *membership* (loaded) hangs on, if any, then reload it: what was read
    before the key was held is not trusted (a member's event may have committed over it). For writers that find
    the membership by something else than its id (a sign-in, by person)."""
    if session.get_bind().dialect.name != "postgresql" or not membership.directory_user_id:
        return
    hold_members(session, [membership.directory_user_id])
    session.refresh(membership)


def enqueue(session: Session, job: Job) -> str:
    """Queue *job* in *session*'s transaction (the caller commits, with the work that made it necessary); returns
    its event id. It takes access away when in doubt (``revokes``), so the appliers claim it first. Its event time
    is now: the next chunk of a chain queues behind the jobs and events already waiting (chains take turns, a
    deletion never waits for a whole rename), and two chains of one scope may interleave, which is correct since
    each chunk recomputes from the state stored when it runs."""
    job = replace(job, started_at=job.started_at or utcnow())
    return insert_job(session, JOB_TYPE, organization_id=job.organization_id, data=job.data(),
                      entity_key=entity_key(job), revokes=True)


QUEUED_REVOKING = "hatidata_queued_revoking_job"
"""``Session.info`` key :func:`insert_job` sets when it queues a job that may take access away
(:func:`queued_revoking_job`)."""


def queued_revoking_job(session: Session) -> bool:
    """Whether *session* inserted a job that may take access away (committed or not) since the last call, which
    clears the mark: the caller wakes the deprovisioning thread for it, which no ``NOTIFY`` does on SQLite."""
    return bool(session.info.pop(QUEUED_REVOKING, False))


def insert_job(session: Session, job_type: str, *, organization_id: str, data: dict[str, Any], entity_key: str,
               revokes: bool, not_before: datetime | None = None) -> str:
    """Write one internal work item (type *job_type*, in :data:`INTERNAL_NAMESPACE`) in *session*'s transaction:
    a ``webhook_events`` row with ``source = 'internal'``, an id with :data:`JOB_ID_PREFIX`, the order key
    *entity_key* (at most 160 characters kept), its event time (its place in claim order) now, or *not_before*
    when that is later, and a ``pg_notify`` that wakes the appliers when the transaction commits (PostgreSQL).
    Returns its event id. The only writer of internal rows (the queues of :mod:`services.fanout_jobs`,
    :mod:`services.workos_revocations`, :mod:`services.freed_email_jobs`)."""
    assert job_type.startswith(INTERNAL_NAMESPACE), job_type
    now = utcnow()
    at = max(now, not_before) if not_before is not None else now
    event_id = f"{JOB_ID_PREFIX}{uuid4_hex()}"
    params = {"event_id": event_id, "event_type": job_type, "organization_id": organization_id,
              "payload": {"id": event_id, "event": job_type, "created_at": at.isoformat(), "data": data},
              "event_created_at": at, "now": now, "entity_key": entity_key[:160], "revokes": revokes,
              "trace_context": carrier(), "note": REVOKING_NOTE if revokes else ""}
    if revokes:
        session.info[QUEUED_REVOKING] = True
    session.execute(_job_statement(session.get_bind().dialect.name), params)
    return event_id


@functools.cache
def _job_statement(dialect: str) -> Any:
    """:func:`insert_job`'s statement, built once per dialect with bound parameters (as ``inbox.store``'s): building
    and keying a new statement per job cost more than half of a job's insert (0.36-0.50 ms of CPU per job in
    process, 0.15-0.19 reused); on PostgreSQL, with the ``NOTIFY`` (delivered at the commit) in the same statement."""
    table = WebhookEvent.__table__
    now = bindparam("now", type_=table.c.received_at.type)
    row = insert(table).values(
        **{name: bindparam(name, type_=table.c[name].type) for name in _JOB_COLUMNS},
        received_at=now, created_at=now, updated_at=now, status="received", source=INTERNAL_SOURCE, attempts=0)
    if dialect == "postgresql":
        return select(func.pg_notify(INBOX_CHANNEL, bindparam("note", type_=String))).add_cte(row.cte("job"))
    return row


_JOB_COLUMNS = ("event_id", "event_type", "organization_id", "payload", "event_created_at", "entity_key", "revokes",
                "trace_context")
