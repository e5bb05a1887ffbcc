"""Dashboard sessions: completing a login, policies, refresh, organization switch and revocation.

Functions here flush but do not commit: the caller commits the change together with its audit events.
Cached status is invalidated when that commit happens (see
:func:`hatidata_auth.services.introspection.invalidate_after_commit`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from ..context import NO_REQUEST, Actor, RequestInfo
from ..errors import AppError, ServiceUnavailable
from ..models import ROLES, AuthSession, Membership, Organization, User, utcnow
from ..workos import WorkOSClient, WorkOSFailure, WorkOSNotFound, WorkOSRejected, WorkOSUnavailable, translate_errors
from . import audit, auth_policy, domains, organizations, provisioning, security_events
from .auth_policy import Authentication, SsoRequired
from .introspection import invalidate_after_commit

log = logging.getLogger(__name__)


class LoginDenied(AppError):
    """The identity provider vouched for the user, but HatiData does not let them in."""

    status = 403
    code = "login_denied"


class RefreshFailed(AppError):
    """Refreshing the access token failed."""

    def __init__(self, message: str, *, transient: bool, cause: str) -> None:
        super().__init__(message, status=503 if transient else 401,
                         code="refresh_unavailable" if transient else "session_expired",
                         details={"cause": cause},
                         headers={"Retry-After": "5"} if transient else None)
        self.transient = transient
        self.cause = cause


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """How long sessions last: ``active_ttl`` slides with use, ``remembered_ttl`` is fixed from login."""

    active_ttl: int = 24 * 3600
    remembered_ttl: int = 7 * 24 * 3600

    def ttl(self, organization: Organization | None, remembered: bool) -> int:
        """The lifetime for a new session in *organization* (its overrides win)."""
        if remembered:
            return int((organization and organization.session_remembered_ttl) or self.remembered_ttl)
        return int((organization and organization.session_active_ttl) or self.active_ttl)


@dataclass(frozen=True, slots=True)
class LoginResult:
    """A completed login."""

    session_id: str
    workos_session_id: str
    user_id: str
    email: str
    organization_id: str
    role: str | None
    remembered: bool
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Tokens:
    """Tokens WorkOS issued (a login or a refresh)."""

    access_token: str
    refresh_token: str
    user: dict[str, Any]
    organization_id: str | None
    authentication_method: str | None
    impersonator: dict[str, Any] | None = None

    @classmethod
    def from_response(cls, response: Any) -> Tokens:
        """Build from the SDK's ``AuthenticateResponse``."""
        method = response.authentication_method
        return cls(
            access_token=response.access_token,
            refresh_token=response.refresh_token,
            user=response.user.to_dict(),
            organization_id=response.organization_id,
            authentication_method=None if method is None else str(getattr(method, "value", method)),
            impersonator=response.impersonator.to_dict() if response.impersonator else None,
        )


def _actor_label(actor: Actor) -> str:
    return str(actor.email or actor.id or actor.type)[:320]


# --- login -------------------------------------------------------------------------------------------------


def ensure_organization(db: Session, client: WorkOSClient, workos_organization_id: str) -> Organization:
    """Our tenant for a WorkOS organization, mirrored from WorkOS on first sight."""
    org = db.scalar(select(Organization).where(Organization.workos_organization_id == workos_organization_id))
    if org is not None:
        return org
    mirrored = organizations.mirror_organization(db, client, workos_organization_id, Actor.system())
    org = db.get(Organization, mirrored.organization_id)
    assert org is not None
    return org


def find_organization_for_email(db: Session, email: str) -> Organization | None:
    """Home-realm discovery: the active organization that owns the email's domain."""
    domain = email.strip().lower().rpartition("@")[2]
    if not domain:
        return None
    for org in db.scalars(select(Organization).where(Organization.status == "active",
                                                     Organization.deleted_at.is_(None))):
        if domain in {d.lower() for d in org.domains or []}:
            return org
    return None


