"""Group-to-role mappings stored per organization: reading, dry runs, explanations and audited edits.

Public API (used by directory sync, the event handlers, the admin API and the SSO wizard); the pure engine is
:mod:`.role_rules`, whose names are re-exported here:

- Engine: :class:`MappingSpec`, :class:`GroupRef`, :func:`resolve_role`, :func:`resolve_role_from_profile_groups`,
  :func:`preset`, :func:`validate_specs`, :func:`lint_specs`.
- Reading: :func:`list_mappings`, :func:`locked_mappings`, :func:`directory_groups_of`.
- Editing (recomputes every member, audited; above one chunk of members a recompute job the appliers apply in
  chunks, ``services.fanout_jobs``): :func:`replace_mappings` (the whole set; one mapping or the default role:
  ``services.mapping_admin``), :func:`recompute_organization`, :func:`recompute_chunk`.
- Dry run and explanation: :func:`preview`, :func:`explain`.

For directory-managed members the mapping always wins over a role set by hand (as WorkOS does: IdP role
assignment takes precedence over roles assigned by API or Dashboard). At SSO login the role comes from WorkOS's
membership (its ``role`` claim), stored and audited by ``services.sessions`` through ``provisioning.set_access``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from ..causes import Cause
from ..errors import AppError
from ..models import (
    DirectoryGroup,
    DirectoryGroupMembership,
    DirectoryUser,
    Membership,
    Organization,
    RoleMapping,
    User,
)
from ..unit_of_work import reads_flushed
from ..workos import WorkOSClient
from . import audit, fanout_jobs, paging, resync_state
from .role_rules import (
    IDENTIFIER_KINDS,
    GroupRef,
    MappingError,
    MappingSpec,
    RoleDecision,
    decision_details,
    default_role_valid,
    index_specs,
    lint_specs,
    preset,
    resolve_role,
    resolve_role_from_profile_groups,
    sort_specs,
    validate_specs,
)

__all__ = [
    "IDENTIFIER_KINDS", "UNCHANGED", "Explanation", "GroupRef", "MappingError", "MappingSpec", "RecomputeResult",
    "RoleChange", "RoleDecision", "Unchanged", "decision_details", "default_role_valid", "directory_groups_of",
    "directory_groups_of_users",
    "explain", "lint_specs", "list_mappings", "locked_mappings", "preset", "preview", "recompute_chunk",
    "recompute_organization", "replace_mappings", "resolve_role", "resolve_role_from_profile_groups",
    "validate_specs",
]


class Unchanged:
    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Final = Unchanged()
"""Marker: keep the organization's current default role."""


@dataclass(frozen=True, slots=True)
class RoleChange:
    """A member whose role would change (preview) or changed (recompute)."""

    user_id: str
    email: str | None
    from_role: str | None
    to_role: str | None
    reason: RoleDecision | None = None


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why a member has their role."""

    user_id: str
    organization_id: str
    role: str | None
    status: str | None
    membership_source: str | None
    decision: RoleDecision | None
    groups: tuple[GroupRef, ...] = ()
    note: str | None = None


@dataclass(frozen=True, slots=True)
class RecomputeResult:
    """What a bulk recomputation changed."""

    checked: int = 0
    changes: list[RoleChange] = field(default_factory=list)
    # Set when the members were too many for one transaction: the id of the recompute job the appliers apply
    # (``checked`` and ``changes`` are then empty; the audit log records each change as it is made).
    queued_job: str | None = None


# --- reading ------------------------------------------------------------------------------------------------


def list_mappings(session: Session, organization_id: str) -> list[MappingSpec]:
    """The organization's mappings, highest role then priority first."""
    rows = session.scalars(select(RoleMapping).where(RoleMapping.organization_id == organization_id))
    return sort_specs(_spec_of(r) for r in rows)


PAGE_KEY = paging.key_kind(RoleMapping.id)


def mappings_page(session: Session, organization_id: str, page: paging.PageRequest) -> paging.Page[MappingSpec]:
    """One page of the organization's mappings, in id order (the resolution order is :func:`list_mappings`')."""
    query = select(RoleMapping).where(RoleMapping.organization_id == organization_id)
    return paging.paginate(session, query, RoleMapping.id, page, _spec_of)


