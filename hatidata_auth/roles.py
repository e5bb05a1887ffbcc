"""HatiData roles, their one ranking and the permissions each grants: the one place they are defined."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import TypeGuard


class Role(StrEnum):
    """The roles the product has, declared from weakest to strongest: the declaration order is the ranking."""

    VIEWER = "viewer"
    DEVELOPER = "developer"
    ADMIN = "admin"


# Plain strings, not members: these values go to the database, JSON and error messages.
ROLE_ORDER: tuple[str, ...] = tuple(role.value for role in Role)
"""Roles from weakest to strongest: ``admin`` > ``developer`` > ``viewer``."""

ROLES: tuple[str, ...] = tuple(reversed(ROLE_ORDER))
"""Roles from strongest to weakest, the order they are listed to people (choices, error messages)."""

DEFAULT_ROLE: str = Role.VIEWER.value
"""The role of a new organization's members in no mapped group."""

ALL_PERMISSIONS: frozenset[str] = frozenset({
    "members:read", "members:write", "sessions:read", "sessions:write", "keys:read", "keys:write",
    "keys:manage", "sso:manage", "audit:read", "audit:manage", "data:read", "data:write",
})
"""``keys:write`` acts on the caller's own keys; ``keys:manage`` (admins) on any member's key. ``audit:read`` reads
the audit log and the audit streams; ``audit:manage`` (admins) creates, changes, retries and deletes the streams, so
a key that pulls the log cannot re-point or remove the sinks that copy it."""

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    Role.ADMIN.value: ALL_PERMISSIONS,
    Role.DEVELOPER.value: frozenset({"keys:read", "keys:write", "data:read", "data:write", "sessions:read"}),
    Role.VIEWER.value: frozenset({"data:read"}),
}


def is_role(value: object) -> TypeGuard[str]:
    """Whether *value* names a role."""
    return isinstance(value, str) and value in ROLE_ORDER


def permissions_for(role: str | None) -> frozenset[str]:
    """The permissions a role grants (none for an unknown or missing role)."""
    return ROLE_PERMISSIONS.get(role or "", frozenset())


def role_rank(role: str | None) -> int:
    """The strength of a role: -1 for none or unknown, then viewer < developer < admin."""
    try:
        return ROLE_ORDER.index(role or "")
    except ValueError:
        return -1


def role_at_least(role: str | None, minimum: str) -> bool:
    """Whether *role* is *minimum* or stronger."""
    return role_rank(role) >= role_rank(minimum) >= 0


def key_permissions(scopes: Iterable[str], owner_role: str | None) -> frozenset[str]:
    """An API key's effective permissions: its scopes limited to what its owner's role grants."""
    return frozenset(scopes) & permissions_for(owner_role)


def unknown_scopes(scopes: Iterable[str]) -> list[str]:
    """The scopes that are not permissions at all."""
    return sorted(set(scopes) - ALL_PERMISSIONS)