def _upsert_user(db: Session, org: Organization, user: dict[str, Any], now: datetime) -> User:
    workos_user_id = str(user["id"])
    email = str(user.get("email") or "").lower()
    record = db.scalar(select(User).where(User.workos_user_id == workos_user_id))
    # Linking by email is a claim about the domain: only when no other organization verified it.
    if record is None and email and domains.foreign_owner(db, org.id, email) is None:
        record = db.scalar(select(User).where(User.workos_user_id.is_(None), User.email == email))
    if record is None:
        record = User(workos_user_id=workos_user_id, email=email)
        db.add(record)
    record.workos_user_id = workos_user_id
    record.email = email or record.email
    record.first_name = user.get("first_name")
    record.last_name = user.get("last_name")
    record.last_login_at = now
    db.flush()
    return record


def _upsert_membership(db: Session, client: WorkOSClient, org: Organization, user: User,
                       claimed_role: str | None, request: RequestInfo) -> Membership:
    membership = db.scalar(select(Membership).where(Membership.organization_id == org.id,
                                                    Membership.user_id == user.id))
    if membership is None:
        membership = Membership(organization_id=org.id, user_id=user.id, source="sso", status="pending",
                                role=None, role_source="idp")
        db.add(membership)
        db.flush()
    elif membership.status != "active":
        raise LoginDenied(f"Your membership of {org.name} is {membership.status}.",
                          details={"membership_status": membership.status})
    if membership.status == "active" and membership.role_source in ("mapping", "manual"):
        return membership  # the directory's mappings or an admin decide this member's role, not the IdP
    role: str | None
    if claimed_role in ROLES:
        role, source = claimed_role, "idp"
    elif membership.role is not None:
        role, source = membership.role, str(membership.role_source or "idp")
    else:
        role, source = org.default_role, "default"
    provisioning.set_access(db, client, membership, role=role, role_source=source, active=True,
                            actor=Actor("user", user.id, user.email), reason="login", request=request)
    if membership.status != "active":
        raise LoginDenied(f"{org.name} grants no role to new members.",
                          details={"membership_status": membership.status})
    db.flush()
    return membership


def complete_login(
    db: Session,
    client: WorkOSClient,
    *,
    tokens: Tokens,
    claims: dict[str, Any],
    remember: bool,
    policy: SessionPolicy,
    request: RequestInfo = NO_REQUEST,
    now: datetime | None = None,
    authentication: Authentication | None = None,
) -> LoginResult:
    """Upsert the user and membership, record the session and audit the login (caller commits).

    *claims* are the verified claims of ``tokens.access_token`` (``sid``, ``org_id``, ``role``); *authentication*
    is how WorkOS authenticated it (:func:`auth_policy.authentication_of`; default: the method, no connection).
    Raises :class:`LoginDenied` when the organization or the membership is not active, and
    :class:`SsoRequired` (audited, nothing else written: commit it) when the organization does not accept the
    authentication.
    """
    now = now or utcnow()
    workos_org_id = tokens.organization_id or claims.get("org_id")
    if not workos_org_id:
        raise LoginDenied("You are not a member of any organization.")
    org = ensure_organization(db, client, str(workos_org_id))
    if org.status != "active" or org.deleted_at is not None:
        raise LoginDenied(f"{org.name} is not active.")
    auth = authentication or Authentication((tokens.authentication_method or "unknown").lower()[:32])
    email = str(tokens.user.get("email") or "").lower()
    auth_policy.check(db, org, auth, email=email, actor=Actor("user", None, email), action="login",
                      request=request)
    user = _upsert_user(db, org, tokens.user, now)
    membership = _upsert_membership(db, client, org, user, claims.get("role"), request)
    ttl = policy.ttl(org, remember)
    sid = str(claims["sid"])
    record = db.scalar(select(AuthSession).where(AuthSession.workos_session_id == sid))
    if record is None:
        record = AuthSession(workos_session_id=sid, organization_id=org.id, user_id=user.id)
        db.add(record)
    record.organization_id = org.id
    record.user_id = user.id
    record.auth_method = auth.method
    record.auth_organization_id = auth.organization_id
    record.auth_connection_id = auth.connection_id
    record.ip_address = request.ip_address
    record.user_agent = (request.user_agent or None) and request.user_agent[:512]
    record.remembered = remember
    record.last_seen_at = now
    record.expires_at = now + timedelta(seconds=ttl)
    db.flush()
    audit.record(db, action="auth.login.succeeded", actor=Actor("user", user.id, user.email),
                 organization_id=org.id, target_type="session", target_id=record.id, request=request,
                 details={"session_id": record.id, "remembered": remember, "auth_method": record.auth_method,
                          "auth_organization_id": auth.organization_id, "auth_connection_id": auth.connection_id,
                          "role": membership.role})
    invalidate_after_commit(db, "session", sid)
    return LoginResult(session_id=record.id, workos_session_id=sid, user_id=user.id, email=user.email,
                       organization_id=org.id, role=membership.role, remembered=remember,
                       expires_at=record.expires_at)


