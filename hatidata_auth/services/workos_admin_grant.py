"""``grant-admin``'s decision, made at WorkOS first, so that its person can sign in (a role changed by ``PATCH`` is
made at WorkOS by :mod:`.workos_role_push`).

A grant here alone made a row WorkOS knew nothing of: in an organization without SSO (AuthKit's own sign-in
methods) WorkOS had no such user, so "the first admin" could not sign in at all (a new user's walk-through). The
grant now first makes WorkOS agree: the person exists in WorkOS User Management and holds an active membership of
the organization with the ``admin`` role. WorkOS's events of that membership then come back as any other's
(``services.workos_memberships``), and the person signs in with a code by email or sets a password through
"Forgot password".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from workos.organization_membership import RoleSingle

from ..roles import Role
from ..workos import WorkOSClient, translate_errors
from .workos_memberships import when

MEMBERSHIP_STATUSES = ["active", "inactive", "pending"]


@dataclass(frozen=True, slots=True)
class AtWorkOS:
    """What :func:`ensure_admin_at_workos` did: the person's WorkOS user id, whether that user was created, and
    what became of their membership (``created``, ``reactivated``, ``role_changed``, ``kept``; ``reactivated`` may
    also have changed the role; a ``pending`` one, an invitation, stays pending with the role)."""

    workos_user_id: str
    user_created: bool
    membership: str
    pending: bool = False
    """The membership is an invitation not accepted yet: WorkOS's word keeps them inactive here until it is."""
    version: datetime | None = None
    """The membership's ``updated_at`` at WorkOS once it agrees (WorkOS's clock; ``None`` when WorkOS gave none):
    WorkOS's word not newer than it came before the grant (``tenant_admin.grant_admin``'s *workos_version*)."""


@translate_errors()
def ensure_admin_at_workos(client: WorkOSClient, *, workos_organization_id: str, email: str) -> AtWorkOS:
    """Make *email* an active ``admin`` member of the WorkOS organization *workos_organization_id*: the user is
    created when WorkOS has none with that email (not verified: they prove it at their first sign-in), the
    membership created, reactivated or given the role as needed; nothing is written when WorkOS agrees already.
    Idempotent. Raises :class:`~hatidata_auth.workos.WorkOSFailure` (nothing here is written by it)."""
    users = client.user_management.list_users(email=email, limit=1).data
    created = not users
    user = client.user_management.create_user(email=email) if created else users[0]
    listed = client.organization_membership.list_organization_memberships(
        user_id=user.id, organization_id=workos_organization_id, statuses=MEMBERSHIP_STATUSES, limit=1).data
    if not listed:
        made = client.organization_membership.create_organization_membership(
            user_id=user.id, organization_id=workos_organization_id, role=RoleSingle(role_slug=Role.ADMIN.value))
        return AtWorkOS(str(user.id), created, "created", version=when(made.updated_at))
    membership: Any = listed[0]
    pending, what = _value(membership.status) == "pending", "kept"
    if _value(membership.status) == "inactive":  # a pending one becomes active when its invitation is accepted
        membership = client.organization_membership.reactivate_organization_membership(membership.id)
        what = "reactivated"
    if _slug(membership) != Role.ADMIN.value:
        membership = client.organization_membership.update_organization_membership(
            membership.id, role=RoleSingle(role_slug=Role.ADMIN.value))
        what = "reactivated" if what == "reactivated" else "role_changed"
    return AtWorkOS(str(user.id), created, what, pending=pending, version=when(membership.updated_at))


def _slug(membership: Any) -> str | None:
    return getattr(getattr(membership, "role", None), "slug", None)


def _value(status: Any) -> str:
    return str(getattr(status, "value", status))
