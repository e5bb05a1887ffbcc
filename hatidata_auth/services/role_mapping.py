"""Group-to-role mapping: which HatiData role an organization member gets from their IdP groups.

Public API (used by directory sync, SSO login and the IdP plugins):

- Pure engine: :class:`MappingSpec`, :class:`GroupRef`, :func:`resolve_role`,
  :func:`resolve_role_from_profile_groups`, :func:`preset`, :func:`validate_specs`, :func:`lint_specs`.
- Reading: :func:`list_mappings`, :func:`directory_groups_of`, :func:`decide_for_directory_user`.
- Editing (recomputes every member in bulk, audited): :func:`replace_mappings`, :func:`add_mapping`,
  :func:`remove_mapping`, :func:`set_default_role`, :func:`recompute_organization`.
- Dry run and explanation: :func:`preview`, :func:`explain`.
- SSO login: :func:`apply_login_groups`.

Rules: roles rank ``admin`` > ``developer`` > ``viewer``. A member in several mapped groups gets the
highest-ranked role; among mappings granting that role the highest ``priority`` (then the identifier, for
determinism) is the one credited. A member in no mapped group gets the organization's ``default_role``,
or no access when it is ``None``. For directory-managed members the mapping always wins over a role set
by hand (as WorkOS does: IdP role assignment takes precedence over roles assigned by API or Dashboard).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from ..context import NO_REQUEST, Actor, RequestInfo
from ..errors import AppError
from ..models import (
    ROLES,
    DirectoryGroup,
    DirectoryGroupMembership,
    DirectoryUser,
    Membership,
    Organization,
    RoleMapping,
    User,
)
from ..workos import WorkOSClient
from . import audit

ROLE_RANK: Final[dict[str, int]] = {"viewer": 1, "developer": 2, "admin": 3}
IDENTIFIER_KINDS: Final[tuple[str, ...]] = ("name", "object_id", "directory_group_id")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class _Unchanged:
    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Final = _Unchanged()
"""Marker: keep the organization's current default role."""


class MappingError(AppError):
    """A proposed mapping set is invalid."""

    status = 422
    code = "invalid_role_mapping"


@dataclass(frozen=True, slots=True)
class MappingSpec:
    """One mapping: the group identified by ``group_identifier`` (of ``identifier_kind``) grants ``role``."""

    identifier_kind: str
    group_identifier: str
    role: str
    priority: int = 0
    id: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        """The identity of a mapping within an organization."""
        return (self.identifier_kind, self.group_identifier)

    def to_dict(self) -> dict[str, Any]:
        """JSON view."""
        return {"id": self.id, "identifier_kind": self.identifier_kind, "group_identifier": self.group_identifier,
                "role": self.role, "priority": self.priority}


@dataclass(frozen=True, slots=True)
class GroupRef:
    """A group as the engine sees it: its display name, IdP object id and WorkOS directory group id."""

    name: str | None = None
    idp_id: str | None = None
    workos_id: str | None = None

    def identifier(self, kind: str) -> str | None:
        """The group's identifier of one kind."""
        if kind == "name":
            return self.name
        if kind == "object_id":
            return self.idp_id
        if kind == "directory_group_id":
            return self.workos_id
        return None