def _spec_of(row: RoleMapping) -> MappingSpec:
    return MappingSpec(row.identifier_kind, row.group_identifier, row.role, row.priority, row.id)


def directory_groups_of(session: Session, organization_id: str, user_workos_id: str) -> list[GroupRef]:
    """The live groups a directory user is in (memberships whose group is known and not deleted)."""
    rows = session.execute(resync_state.groups_of_user_statement(session.get_bind().dialect.name),
                           {"organization_id": organization_id, "user_workos_id": user_workos_id},
                           execution_options=reads_flushed(session, DirectoryGroup, DirectoryGroupMembership))
    return [GroupRef(name, idp_id, workos_id) for name, idp_id, workos_id in rows]


def _all_directory_groups(session: Session, organization_id: str) -> dict[str, list[GroupRef]]:
    """Every directory user's live groups in one query: ``{user_workos_id: [GroupRef]}``."""
    query = (
        select(DirectoryGroupMembership.user_workos_id, DirectoryGroup.name, DirectoryGroup.idp_id,
               DirectoryGroup.workos_id)
        .join(DirectoryGroup, and_(
            DirectoryGroupMembership.organization_id == DirectoryGroup.organization_id,
            DirectoryGroupMembership.group_workos_id == DirectoryGroup.workos_id))
        .where(DirectoryGroupMembership.organization_id == organization_id,
               DirectoryGroupMembership.present.is_(True),
               DirectoryGroup.deleted_at.is_(None))
    )
    out: dict[str, list[GroupRef]] = defaultdict(list)
    for user_workos_id, name, idp_id, workos_id in session.execute(query):
        out[user_workos_id].append(GroupRef(name, idp_id, workos_id))
    return out


def directory_groups_of_users(session: Session, organization_id: str,
                              user_workos_ids: Sequence[str]) -> dict[str, list[GroupRef]]:
    """The live groups of each of *user_workos_ids* (a fan-out's chunk, a resync page): ``{user_workos_id:
    [GroupRef]}``, read by ``resync_state.groups_of_users`` (an index lookup per key whatever the statistics)."""
    return resync_state.groups_of_users(session, organization_id, user_workos_ids)


def _directory_members(session: Session, organization_id: str, *, after: str | None = None,
                       limit: int | None = None, fresh: bool = False) -> list[tuple[Membership, DirectoryUser, str]]:
    """Directory-managed memberships with their (live) directory user and the user's email, in membership id
    order (the recompute jobs' cursor), after *after* and at most *limit*; *fresh*: reload rows the session holds."""
    query = (
        select(Membership, DirectoryUser, User.email)
        .join(DirectoryUser, and_(DirectoryUser.organization_id == Membership.organization_id,
                                  DirectoryUser.workos_id == Membership.directory_user_id))
        .join(User, User.id == Membership.user_id)
        .where(Membership.organization_id == organization_id, Membership.source == "directory",
               DirectoryUser.deleted_at.is_(None), DirectoryUser.state == "active")
        .order_by(Membership.id)
    )
    if after is not None:
        query = query.where(Membership.id > after)
    if limit is not None:
        query = query.limit(limit)
    if fresh:
        query = query.execution_options(populate_existing=True)
    return [(m, du, email) for m, du, email in session.execute(query)]


def _organization(session: Session, organization_id: str) -> Organization:
    org = session.get(Organization, organization_id)
    if org is None or org.deleted_at is not None:
        raise AppError("organization not found", code="not_found", status=404)
    return org


# --- dry run and explanation --------------------------------------------------------------------------------


def preview(session: Session, *, organization_id: str, specs: Sequence[MappingSpec],
            default_role: str | Unchanged | None = UNCHANGED) -> list[RoleChange]:
    """Dry run: every directory-managed member whose role would change under *specs* (nothing is written)."""
    validate_specs(specs)
    org = _organization(session, organization_id)
    new_default = org.default_role if isinstance(default_role, Unchanged) else default_role
    default_role_valid(new_default)
    index = index_specs(specs)
    groups = _all_directory_groups(session, organization_id)
    changes: list[RoleChange] = []
    for membership, du, email in _directory_members(session, organization_id):
        decision = resolve_role(groups.get(du.workos_id, []), index, new_default)
        current = membership.role if membership.status == "active" else None
        if decision.role != current:
            changes.append(RoleChange(membership.user_id, email, current, decision.role, decision))
    changes.sort(key=lambda c: (c.email or "", c.user_id))
    return changes