@translate_errors()
def sync_user_memberships(db: Session, client: WorkOSClient, *, user_id: str, workos_user_id: str,
                          actor: Actor | None = None) -> int:
    """Mirror the user's other active WorkOS memberships (so they can switch organization); returns how many
    were created. Memberships we already hold keep their role and status (directory sync owns them)."""
    created = 0
    page = client.organization_membership.list_organization_memberships(user_id=workos_user_id,
                                                                        statuses=["active"], limit=100)
    for item in page.data:
        org = ensure_organization(db, client, item.organization_id)
        exists = db.scalar(select(Membership.id).where(Membership.organization_id == org.id,
                                                       Membership.user_id == user_id))
        if exists is not None:
            continue
        slug = getattr(getattr(item, "role", None), "slug", None)
        role, source = (slug, "idp") if slug in ROLES else (org.default_role, "default")
        membership = Membership(organization_id=org.id, user_id=user_id, source="sso", status="pending", role=None,
                                role_source=source, workos_membership_id=item.id)
        db.add(membership)
        db.flush()
        audit.record(db, action="membership.created", actor=actor or Actor.workos(), organization_id=org.id,
                     target_type="membership", target_id=membership.id,
                     details={"user_id": user_id, "role": role, "source": "login"})
        provisioning.set_access(db, client, membership, role=role, role_source=source, active=True,
                                actor=actor or Actor.workos(), reason="login")
        created += 1
    return created


def record_login_failure(db: Session, cache: Any, *, reason: str, email: str | None = None,
                         organization_id: str | None = None, request: RequestInfo = NO_REQUEST,
                         details: dict[str, Any] | None = None, window: int = security_events.DEFAULT_WINDOW,
                         clock: Callable[[], float] = time.time) -> None:
    """Count a failed login and audit it as a rate-limited summary (caller commits).

    *details* (attacker-supplied text included) become a cleaned, cut sample; *organization_id* only when
    trusted. See :func:`~hatidata_auth.services.security_events.note` for *cache*, *window* and *clock*.
    """
    security_events.note(db, cache, kind="login_failure", reason=reason,
                         sample=security_events.describe(details or {}), organization_id=organization_id,
                         actor=Actor("user", None, security_events.clean(email, 320) or None), request=request,
                         window=window, clock=clock)


# --- refresh -----------------------------------------------------------------------------------------------


