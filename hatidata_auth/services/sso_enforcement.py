"""Safe SSO enforcement: SSO may become the only way into an organization only once SSO is known to let an admin in.

SSO is the only way in (:func:`sso_only`, the one predicate) when the organization enforces SSO *or* its allowed
methods are SSO alone. Any write that makes SSO through a connection C the only way in, and it was not already
the only way in through C (enforcement or ``auth_methods == ["sso"]`` turned on, or the connection replaced while
SSO-only; every writer calls :func:`ensure_can_change`: the settings API, the policy API, the SSO wizard's
activation) needs an admin of the organization (an active membership with role ``admin`` now) to
have signed in successfully through SSO *through that connection* within the last :data:`WINDOW`. Leaving
SSO-only is always allowed.

The evidence is the session record (``auth_sessions``), not the sign-in attempts: a session stores the
authentication that :mod:`auth_policy` itself verified from WorkOS's ``authentication.sso_succeeded`` event (the
organization and connection that vouched), for a user we resolved, and the same record is what enforcement then
checks at every refresh. A sign-in attempt is a diagnostic row (kept for a limited time, possibly a test sign-in
or one from the callback alone) and names an email, not a member. One exception: the SSO wizard's own test
sign-in through the connection being activated (a successful ``test`` attempt whose email is a current admin's)
counts too, since a connection cannot make sessions before it is the organization's.

The proof's time is the *authentication* time (``auth_sessions.authenticated_at``, the token's ``auth_time`` at
sign-in), never the row's ``created_at`` alone: a sign-in AuthKit passed straight through makes a new row from a
days-old authentication, which proves nothing about SSO now. As for the absolute lifetime
(:func:`access_policy.session_refusal`), the earlier of the two counts. A row without it (from before it was
recorded, or a token without ``auth_time``) is no proof: when the authentication happened is unknown, only that
it was no later than the row. And the proof must go through a connection that works *now*: the organization's
connection only while its mirrored ``connection_state`` is ``active`` (a proof from before a ``connection.deleted`` or
``connection.deactivated`` never makes SSO the only way in); a connection the caller is about to make its own (the
wizard's activation) is checked live at WorkOS by that caller before it is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import AppError
from ..models import AuthSession, Membership, Organization, SignInAttempt, User, utcnow
from ..roles import Role

WINDOW = timedelta(hours=24)


class EnforcementUnverified(AppError):
    """SSO cannot be enforced yet: no admin has proved recently that SSO lets them in."""

    status = 409
    code = "sso_enforcement_unverified"


def sso_only(org: Organization, changes: Mapping[str, Any] | None = None) -> bool:
    """Whether SSO is the only way into *org* (after *changes*, column -> value, when given): it enforces SSO, or
    its allowed methods (``auth_methods``) are SSO alone. Break-glass members are exempt exactly then."""
    after = changes or {}
    methods = after.get("auth_methods", org.auth_methods)
    return bool(after.get("sso_enforced", org.sso_enforced)) or (methods is not None and set(methods) == {"sso"})


def verified_admin_sign_in(db: Session, organization_id: str, connection_id: str | None, *,
                           now: datetime | None = None) -> AuthSession | None:
    """The latest session that proves SSO works for the organization: a current admin of it *authenticated* by SSO
    through *connection_id* within :data:`WINDOW` before *now* (the earlier of ``authenticated_at`` and
    ``created_at``; ``None``: there is none)."""
    if not connection_id:
        return None
    now = now or utcnow()
    return db.scalar(
        select(AuthSession)
        .join(Membership, (Membership.user_id == AuthSession.user_id)
              & (Membership.organization_id == organization_id))
        .where(AuthSession.auth_method == "sso", AuthSession.auth_organization_id == organization_id,
               AuthSession.auth_connection_id == connection_id,
               # the earlier of the two is the sign-in: both within the window, both already past
               AuthSession.authenticated_at > now - WINDOW, AuthSession.authenticated_at <= now,
               AuthSession.created_at > now - WINDOW, AuthSession.created_at <= now,
               Membership.status == "active", Membership.role == Role.ADMIN.value)
        .order_by(AuthSession.authenticated_at.desc()).limit(1))


def verified_admin_test(db: Session, organization_id: str, connection_id: str | None, *,
                        now: datetime | None = None) -> SignInAttempt | None:
    """The SSO wizard's latest successful test sign-in through *connection_id* within :data:`WINDOW` by a
    current admin of the organization (``None``: there is none)."""
    if not connection_id:
        return None
    now = now or utcnow()
    admins = (select(User.email).join(Membership, Membership.user_id == User.id)
              .where(Membership.organization_id == organization_id, Membership.status == "active",
                     Membership.role == Role.ADMIN.value))
    return db.scalar(
        select(SignInAttempt)
        .where(SignInAttempt.organization_id == organization_id, SignInAttempt.kind == "test",
               SignInAttempt.outcome == "success", SignInAttempt.connection_id == connection_id,
               SignInAttempt.occurred_at > now - WINDOW, SignInAttempt.occurred_at <= now,
               SignInAttempt.email.in_(admins))
        .order_by(SignInAttempt.occurred_at.desc()).limit(1))


def connection_works(org: Organization, connection_id: str | None) -> bool:
    """Whether SSO through *connection_id* can let anyone into *org* now: the organization's own connection while
    its mirrored state is ``active``; another one (about to become its own) is checked live by the caller."""
    if not connection_id:
        return False
    return connection_id != org.connection_id or org.connection_state == "active"


def ensure_can_enforce(db: Session, org: Organization, *, connection_id: str | None = None,
                       now: datetime | None = None) -> None:
    """Raise :class:`EnforcementUnverified` (409, with what to do) unless :func:`verified_admin_sign_in` finds a
    proof for *org* through its connection (or *connection_id*, the one the caller is about to make its own) and
    that connection works now (:func:`connection_works`)."""
    connection = connection_id if connection_id is not None else org.connection_id
    if connection and not connection_works(org, connection):
        raise EnforcementUnverified(
            f"{org.name} cannot make SSO the only way in: its SSO connection is {org.connection_state or 'unknown'}, "
            "not active. Activate a working connection (and sign in through it as an admin) first; this keeps a "
            "broken connection from locking everyone out.",
            details={"organization_id": org.id, "connection_id": connection,
                     "connection_state": org.connection_state, "reason": "connection_not_active"})
    if verified_admin_sign_in(db, org.id, connection, now=now) is not None \
            or verified_admin_test(db, org.id, connection, now=now) is not None:
        return
    raise EnforcementUnverified(
        f"{org.name} cannot enforce SSO yet: no admin has signed in through its SSO connection in the last "
        f"{int(WINDOW.total_seconds() // 3600)} hours. Sign in once through SSO as an admin "
        f"(/auth/login?organization_id={org.id}), then turn enforcement on; this keeps a broken connection from "
        "locking everyone out.",
        details={"organization_id": org.id, "connection_id": connection,
                 "window_seconds": int(WINDOW.total_seconds()),
                 "login_url": f"/auth/login?organization_id={org.id}", "reason": "no_recent_admin_sign_in"})


def ensure_can_change(db: Session, org: Organization, changes: Mapping[str, Any], *,
                      now: datetime | None = None) -> None:
    """Raise :class:`EnforcementUnverified` when *changes* (column -> value among ``sso_enforced``,
    ``auth_methods``, ``connection_id``) make SSO through a connection the only way into *org* (:func:`sso_only`)
    and it was not already the only way in through that very connection, unless :func:`ensure_can_enforce` finds
    the proof for it. Leaving SSO-only, or changing nothing of it, is always allowed."""
    if not sso_only(org, changes):
        return
    connection = changes.get("connection_id", org.connection_id)
    if sso_only(org) and connection == org.connection_id:
        return
    ensure_can_enforce(db, org, connection_id=connection, now=now)