def explain(session: Session, *, organization_id: str, user_id: str) -> Explanation:
    """Name the group and mapping that gave a member their role (or say it is the default / manual)."""
    membership = session.scalar(select(Membership).where(Membership.organization_id == organization_id,
                                                         Membership.user_id == user_id))
    if membership is None:
        return Explanation(user_id, organization_id, None, None, None, None, note="not a member")
    if membership.source != "directory" or not membership.directory_user_id:
        return Explanation(user_id, organization_id, membership.role, membership.status, membership.source, None,
                           note=f"role set by {membership.role_source} (membership source {membership.source})")
    org = _organization(session, organization_id)
    groups = directory_groups_of(session, organization_id, membership.directory_user_id)
    decision = resolve_role(groups, list_mappings(session, organization_id), org.default_role)
    note = None
    if membership.status != "active":
        note = f"membership is {membership.status}"
    elif decision.role != membership.role:
        note = "stored role differs from the mapping; it is corrected on the next recompute"
    return Explanation(user_id, organization_id, membership.role if membership.status == "active" else None,
                       membership.status, membership.source, decision, tuple(groups), note)


# --- recomputing and editing --------------------------------------------------------------------------------


def recompute_organization(session: Session, client: WorkOSClient, *, organization_id: str,
                           cause: Cause) -> RecomputeResult:
    """Recompute every directory-managed member's role at once (2 queries + one write per change). Only for
    callers that know the organization is small: edits go through :func:`replace_mappings`, which queues a
    chunked job above one chunk."""
    return _recompute(session, client, organization_id, cause,
                      _directory_members(session, organization_id))


def recompute_chunk(session: Session, client: WorkOSClient | None, *, organization_id: str, cause: Cause,
                    after: str | None, limit: int) -> tuple[RecomputeResult, str | None]:
    """Recompute at most *limit* directory-managed members after the membership id *after*; returns what changed
    and the cursor to continue from (``None``: none left)."""
    members = _directory_members(session, organization_id, after=after, limit=limit + 1)
    more = len(members) > limit
    members = members[:limit]
    result = _recompute(session, client, organization_id, cause, members)
    return result, (members[-1][0].id if more else None)


def _recompute(session: Session, client: WorkOSClient | None, organization_id: str, cause: Cause,
               members: list[tuple[Membership, DirectoryUser, str]]) -> RecomputeResult:
    cause = cause if cause.reason else cause.with_reason("role_mapping_changed")
    from .provisioning import set_access

    org = _organization(session, organization_id)
    index = index_specs(list_mappings(session, organization_id))
    groups = resync_state.groups_of_users(session, organization_id, [du.workos_id for _m, du, _e in members])
    changes: list[RoleChange] = []
    for membership, du, email in members:
        if membership.status == "deprovisioned":
            continue
        decision = resolve_role(groups.get(du.workos_id, []), index, org.default_role)
        if not org.live:
            continue
        change = set_access(session, client, membership, role=decision.role, role_source=decision.source,
                            active=True, cause=cause, details=decision_details(decision))
        if change is not None and change.from_role != change.to_role:
            changes.append(RoleChange(membership.user_id, email, change.from_role, change.to_role, decision))
    return RecomputeResult(len(members), changes)


def _recompute_or_queue(session: Session, client: WorkOSClient, organization_id: str, cause: Cause,
                        chunk: int) -> RecomputeResult:
    """At most one chunk in this transaction: recompute every member now when they fit in one chunk and no
    member's event holds its key at this moment, else queue a recompute job (``services.fanout_jobs``) the appliers
    apply a chunk at a time."""
    members = _directory_members(session, organization_id, limit=chunk + 1)
    # Serialised with the members' own events like a fan-out chunk: their keys are held, then they are read again,
    # so an event committed meanwhile is seen, not overwritten. Never waited for: the organization's row is held
    # (its mappings' lock), which a member's event shares after holding its key (fanout_jobs.try_hold_members).
    if len(members) <= chunk and fanout_jobs.try_hold_members(session, [du.workos_id for _m, du, _e in members]):
        members = _directory_members(session, organization_id, limit=chunk + 1, fresh=True)
        if len(members) <= chunk:
            return _recompute(session, client, organization_id, cause, members)
    reason = cause.reason or "role_mapping_changed"
    job = fanout_jobs.Job(organization_id, "organization", reason, cause.with_reason(reason))
    return RecomputeResult(0, [], queued_job=fanout_jobs.enqueue(session, job))


