"""Fan-out: work that touches every member of a group, a directory or an organization, a chunk per transaction.

Rule: **no request and no single event or job recomputes more than one chunk of members**
(``EventContext.fanout_chunk``, the setting ``HATIDATA_FANOUT_CHUNK``), **nor does an applier's batch in all**:
its events share one :class:`~services.fanout_jobs.MemberBudget` (``EventContext.fanout_allowance``), so a
fan-out that no longer fits is queued as a job, and a job claimed after it recomputes only what is left (or, with
nothing left, is queued again, its cursor unchanged). :func:`fan_out` (a group renamed or deleted,
a directory deleted, an organization deleted) recomputes the members at once when they fit in one chunk; otherwise
it queues a recompute job
(:mod:`services.fanout_jobs`) in the event's transaction. The appliers apply a job with :func:`apply_job` (the
internal handler of :data:`~services.fanout_jobs.JOB_TYPE`): one chunk after its cursor, in order of a unique key,
with its audit rows, and the next job (cursor advanced) in that same transaction. A recompute derives each member's
access from the state stored now, so a chunk is idempotent and later events of the same members, applied between
chunks, stay correct.

Rule: **every change of one member's access is serialised with every other change of that member's access**,
whichever path applies it (an applier's batch, the webhook's in-request apply, a fan-out chunk or a recompute
job). A member's own events hold the member's entity key (``user:<directory user id>``) from their claim; every
chunk here takes the same keys of the members it recomputes (:func:`~services.fanout_jobs.hold_members`)
**before** it reads their state, so it never writes a role computed from a read that a member's event committed
over in between. On SQLite the writers take turns under the database's write lock, which serialises them already.

Scopes: ``group:<id>`` (the group's present members, by directory user id), ``directory:<id>`` (the directory's
users ever linked to a person, by directory user id) and ``organization`` (by membership id: every
directory-managed member's role under the mappings, or, once the organization is deleted, every active member
deprovisioned).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from ...causes import Cause
from ...models import DirectoryGroupMembership, DirectoryUser, Membership, Organization, User, utcnow
from ...workos import WorkOSClient
from .. import domains, fanout_jobs, freed_email_jobs, role_mapping, workos_revocations, workos_role_push
from ..provisioning import set_access
from .context import EventContext, PayloadError, parse_time
from .directory_state import sync_member
from .freed_email import apply_freed_email
from .role_push import apply_role_push
from .session_jobs import apply_revocation

InternalHandler = Callable[[EventContext, dict[str, Any]], None]


def _member_keys(ctx: EventContext, org: Organization, kind: str, ref: str, after: str | None,
                 limit: int) -> list[str]:
    """The WorkOS ids of the directory users a group or directory fan-out touches, in order, after *after*."""
    query: Any
    if kind == "group":
        column = DirectoryGroupMembership.user_workos_id
        query = select(column).where(DirectoryGroupMembership.organization_id == org.id,
                                     DirectoryGroupMembership.group_workos_id == ref,
                                     DirectoryGroupMembership.present.is_(True))
    else:  # a deleted directory: its users that were ever linked to a person (others hold no membership)
        column = DirectoryUser.workos_id
        query = select(column).where(DirectoryUser.organization_id == org.id, DirectoryUser.directory_id == ref,
                                     DirectoryUser.user_id.is_not(None))
    if after is not None:
        query = query.where(column > after)
    return list(ctx.session.scalars(query.order_by(column).limit(limit)))


def _sync(ctx: EventContext, org: Organization, keys: list[str], reason: str) -> None:
    """Bring each directory user of *keys* in line (``sync_member``), with what they need read once for the chunk
    (their people, memberships and groups, and domain ownership), as the resync reads a page. The members' keys
    are held first (the module's rule), and what is read is read afresh (``populate_existing``: an object the
    event loaded before the lock is not trusted)."""
    if not keys:
        return
    fanout_jobs.hold_members(ctx.session, keys)
    users = list(ctx.session.scalars(select(DirectoryUser).where(DirectoryUser.organization_id == org.id,
                                                                 DirectoryUser.workos_id.in_(keys))
                                     .order_by(DirectoryUser.workos_id)
                                     .execution_options(populate_existing=True)))
    person_ids = [du.user_id for du in users if du.user_id]
    saved = (ctx.memberships_by_user, ctx.verified_domains)
    ctx.verified_domains = domains.VerifiedDomains.load(ctx.session)
    ctx.memberships_by_user = dict.fromkeys(person_ids)
    if person_ids:
        for membership in ctx.session.scalars(select(Membership).where(Membership.organization_id == org.id,
                                                                       Membership.user_id.in_(person_ids))
                                              .execution_options(populate_existing=True)):
            ctx.memberships_by_user[membership.user_id] = membership
        ctx.session.scalars(select(User).where(User.id.in_(person_ids))).all()  # in the identity map from now on
    groups = role_mapping.directory_groups_of_users(ctx.session, org.id, [du.workos_id for du in users])
    try:
        for du in users:
            sync_member(ctx, org, du, reason=reason, groups=groups.get(du.workos_id, []))
    finally:  # the event's own work after the fan-out (a membership event's user) looks up afresh
        ctx.memberships_by_user, ctx.verified_domains = saved


def _hold_window(ctx: EventContext, query: Any) -> None:
    """Hold the keys of the directory users *query* (their ids) selects, until it selects no other: the window a
    chunk then reads is wholly held, even if a member's event changed it while we waited."""
    held: set[str] = set()
    while True:
        refs = {ref for ref in ctx.session.scalars(query) if ref} - held
        if not refs:
            return
        fanout_jobs.hold_members(ctx.session, refs)
        held |= refs