def refresh_tokens(client: WorkOSClient, *, refresh_token: str, organization_id: str | None = None,
                   request: RequestInfo = NO_REQUEST) -> Tokens:
    """Exchange a refresh token (it rotates: keep the new one).

    Network failures, timeouts, 429 and 5xx raise a transient :class:`RefreshFailed` (keep the session and
    retry); ``invalid_grant`` and other 4xx raise a terminal one (log in again).
    """
    try:
        with translate_errors():
            response = client.user_management.authenticate_with_refresh_token(
                refresh_token=refresh_token, organization_id=organization_id,
                ip_address=request.ip_address, user_agent=request.user_agent,
            )
    except WorkOSUnavailable as exc:
        message = ("WorkOS is unreachable; retry shortly." if exc.http_status is None
                   else "WorkOS could not refresh the session right now; retry shortly.")
        raise RefreshFailed(message, transient=True, cause=exc.reason) from exc
    except (WorkOSNotFound, WorkOSRejected) as exc:
        code = exc.workos_code or ("invalid_grant" if exc.http_status in (400, 401) else exc.reason)
        raise RefreshFailed("The session has ended; sign in again.", transient=False, cause=str(code)) from exc
    except WorkOSFailure as exc:
        raise RefreshFailed("WorkOS answered unexpectedly; retry shortly.", transient=True, cause=exc.reason) from exc
    return Tokens.from_response(response)


def get_session(db: Session, *, organization_id: str, session_id: str) -> AuthSession | None:
    """One session of an organization, by our id."""
    return db.scalar(select(AuthSession).where(AuthSession.organization_id == organization_id,
                                               AuthSession.id == session_id))


def find_by_workos_session_id(db: Session, workos_session_id: str) -> AuthSession | None:
    """Our record of a WorkOS session (the ``sid`` is globally unique and names its organization)."""
    return db.scalar(select(AuthSession).where(AuthSession.workos_session_id == workos_session_id))


def record_refresh(db: Session, *, workos_session_id: str, actor: Actor, request: RequestInfo = NO_REQUEST,
                   failure: RefreshFailed | None = None) -> None:
    """Audit a refresh; a terminal failure also ends our record of the session (caller commits)."""
    record = db.scalar(select(AuthSession).where(AuthSession.workos_session_id == workos_session_id))
    if record is None:
        return
    if failure is None:
        audit.record(db, action="session.refreshed", actor=actor, organization_id=record.organization_id,
                     target_type="session", target_id=record.id, request=request)
        return
    audit.record(db, action="session.refresh_failed", actor=actor, organization_id=record.organization_id,
                 target_type="session", target_id=record.id, request=request, outcome="failure",
                 details={"cause": failure.cause, "transient": failure.transient})
    if not failure.transient and record.revoked_at is None:
        record.revoked_at = utcnow()
        record.revoked_by = "workos"
        record.revoked_reason = f"refresh rejected by WorkOS ({failure.cause})"[:255]
        invalidate_after_commit(db, "session", workos_session_id)
    db.flush()


# --- organization switch ------------------------------------------------------------------------------------


def check_switch_target(db: Session, *, user_id: str, current_organization_id: str,
                        target: Organization, session_id: str | None = None,
                        request: RequestInfo = NO_REQUEST) -> Membership:
    """The caller's active membership of *target*; raises when switching there is not allowed: 403 without an
    active membership, :class:`SsoRequired` (audited: commit it) when *target* does not accept how the session
    *session_id* (ours) was authenticated."""
    membership = db.scalar(select(Membership).where(Membership.organization_id == target.id,
                                                    Membership.user_id == user_id))
    if membership is None or membership.status != "active" or target.status != "active":
        raise AppError("You are not an active member of that organization.", status=403, code="forbidden")
    record = get_session(db, organization_id=current_organization_id, session_id=session_id or "")
    if record is None or record.user_id != user_id or record.revoked_at is not None:
        raise AppError("The session has ended; sign in again.", status=401, code="unauthenticated")
    auth_policy.check_session(db, record, action="switch", request=request, organization=target)
    return membership