def _keeps_an_admin(session: Session, organization_id: str, specs: Sequence[MappingSpec],
                    default_role: str | Unchanged | None) -> None:
    """Refuse (409 ``last_admin``) mappings under which the dry run leaves no active admin. The organization's row
    is locked already (:func:`_locked_rows`): a concurrent removal of another admin committed first (and the dry run
    sees it) or waits for this transaction."""
    from . import last_admin

    admins = last_admin.active_admin_ids(session, organization_id)
    if not admins:
        return
    for change in preview(session, organization_id=organization_id, specs=specs, default_role=default_role):
        if change.to_role == "admin":
            admins.add(change.user_id)
        elif change.from_role == "admin":
            admins.discard(change.user_id)
    last_admin.ensure_mapping_keeps_admin(session, organization_id, admins)


def replace_mappings(session: Session, client: WorkOSClient, *, organization_id: str, specs: Sequence[MappingSpec],
                     cause: Cause, default_role: str | Unchanged | None = UNCHANGED,
                     chunk: int = fanout_jobs.DEFAULT_CHUNK) -> RecomputeResult:
    """Replace the organization's whole mapping set (and optionally its default role), then recompute.

    The caller commits; the change, the recomputed roles and their audit events are one transaction when the
    directory-managed members fit in one *chunk*; above that the transaction queues a recompute job instead
    (``RecomputeResult.queued_job``) and the appliers recompute them a chunk at a time.
    """
    validate_specs(specs)
    rows = _locked_rows(session, organization_id)
    org = _organization(session, organization_id)
    _keeps_an_admin(session, organization_id, specs, default_role)
    before = [s.to_dict() for s in sort_specs(_spec_of(row) for row in rows)]
    default_before = org.default_role
    # Upsert by (kind, identifier) so a mapping that stays keeps its id.
    existing = {(row.identifier_kind, row.group_identifier): row for row in rows}
    wanted = index_specs(specs)
    for key, stale in existing.items():
        if key not in wanted:
            session.delete(stale)
    stored = []
    for key, spec in wanted.items():
        row = existing.get(key)
        if row is None:
            row = RoleMapping(organization_id=organization_id, identifier_kind=spec.identifier_kind,
                              group_identifier=spec.group_identifier, role=spec.role, priority=spec.priority)
            session.add(row)
        elif (row.role, row.priority) != (spec.role, spec.priority):
            row.role, row.priority = spec.role, spec.priority
        stored.append(row)
    if not isinstance(default_role, Unchanged):
        default_role_valid(default_role)
        org.default_role = default_role
    session.flush()
    audit.record(session, action="role_mapping.replaced", cause=cause, organization_id=organization_id,
                 target_type="organization", target_id=organization_id,
                 details={"before": before,
                          "after": [s.to_dict() for s in sort_specs(_spec_of(row) for row in stored)],
                          "default_role": org.default_role, "previous_default_role": default_before})
    return _recompute_or_queue(session, client, organization_id, cause, chunk)


def locked_mappings(session: Session, organization_id: str) -> list[MappingSpec]:
    """:func:`list_mappings` read under the organization's lock, the lock every mapping write takes first: what an
    edit of one mapping changes (``services.mapping_admin``), as another edit committed it."""
    return sort_specs(_spec_of(row) for row in _locked_rows(session, organization_id))


def _locked_rows(session: Session, organization_id: str) -> list[RoleMapping]:
    """The organization's mapping rows as they stand once its row is locked (``last_admin.lock_organization``, the
    lock every mapping write takes first), read afresh over any this session loaded before."""
    from . import last_admin

    last_admin.lock_organization(session, organization_id)
    session.get(Organization, organization_id, populate_existing=True)  # its default role, as it stands too
    return list(session.scalars(select(RoleMapping).where(RoleMapping.organization_id == organization_id)
                                .execution_options(populate_existing=True)))