def _deprovision_all(ctx: EventContext, org: Organization, after: str | None, limit: int) -> tuple[int, str | None]:
    """A deleted organization: deprovision at most *limit* of its active members after the membership id *after*;
    returns how many and the cursor to continue from (``None``: none left)."""
    query = select(Membership).where(Membership.organization_id == org.id, Membership.status == "active")
    if after is not None:
        query = query.where(Membership.id > after)
    query = query.order_by(Membership.id).limit(limit + 1)
    _hold_window(ctx, query.with_only_columns(Membership.directory_user_id))
    members = list(ctx.session.scalars(query.execution_options(populate_existing=True)))
    more = len(members) > limit
    members = members[:limit]
    for membership in members:
        set_access(ctx.session, ctx.client, membership, role=None, role_source=membership.role_source,
                   active=False, cause=ctx.cause.with_reason("organization_deleted"))
    return len(members), (members[-1].id if more else None)


def _deleted(org: Organization) -> bool:
    return not org.live


def fan_out(ctx: EventContext, org: Organization, scope: str, reason: str) -> str | None:
    """Recompute the members of *scope* (``group:<id>``, ``directory:<id>``, or ``organization`` once it is
    deleted) now if they fit in one chunk, else queue a recompute job; returns the job's id when one was queued."""
    limit = ctx.fanout_allowance()  # a chunk, less what the batch's earlier events recomputed
    if scope == "organization":
        active = list(ctx.session.scalars(select(Membership.id).where(
            Membership.organization_id == org.id, Membership.status == "active").limit(limit + 1)))
        if len(active) <= limit:
            ctx.spend_members(_deprovision_all(ctx, org, None, limit)[0])
            return None
    else:
        kind, ref = scope.split(":", 1)
        keys = _member_keys(ctx, org, kind, ref, None, limit + 1)
        if len(keys) <= limit:
            _sync(ctx, org, keys, reason)
            ctx.spend_members(len(keys))
            return None
    job_id = fanout_jobs.enqueue(ctx.session, fanout_jobs.Job(org.id, scope, reason, ctx.cause.with_reason(reason)))
    ctx.note = f"members recomputed in chunks by {job_id}"
    return job_id


