"""Break-glass accounts: a few named members who may sign in without SSO while SSO is the only way in.

SSO is the only way in while the organization enforces it or allows SSO alone
(:func:`~hatidata_auth.services.sso_enforcement.sso_only`); "enforces SSO" below means exactly that.

An admin names them (``PUT /api/v1/organization/break-glass``, audited ``organization.break_glass_updated``); at
most :data:`MAX_MEMBERS`, each a current active member. While SSO is enforced, ``auth_policy.refusal`` accepts a
non-SSO sign-in, refresh or switch of one of them (the organization's allowed methods do not bind them either, as
Stytch's ``is_breakglass`` members); each sign-in or switch that relies on it, and the first refresh through it of
a session not yet audited as a use (one that began before SSO became the only way in, say), is audited
``auth.break_glass_used`` and raises the ``break_glass_used`` alert (one per member; an admin resolves it once
reviewed).

Removing a member from the list ends their non-SSO sessions in the organization at once (revoked here and at
WorkOS), not at their next refresh. A member who stops being active loses the exemption with their access.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..causes import Cause
from ..errors import AppError
from ..models import AuditEvent, AuthSession, Membership, Organization, User
from ..workos import WorkOSClient
from . import alerts, audit
from .sso_enforcement import sso_only

MAX_MEMBERS = 5
# A sign-in's use is audited just before its session row is written (without the session's id): a use audited at
# a sign-in this long before the session's creation, or after it, counts as that session's.
LOGIN_SKEW = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class BreakGlassMember:
    """A break-glass member as admins see them (``active``: the exemption applies now)."""

    id: str  # the membership id, as in /api/v1/members
    user_id: str
    email: str
    status: str
    active: bool


def _rows(db: Session, organization_id: str, ids: list[str]) -> list[tuple[Membership, User]]:
    if not ids:
        return []
    rows = db.execute(select(Membership, User).join(User, User.id == Membership.user_id).where(
        Membership.organization_id == organization_id, Membership.id.in_(ids)))
    found = {m.id: (m, u) for m, u in rows}
    return [found[i] for i in ids if i in found]


def members(db: Session, org: Organization) -> list[BreakGlassMember]:
    """The organization's break-glass members, in the order set."""
    return [BreakGlassMember(m.id, u.id, u.email, m.status, m.status == "active")
            for m, u in _rows(db, org.id, list(org.break_glass_members or []))]


def _invalid(message: str) -> AppError:
    return AppError(message, status=422, code="validation_error", details={"fields": {"members": [message]}})


def _resolve(db: Session, organization_id: str, ref: str) -> Membership:
    """A member of the organization by membership id or email (any other organization's is unknown)."""
    query = select(Membership).join(User, User.id == Membership.user_id).where(
        Membership.organization_id == organization_id)
    if "@" in ref:
        query = query.where(func.lower(User.email) == ref.strip().lower())
    else:
        query = query.where(Membership.id == ref)
    found = db.scalar(query.limit(1))
    if found is None:
        raise _invalid(f"{ref} is not a member of this organization.")
    if found.status != "active":
        raise _invalid(f"{ref} is not an active member.")
    return found


def set_members(db: Session, client: WorkOSClient | None, org: Organization, refs: list[str], *,
                cause: Cause) -> list[BreakGlassMember]:
    """Replace the list with *refs* (membership ids or emails); audited ``organization.break_glass_updated`` with
    ``from``/``to`` (membership ids). Members taken off lose their non-SSO sessions here at once."""
    ids = list(dict.fromkeys(_resolve(db, org.id, ref).id for ref in refs))
    if len(ids) > MAX_MEMBERS:
        raise _invalid(f"At most {MAX_MEMBERS} break-glass members.")
    before = list(org.break_glass_members or [])
    if ids == before:
        return members(db, org)
    org.break_glass_members = ids or None
    removed = [m for m, _u in _rows(db, org.id, [i for i in before if i not in ids])]
    ended = _end_non_sso_sessions(db, client, org, removed, cause) if removed else 0
    audit.record(db, action="organization.break_glass_updated", cause=cause, organization_id=org.id,
                 target_type="organization", target_id=org.id,
                 details={"from": before, "to": ids, "sessions_revoked": ended})
    db.flush()
    return members(db, org)


def _end_non_sso_sessions(db: Session, client: WorkOSClient | None, org: Organization,
                          removed: list[Membership], cause: Cause) -> int:
    from .sessions import revoke_records

    records = list(db.scalars(select(AuthSession).where(
        AuthSession.organization_id == org.id, AuthSession.user_id.in_([m.user_id for m in removed]),
        AuthSession.revoked_at.is_(None))))
    if not sso_only(org):
        return 0
    own = [r for r in records if r.auth_method == "sso" and (not org.sso_enforced or (
        r.auth_organization_id == org.id and r.auth_connection_id is not None
        and r.auth_connection_id == org.connection_id))]
    return revoke_records(db, client, [r for r in records if r not in own],
                          cause=cause.with_reason("removed from break-glass accounts"))


def exempt(db: Session, org: Organization, email: str | None) -> Membership | None:
    """The active break-glass membership of *email* in *org* while SSO is the only way in (``None``: not
    exempt)."""
    ids = list(org.break_glass_members or [])
    if not ids or not email or not sso_only(org):
        return None
    return db.scalar(select(Membership).join(User, User.id == Membership.user_id).where(
        Membership.organization_id == org.id, Membership.id.in_(ids), Membership.status == "active",
        func.lower(User.email) == email.lower()).limit(1))


def record_use(db: Session, org: Organization, membership: Membership, *, email: str | None, method: str,
               action: str, cause: Cause, session_id: str | None) -> None:
    """Audit ``auth.break_glass_used`` and raise (or update) the member's ``break_glass_used`` alert."""
    details: dict[str, Any] = {"membership_id": membership.id, "user_id": membership.user_id, "email": email,
                               "auth_method": method, "at": action, "session_id": session_id}
    audit.record(db, action="auth.break_glass_used", cause=cause, organization_id=org.id,
                 target_type="membership", target_id=membership.id, details=details)
    alerts.raise_alert(db, organization_id=org.id, kind=alerts.BREAK_GLASS_USED, target_type="membership",
                       target_id=membership.id,
                       message=f"{email} signed in with {method} (break-glass) while {org.name} enforces SSO.",
                       details=details, cause=cause)


def use_audited(db: Session, org: Organization, membership: Membership, *, session_id: str,
                since: datetime) -> bool:
    """Whether a use of *membership*'s exemption was audited for the session *session_id* created at *since*: an
    ``auth.break_glass_used`` event naming it, or a sign-in's own (:data:`LOGIN_SKEW`)."""
    rows = db.scalars(select(AuditEvent.details).where(
        AuditEvent.organization_id == org.id, AuditEvent.action == "auth.break_glass_used",
        AuditEvent.target_id == membership.id, AuditEvent.created_at >= since - LOGIN_SKEW)
        .order_by(AuditEvent.seq.desc()).limit(100))
    return any(d.get("session_id") == session_id or (d.get("at") == "login" and d.get("session_id") is None)
               for d in (row or {} for row in rows))