def enforce_after_refresh(db: Session, client: WorkOSClient | None, *, workos_session_id: str,
                          request: RequestInfo = NO_REQUEST) -> SsoRequired | None:
    """Check the refreshed session against its organization's current policy; a refused session is revoked
    (here and at WorkOS, audited) and the refusal returned (caller commits, then raises it)."""
    record = find_by_workos_session_id(db, workos_session_id)
    if record is None or record.revoked_at is not None:
        return None
    try:
        auth_policy.check_session(db, record, action="refresh", request=request)
    except SsoRequired as refusal:
        _revoke_records(db, client, [record], actor=Actor.system("policy"), reason=f"policy_refused:"
                        f"{refusal.details.get('reason')}", source_event_id=None, request=request)
        return refusal
    return None


def apply_switch(db: Session, *, workos_session_id: str, target: Organization, user_id: str, role: str | None,
                 actor: Actor, request: RequestInfo = NO_REQUEST) -> AuthSession:
    """Move our session record to *target* after WorkOS refreshed it there, and audit it (caller commits)."""
    record = db.scalar(select(AuthSession).where(AuthSession.workos_session_id == workos_session_id))
    if record is None or record.revoked_at is not None:
        raise AppError("The session has ended; sign in again.", status=401, code="unauthenticated")
    previous = record.organization_id
    record.organization_id = target.id
    db.flush()
    details = {"from_organization_id": previous, "to_organization_id": target.id, "role": role,
               "session_id": record.id}
    audit.record(db, action="session.organization_switched", actor=actor, organization_id=target.id,
                 target_type="session", target_id=record.id, request=request, details=details)
    if previous != target.id:
        audit.record(db, action="session.organization_switched", actor=actor, organization_id=previous,
                     target_type="session", target_id=record.id, request=request, details=details)
    invalidate_after_commit(db, "session", workos_session_id)
    return record


# --- revocation --------------------------------------------------------------------------------------------


def _revoke_at_workos(client: WorkOSClient | None, workos_session_id: str) -> str:
    if client is None:
        return "skipped"
    try:
        with translate_errors():
            client.user_management.revoke_session(session_id=workos_session_id,
                                                  request_options={"max_retries": 1})
    except WorkOSNotFound:
        return "not_found"
    except (WorkOSFailure, OSError) as exc:
        log.warning("WorkOS did not revoke session %s: %s", workos_session_id, exc)
        return f"failed:{type(exc).__name__}"
    return "revoked"


def _revoke_records(db: Session, client: WorkOSClient | None, records: Sequence[AuthSession], *, actor: Actor,
                    reason: str, source_event_id: str | None, request: RequestInfo) -> int:
    now = utcnow()
    count = 0
    for record in records:
        if record.revoked_at is not None:
            continue
        record.revoked_at = now
        record.revoked_by = _actor_label(actor)
        record.revoked_reason = reason[:255]
        db.flush()
        workos_outcome = _revoke_at_workos(client, record.workos_session_id)
        audit.record(db, action="session.revoked", actor=actor, organization_id=record.organization_id,
                     target_type="session", target_id=record.id, request=request,
                     source_event_id=source_event_id,
                     details={"reason": reason, "user_id": record.user_id,
                              "session_id": record.id, "workos": workos_outcome})
        invalidate_after_commit(db, "session", record.workos_session_id)
        count += 1
    return count


def revoke_session(db: Session, workos_client: WorkOSClient | None, *, organization_id: str, session_id: str,
                   actor: Actor, reason: str, source_event_id: str | None = None,
                   request: RequestInfo = NO_REQUEST) -> bool:
    """Revoke one session of an organization (by our id); returns whether it was active."""
    record = get_session(db, organization_id=organization_id, session_id=session_id)
    if record is None:
        raise AppError("No such session.", status=404, code="not_found")
    return _revoke_records(db, workos_client, [record], actor=actor, reason=reason,
                           source_event_id=source_event_id, request=request) == 1


