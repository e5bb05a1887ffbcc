"""The group-to-role engine, pure: which HatiData role a member's IdP groups give them.

Rules: roles rank as :class:`hatidata_auth.roles.Role` declares (``admin`` > ``developer`` > ``viewer``). A member
in several mapped groups gets the highest-ranked role; among mappings granting that role the highest ``priority``
(then the identifier, for determinism) is the one credited. A member in no mapped group gets the organization's
``default_role``, or no access when it is ``None``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ..errors import AppError
from ..roles import ROLES, role_rank

IDENTIFIER_KINDS: Final[tuple[str, ...]] = ("name", "object_id", "directory_group_id")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


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


# --- the engine -----------------------------------------------------------------------------------------------


def index_specs(mappings: Iterable[MappingSpec]) -> dict[tuple[str, str], MappingSpec]:
    """Mappings by their key, ``(identifier_kind, group_identifier)``."""
    return {m.key: m for m in mappings}


def _sort_key(pair: tuple[GroupRef, MappingSpec]) -> tuple[int, int, str, str]:
    _group, mapping = pair
    return (role_rank(mapping.role), mapping.priority, mapping.identifier_kind, mapping.group_identifier)


def resolve_role(groups: Iterable[GroupRef], mappings: Sequence[MappingSpec] | Mapping[tuple[str, str], MappingSpec],
                 default_role: str | None) -> RoleDecision:
    """Decide a member's role from their groups, the mappings and the organization's default role."""
    index = mappings if isinstance(mappings, Mapping) else index_specs(mappings)
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


def decision_details(decision: RoleDecision) -> dict[str, Any]:
    """What an audit event records of a decision."""
    details: dict[str, Any] = {"role_source": decision.source}
    if decision.group is not None and decision.mapping is not None:
        details["group"] = decision.group.name or decision.group.idp_id
        details["mapping"] = decision.mapping.to_dict()
    return details


def sort_specs(specs: Iterable[MappingSpec]) -> list[MappingSpec]:
    """Mappings highest role first, then highest priority, then by identifier."""
    return sorted(specs, key=lambda s: (-role_rank(s.role), -s.priority, s.identifier_kind, s.group_identifier))