@dataclass(frozen=True, slots=True)
class RoleDecision:
    """The role a member gets, and why."""

    role: str | None
    source: str  # "mapping", "default" or "none"
    group: GroupRef | None = None
    mapping: MappingSpec | None = None
    matches: tuple[tuple[GroupRef, MappingSpec], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON view."""
        return {
            "role": self.role,
            "source": self.source,
            "group": None if self.group is None else {"name": self.group.name, "idp_id": self.group.idp_id,
                                                      "directory_group_id": self.group.workos_id},
            "mapping": None if self.mapping is None else self.mapping.to_dict(),
            "matches": [{"group": g.name or g.idp_id or g.workos_id, "mapping": m.to_dict()}
                        for g, m in self.matches],
        }


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


# --- the pure engine ---------------------------------------------------------------------------------------


def _index(mappings: Iterable[MappingSpec]) -> dict[tuple[str, str], MappingSpec]:
    return {m.key: m for m in mappings}


def _sort_key(pair: tuple[GroupRef, MappingSpec]) -> tuple[int, int, str, str]:
    _group, mapping = pair
    return (ROLE_RANK.get(mapping.role, 0), mapping.priority, mapping.identifier_kind, mapping.group_identifier)


def resolve_role(groups: Iterable[GroupRef], mappings: Sequence[MappingSpec] | Mapping[tuple[str, str], MappingSpec],
                 default_role: str | None) -> RoleDecision:
    """Decide a member's role from their groups, the mappings and the organization's default role."""
    index = mappings if isinstance(mappings, Mapping) else _index(mappings)
    matches: list[tuple[GroupRef, MappingSpec]] = []
    for group in groups:
        for kind in IDENTIFIER_KINDS:
            ident = group.identifier(kind)
            if ident is None:
                continue
            mapping = index.get((kind, ident))
            if mapping is not None:
                matches.append((group, mapping))
    if matches:
        matches.sort(key=_sort_key, reverse=True)
        group, mapping = matches[0]
        return RoleDecision(mapping.role, "mapping", group, mapping, tuple(matches))
    if default_role is not None:
        return RoleDecision(default_role, "default")
    return RoleDecision(None, "none")


def resolve_role_from_profile_groups(profile_groups: Iterable[str], mappings: Sequence[MappingSpec],
                                     default_role: str | None) -> RoleDecision:
    """Decide a role from an SSO profile's ``groups`` (names for Okta/Google, object-id GUIDs for Entra)."""
    refs = [GroupRef(name=g, idp_id=g, workos_id=g) for g in profile_groups if isinstance(g, str) and g]
    return resolve_role(refs, mappings, default_role)


def preset(identifier_kind: str, groups_by_role: Mapping[str, str | Sequence[str]],
           *, priority: int = 0) -> list[MappingSpec]:
    """Build a mapping set: ``preset("name", {"admin": "HatiData Admins", "viewer": ["A", "B"]})``."""
    specs: list[MappingSpec] = []
    for role, identifiers in groups_by_role.items():
        for ident in [identifiers] if isinstance(identifiers, str) else identifiers:
            specs.append(MappingSpec(identifier_kind, ident, role, priority))
    validate_specs(specs)
    return specs


def validate_specs(specs: Sequence[MappingSpec]) -> None:
    """Raise :class:`MappingError` naming every invalid mapping (kind, role, empty or duplicate identifier)."""
    problems: list[str] = []
    seen: set[tuple[str, str]] = set()
    for i, spec in enumerate(specs):
        if spec.identifier_kind not in IDENTIFIER_KINDS:
            problems.append(f"#{i}: identifier_kind must be one of {', '.join(IDENTIFIER_KINDS)}")
        if spec.role not in ROLES:
            problems.append(f"#{i}: role must be one of {', '.join(ROLES)}")
        if not spec.group_identifier or not spec.group_identifier.strip() or len(spec.group_identifier) > 255:
            problems.append(f"#{i}: group_identifier must be 1-255 characters")
        if spec.key in seen:
            problems.append(f"#{i}: duplicate mapping for {spec.identifier_kind} {spec.group_identifier!r}")
        seen.add(spec.key)
    if problems:
        raise MappingError("invalid role mappings", details={"problems": problems})


def lint_specs(specs: Sequence[MappingSpec]) -> list[str]:
    """Warnings about mappings that are valid but likely wrong."""
    warnings: list[str] = []
    for spec in specs:
        if spec.identifier_kind == "object_id" and not _GUID.match(spec.group_identifier) and \
                spec.group_identifier.count("-") >= 3:
            warnings.append(f"{spec.group_identifier!r} looks like a malformed object id GUID")
        if spec.group_identifier.strip().lower() == "everyone":
            warnings.append("mapping Okta's built-in 'Everyone' group grants the role to every user")
        if spec.group_identifier != spec.group_identifier.strip():
            warnings.append(f"{spec.group_identifier!r} has leading or trailing spaces; matching is exact")
    return warnings


def default_role_valid(default_role: str | None) -> None:
    """Raise :class:`MappingError` unless *default_role* is a role or ``None`` (no access)."""
    if default_role is not None and default_role not in ROLES:
        raise MappingError(f"default_role must be one of {', '.join(ROLES)} or null")


# --- reading ------------------------------------------------------------------------------------------------


def list_mappings(session: Session, organization_id: str) -> list[MappingSpec]:
    """The organization's mappings, highest role then priority first."""
    rows = session.scalars(select(RoleMapping).where(RoleMapping.organization_id == organization_id))
    specs = [MappingSpec(r.identifier_kind, r.group_identifier, r.role, r.priority, r.id) for r in rows]
    specs.sort(key=lambda s: (-ROLE_RANK.get(s.role, 0), -s.priority, s.identifier_kind, s.group_identifier))
    return specs


def directory_groups_of(session: Session, organization_id: str, user_workos_id: str) -> list[GroupRef]:
    """The live groups a directory user is in (memberships whose group is known and not deleted)."""
    rows = session.execute(
        select(DirectoryGroup.name, DirectoryGroup.idp_id, DirectoryGroup.workos_id)
        .join(DirectoryGroupMembership, and_(
            DirectoryGroupMembership.organization_id == DirectoryGroup.organization_id,
            DirectoryGroupMembership.group_workos_id == DirectoryGroup.workos_id))
        .where(DirectoryGroupMembership.organization_id == organization_id,
               DirectoryGroupMembership.user_workos_id == user_workos_id,
               DirectoryGroupMembership.present.is_(True),
               DirectoryGroup.deleted_at.is_(None))
    )
    return [GroupRef(name, idp_id, workos_id) for name, idp_id, workos_id in rows]


def decide_for_directory_user(session: Session, organization: Organization, user_workos_id: str,
                              mappings: Sequence[MappingSpec] | None = None) -> RoleDecision:
    """The role a directory user gets in *organization* from their current groups."""
    if mappings is None:
        mappings = list_mappings(session, organization.id)
    groups = directory_groups_of(session, organization.id, user_workos_id)
    return resolve_role(groups, mappings, organization.default_role)


def _all_directory_groups(session: Session, organization_id: str) -> dict[str, list[GroupRef]]:
    """Every directory user's live groups in one query: ``{user_workos_id: [GroupRef]}``."""
    rows = session.execute(
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
    for user_workos_id, name, idp_id, workos_id in rows:
        out[user_workos_id].append(GroupRef(name, idp_id, workos_id))
    return out


def _directory_members(session: Session, organization_id: str) -> list[tuple[Membership, DirectoryUser, str]]:
    """Directory-managed memberships with their (live) directory user and the user's email."""
    rows = session.execute(
        select(Membership, DirectoryUser, User.email)
        .join(DirectoryUser, and_(DirectoryUser.organization_id == Membership.organization_id,
                                  DirectoryUser.workos_id == Membership.directory_user_id))
        .join(User, User.id == Membership.user_id)
        .where(Membership.organization_id == organization_id, Membership.source == "directory",
               DirectoryUser.deleted_at.is_(None), DirectoryUser.state == "active")
    )
    return [(m, du, email) for m, du, email in rows]


def _organization(session: Session, organization_id: str) -> Organization:
    org = session.get(Organization, organization_id)
    if org is None or org.deleted_at is not None:
        raise AppError("organization not found", code="not_found", status=404)
    return org


# --- dry run and explanation --------------------------------------------------------------------------------


def preview(session: Session, *, organization_id: str, specs: Sequence[MappingSpec],
            default_role: str | _Unchanged | None = UNCHANGED) -> list[RoleChange]:
    """Dry run: every directory-managed member whose role would change under *specs* (nothing is written)."""
    validate_specs(specs)
    org = _organization(session, organization_id)
    new_default = org.default_role if isinstance(default_role, _Unchanged) else default_role
    default_role_valid(new_default)
    index = _index(specs)
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


def recompute_organization(session: Session, client: WorkOSClient, *, organization_id: str, actor: Actor,
                           reason: str = "role_mapping_changed", source_event_id: str | None = None,
                           request: RequestInfo = NO_REQUEST) -> RecomputeResult:
    """Recompute every directory-managed member's role in bulk (2 queries + one write per change)."""
    from .provisioning import set_access

    org = _organization(session, organization_id)
    index = _index(list_mappings(session, organization_id))
    groups = _all_directory_groups(session, organization_id)
    members = _directory_members(session, organization_id)
    changes: list[RoleChange] = []
    for membership, du, email in members:
        if membership.status == "deprovisioned":
            continue
        decision = resolve_role(groups.get(du.workos_id, []), index, org.default_role)
        if org.status != "active":
            continue
        change = set_access(session, client, membership, role=decision.role, role_source=decision.source,
                            active=True, actor=actor, reason=reason, source_event_id=source_event_id,
                            request=request, details=_decision_details(decision))
        if change is not None and change.from_role != change.to_role:
            changes.append(RoleChange(membership.user_id, email, change.from_role, change.to_role, decision))
    return RecomputeResult(len(members), changes)


def _decision_details(decision: RoleDecision) -> dict[str, Any]:
    details: dict[str, Any] = {"role_source": decision.source}
    if decision.group is not None and decision.mapping is not None:
        details["group"] = decision.group.name or decision.group.idp_id
        details["mapping"] = decision.mapping.to_dict()
    return details


def replace_mappings(session: Session, client: WorkOSClient, *, organization_id: str, specs: Sequence[MappingSpec],
                     actor: Actor, default_role: str | _Unchanged | None = UNCHANGED,
                     request: RequestInfo = NO_REQUEST) -> RecomputeResult:
    """Replace the organization's whole mapping set (and optionally its default role), then recompute.

    The caller commits; the change, the recomputed roles and their audit events are one transaction.
    """
    validate_specs(specs)
    org = _organization(session, organization_id)
    before = [s.to_dict() for s in list_mappings(session, organization_id)]
    # Upsert by (kind, identifier) so a mapping that stays keeps its id.
    existing = {(row.identifier_kind, row.group_identifier): row for row in session.scalars(
        select(RoleMapping).where(RoleMapping.organization_id == organization_id))}
    wanted = _index(specs)
    for key, stale in existing.items():
        if key not in wanted:
            session.delete(stale)
    for key, spec in wanted.items():
        row = existing.get(key)
        if row is None:
            session.add(RoleMapping(organization_id=organization_id, identifier_kind=spec.identifier_kind,
                                    group_identifier=spec.group_identifier, role=spec.role,
                                    priority=spec.priority))
        elif (row.role, row.priority) != (spec.role, spec.priority):
            row.role, row.priority = spec.role, spec.priority
    if not isinstance(default_role, _Unchanged):
        default_role_valid(default_role)
        org.default_role = default_role
    session.flush()
    audit.record(session, action="role_mapping.replaced", actor=actor, organization_id=organization_id,
                 target_type="organization", target_id=organization_id, request=request,
                 details={"before": before, "after": [s.to_dict() for s in specs],
                          "default_role": org.default_role})
    return recompute_organization(session, client, organization_id=organization_id, actor=actor, request=request)


def add_mapping(session: Session, client: WorkOSClient, *, organization_id: str, spec: MappingSpec, actor: Actor,
                request: RequestInfo = NO_REQUEST) -> RecomputeResult:
    """Add (or replace, by kind + identifier) one mapping, then recompute."""
    current = [s for s in list_mappings(session, organization_id) if s.key != spec.key]
    return replace_mappings(session, client, organization_id=organization_id, specs=[*current, spec],
                            actor=actor, request=request)


def remove_mapping(session: Session, client: WorkOSClient, *, organization_id: str, identifier_kind: str,
                   group_identifier: str, actor: Actor, request: RequestInfo = NO_REQUEST) -> RecomputeResult:
    """Remove one mapping, then recompute."""
    current = [s for s in list_mappings(session, organization_id)
               if s.key != (identifier_kind, group_identifier)]
    return replace_mappings(session, client, organization_id=organization_id, specs=current, actor=actor,
                            request=request)


def set_default_role(session: Session, client: WorkOSClient, *, organization_id: str, default_role: str | None,
                     actor: Actor, request: RequestInfo = NO_REQUEST) -> RecomputeResult:
    """Change the role of members in no mapped group (``None``: no access), then recompute."""
    return replace_mappings(session, client, organization_id=organization_id,
                            specs=list_mappings(session, organization_id), actor=actor,
                            default_role=default_role, request=request)


def apply_login_groups(session: Session, client: WorkOSClient, *, organization_id: str, user_id: str,
                       profile_groups: Iterable[str], actor: Actor,
                       request: RequestInfo = NO_REQUEST) -> RoleDecision:
    """At SSO login: recompute the member's role from the profile's ``groups`` and store it (caller commits).

    Directory-managed members keep the role their directory groups give (the directory is the fresher
    source); for other members the profile's groups decide, and a manual role is overwritten only when a
    mapped group matched.
    """
    from .provisioning import set_access

    org = _organization(session, organization_id)
    membership = session.scalar(select(Membership).where(Membership.organization_id == organization_id,
                                                         Membership.user_id == user_id))
    if membership is not None and membership.source == "directory" and membership.directory_user_id:
        return decide_for_directory_user(session, org, membership.directory_user_id)
    decision = resolve_role_from_profile_groups(profile_groups, list_mappings(session, organization_id),
                                                org.default_role)
    if membership is None or membership.status == "deprovisioned":
        return decision
    if membership.role_source == "manual" and decision.source != "mapping":
        return decision
    set_access(session, client, membership, role=decision.role, role_source=decision.source, active=True,
               actor=actor, reason="sso_login_groups", request=request, details=_decision_details(decision))
    return decision