def _organization_chunk(ctx: EventContext, org: Organization, job: fanout_jobs.Job,
                        size: int) -> tuple[int, str | None]:
    if _deleted(org):
        return _deprovision_all(ctx, org, job.cursor, size)
    # The window role_mapping.recompute_chunk reads (its directory-managed members after the cursor), ids only.
    window = (select(Membership.directory_user_id)
              .join(DirectoryUser, and_(DirectoryUser.organization_id == Membership.organization_id,
                                        DirectoryUser.workos_id == Membership.directory_user_id))
              .where(Membership.organization_id == org.id, Membership.source == "directory",
                     DirectoryUser.deleted_at.is_(None), DirectoryUser.state == "active")
              .order_by(Membership.id).limit(size + 1))
    _hold_window(ctx, window if job.cursor is None else window.where(Membership.id > job.cursor))
    result, cursor = role_mapping.recompute_chunk(ctx.session, ctx.client, organization_id=org.id,
                                                  cause=job.cause, after=job.cursor, limit=size)
    return result.checked, cursor


def apply_job(ctx: EventContext, data: dict[str, Any]) -> None:
    """A recompute job: one chunk of its members after its cursor, and the next job when more remain."""
    try:
        job = fanout_jobs.parse(data)
    except fanout_jobs.JobError as exc:
        raise PayloadError(str(exc)) from exc
    org = ctx.session.get(Organization, job.organization_id)
    ctx.organization = org
    if org is None:
        ctx.ignore("unknown organization")
        return
    cursor: str | None
    size = ctx.fanout_allowance()  # a chunk, less what the batch's inline fan-outs recomputed before it
    if size <= 0:  # this batch recomputed a whole chunk already: the chain continues in a later batch
        ctx.note = f"deferred (the batch's chunk is spent); continued by {fanout_jobs.enqueue(ctx.session, job)}"
        return
    if job.kind == "organization":
        done, cursor = _organization_chunk(ctx, org, job, size)
    else:
        keys = _member_keys(ctx, org, job.kind, job.ref or "", job.cursor, size + 1)
        cursor = keys[size - 1] if len(keys) > size else None
        keys = keys[:size]
        _sync(ctx, org, keys, job.reason)
        done = len(keys)
    ctx.spend_members(done)
    if cursor is not None:
        next_id = fanout_jobs.enqueue(ctx.session, job.after(cursor))
        ctx.note = f"{done} member(s) after {job.cursor or 'the start'}; continued by {next_id}"


INTERNAL_HANDLERS: dict[str, InternalHandler] = {fanout_jobs.JOB_TYPE: apply_job,
                                                 workos_revocations.JOB_TYPE: apply_revocation,
                                                 freed_email_jobs.JOB_TYPE: apply_freed_email,
                                                 workos_role_push.JOB_TYPE: apply_role_push}
"""Our own work types -> handler: apart from the WorkOS registry (``HANDLERS``), so no webhook, Events API filter
or ``handled_event_types()`` ever names them."""


def job_context(session: Session, client: WorkOSClient | None, payload: dict[str, Any],
                fanout_chunk: int, budget: fanout_jobs.MemberBudget | None = None) -> EventContext:
    """The context a stored job is applied in: the cause it continues (actor, request, WorkOS event), whole."""
    try:
        cause = Cause.from_dict(payload["data"]["cause"])
    except (KeyError, TypeError) as exc:
        raise PayloadError(f"internal work without its cause: {exc}") from exc
    return EventContext(session=session, client=client, event_id=cause.source_event_id,
                        event_type=str(payload.get("event")),
                        event_time=parse_time(payload.get("created_at")) or utcnow(), actor=cause.actor,
                        request=cause.request, fanout_chunk=fanout_chunk, member_budget=budget)


def apply_internal(session: Session, client: WorkOSClient | None, payload: dict[str, Any],
                   fanout_chunk: int, budget: fanout_jobs.MemberBudget | None = None) -> EventContext:
    """Apply one stored internal work item (``source = 'internal'``) with its internal handler."""
    ctx = job_context(session, client, payload, fanout_chunk, budget)
    handler = INTERNAL_HANDLERS.get(str(payload.get("event")))
    if handler is None:
        ctx.ignore("internal work type not handled")
        return ctx
    data = payload.get("data")
    handler(ctx, data if isinstance(data, dict) else {})
    return ctx