def revoke_user_sessions(db: Session, workos_client: WorkOSClient | None, *, organization_id: str, user_id: str,
                         actor: Actor, reason: str, source_event_id: str | None = None,
                         request: RequestInfo = NO_REQUEST) -> int:
    """Revoke every active session of a user in an organization (here and at WorkOS), and every session that
    organization's sign-in produced, wherever it was switched to since; returns how many."""
    records = db.scalars(select(AuthSession).where(or_(AuthSession.organization_id == organization_id,
                                                       AuthSession.auth_organization_id == organization_id),
                                                   AuthSession.user_id == user_id,
                                                   AuthSession.revoked_at.is_(None))).all()
    return _revoke_records(db, workos_client, records, actor=actor, reason=reason,
                           source_event_id=source_event_id, request=request)


def revoke_organization_sessions(db: Session, workos_client: WorkOSClient | None, *, organization_id: str,
                                 actor: Actor, reason: str, source_event_id: str | None = None,
                                 request: RequestInfo = NO_REQUEST) -> int:
    """Revoke every active session of an organization; returns how many."""
    records = db.scalars(select(AuthSession).where(AuthSession.organization_id == organization_id,
                                                   AuthSession.revoked_at.is_(None))).all()
    return _revoke_records(db, workos_client, records, actor=actor, reason=reason,
                           source_event_id=source_event_id, request=request)


def revoke_by_workos_session_id(db: Session, workos_client: WorkOSClient | None, *, workos_session_id: str,
                                actor: Actor, reason: str, source_event_id: str | None = None,
                                call_workos: bool = True) -> bool:
    """Revoke our record of a WorkOS session (e.g. on ``session.revoked``); returns whether it was active.

    With ``call_workos=False`` (the event came from WorkOS) WorkOS is not called again.
    """
    record = db.scalar(select(AuthSession).where(AuthSession.workos_session_id == workos_session_id))
    if record is None:
        return False
    return _revoke_records(db, workos_client if call_workos else None, [record], actor=actor, reason=reason,
                           source_event_id=source_event_id, request=NO_REQUEST) == 1


def list_sessions(db: Session, *, organization_id: str, user_id: str | None = None,
                  include_ended: bool = False) -> list[AuthSession]:
    """Sessions of an organization (optionally of one user), newest first."""
    query = select(AuthSession).where(AuthSession.organization_id == organization_id)
    if user_id is not None:
        query = query.where(AuthSession.user_id == user_id)
    if not include_ended:
        query = query.where(AuthSession.revoked_at.is_(None), AuthSession.expires_at > utcnow())
    return list(db.scalars(query.order_by(AuthSession.created_at.desc()).limit(500)))


def session_view(record: AuthSession) -> dict[str, Any]:
    """The JSON view of a session."""
    def iso(value: datetime | None) -> str | None:
        return None if value is None else value.isoformat()

    return {
        "id": record.id, "workos_session_id": record.workos_session_id, "user_id": record.user_id,
        "organization_id": record.organization_id, "auth_method": record.auth_method,
        "auth_organization_id": record.auth_organization_id, "auth_connection_id": record.auth_connection_id,
        "ip_address": record.ip_address, "user_agent": record.user_agent, "remembered": record.remembered,
        "created_at": iso(record.created_at), "last_seen_at": iso(record.last_seen_at),
        "expires_at": iso(record.expires_at), "revoked_at": iso(record.revoked_at),
        "revoked_by": record.revoked_by, "revoked_reason": record.revoked_reason,
    }


__all__ = [
    "Authentication", "LoginDenied", "LoginResult", "RefreshFailed", "ServiceUnavailable", "SessionPolicy",
    "SsoRequired", "Tokens", "apply_switch", "check_switch_target", "complete_login", "enforce_after_refresh",
    "ensure_organization", "find_organization_for_email",
    "list_sessions", "record_login_failure", "record_refresh", "refresh_tokens", "revoke_by_workos_session_id",
    "revoke_organization_sessions", "revoke_session", "revoke_user_sessions", "session_view",
]
