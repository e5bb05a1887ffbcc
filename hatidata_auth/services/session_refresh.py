"""Refreshing a dashboard session's tokens at WorkOS and moving it into another organization.

Functions here flush but do not commit: the caller commits the change together with its audit events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..causes import NO_REQUEST, Actor, Cause, RequestInfo
from ..errors import AppError
from ..models import AuthSession, Membership, Organization, utcnow
from ..unit_of_work import invalidate_after_commit
from ..workos import WorkOSClient, WorkOSFailure, WorkOSNotFound, WorkOSRejected, WorkOSUnavailable, translate_errors
from . import audit, auth_policy, person_email, workos_revocations
from .auth_policy import SsoRequired
from .sessions import find_by_workos_session_id, get_session, lock_for_update, revoke_records


class RefreshFailed(AppError):
    """Refreshing the access token failed."""

    def __init__(self, message: str, *, transient: bool, cause: str) -> None:
        super().__init__(message, status=503 if transient else 401,
                         code="refresh_unavailable" if transient else "session_expired",
                         details={"cause": cause},
                         headers={"Retry-After": "5"} if transient else None)
        self.transient = transient
        self.cause = cause


class SwitchRefused(AppError):
    """WorkOS refused to move the session into the target organization (the current session stays)."""

    status = 409
    code = "switch_refused"

    def __init__(self, target: Organization, failure: RefreshFailed) -> None:
        super().__init__(f"WorkOS refused the switch to {target.name}; sign in to {target.name} instead.",
                         details={"reason": "workos_refused", "cause": failure.cause, "organization_id": target.id,
                                  "login_url": auth_policy.login_url(target.id)})


class SwitchTargetLost(AppError):
    """The caller's membership of the target ended while WorkOS moved the session there: the session was ended
    here and its end at WorkOS queued, as the removal would have ended it had the switch come first (audited:
    commit it)."""

    status = 401
    code = "unauthenticated"

    def __init__(self, target: Organization) -> None:
        super().__init__(f"Your membership of {target.name} ended during the switch; sign in again.",
                         details={"reason": "membership_ended", "organization_id": target.id})


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


@dataclass(frozen=True, slots=True)
class OrganizationChoice:
    """One organization a signed-in user may switch to; ``sign_in_required`` (with ``sign_in_reason`` and
    ``login_url``) when it does not accept how the current session was authenticated."""

    id: str
    name: str
    workos_organization_id: str | None
    role: str | None
    sso_enforced: bool
    current: bool
    sign_in_required: bool
    sign_in_reason: str | None
    login_url: str


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


def record_refresh(db: Session, *, workos_session_id: str, cause: Cause,
                   failure: RefreshFailed | None = None) -> None:
    """Audit a refresh; a terminal failure also ends our record of the session (caller commits)."""
    record = find_by_workos_session_id(db, workos_session_id)
    if record is None:
        return
    if failure is None:
        audit.record(db, action="session.refreshed", cause=cause, organization_id=record.organization_id,
                     target_type="session", target_id=record.id)
        return
    audit.record(db, action="session.refresh_failed", cause=cause, organization_id=record.organization_id,
                 target_type="session", target_id=record.id, outcome="failure",
                 details={"cause": failure.cause, "transient": failure.transient})
    if not failure.transient and lock_for_update(db, record).revoked_at is None:
        record.revoked_at = utcnow()
        record.revoked_by = "workos"
        record.revoked_reason = f"refresh rejected by WorkOS ({failure.cause})"[:255]
        invalidate_after_commit(db, "session", workos_session_id)
    db.flush()


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
        revoke_records(db, client, [record], cause=Cause.by(Actor.system("policy"), request,
                                                            reason=f"policy_refused:{refusal.details.get('reason')}"))
        return refusal
    return None


# --- organization switch ------------------------------------------------------------------------------------


def organization_choices(db: Session, *, user_id: str | None, organization_id: str, session_id: str | None,
                         email: str | None) -> list[OrganizationChoice]:
    """The user's active organizations by name, *organization_id* (the session's) flagged ``current``."""
    rows = db.execute(
        select(Organization, Membership.role)
        .join(Membership, Membership.organization_id == Organization.id)
        .where(Membership.user_id == user_id, Membership.status == "active", Organization.live)
        .order_by(Organization.name)
    ).all()
    record = get_session(db, organization_id=organization_id, session_id=session_id or "")
    reasons = auth_policy.sign_in_needed(db, record, email, [org for org, _ in rows])
    return [OrganizationChoice(id=org.id, name=org.name, workos_organization_id=org.workos_organization_id,
                               role=role, sso_enforced=org.sso_enforced, current=org.id == organization_id,
                               sign_in_required=reasons[org.id] is not None, sign_in_reason=reasons[org.id],
                               login_url=auth_policy.login_url(org.id))
            for org, role in rows]


def check_switch_target(db: Session, *, user_id: str, current_organization_id: str,
                        target: Organization, session_id: str | None = None,
                        request: RequestInfo = NO_REQUEST) -> Membership:
    """The caller's active membership of *target*; raises when switching there is not allowed: 403 without an
    active membership, :class:`SsoRequired` (audited: commit it) when *target* does not accept how the session
    *session_id* (ours) was authenticated."""
    membership = db.scalar(select(Membership).where(Membership.organization_id == target.id,
                                                    Membership.user_id == user_id))
    if membership is None or membership.status != "active" or not target.live:
        raise AppError("You are not an active member of that organization.", status=403, code="forbidden")
    record = get_session(db, organization_id=current_organization_id, session_id=session_id or "")
    if record is None or record.user_id != user_id or record.revoked_at is not None:
        raise AppError("The session has ended; sign in again.", status=401, code="unauthenticated")
    auth_policy.check_session(db, record, action="switch", request=request, organization=target)
    return membership


def apply_switch(db: Session, client: WorkOSClient | None, *, workos_session_id: str, target: Organization,
                 user_id: str, cause: Cause) -> AuthSession:
    """Move our session record to *target* after WorkOS refreshed it there, and audit it (caller commits).

    Takes its locks in a removal's order (organization, membership, sessions) and decides on what they hold then,
    read again over what :func:`check_switch_target` loaded: *target*'s row ``FOR SHARE`` (a deletion's update
    waits, or is waited for), the target membership's ``FOR UPDATE``, then the session's
    (``sessions.lock_for_update``). On SQLite a write that changes nothing takes the database's write turn first
    (reads before a transaction's first write see each commit as it lands). Answers:

    - 401 ``unauthenticated`` when the session has ended (a revocation committed meanwhile, e.g. a resync ending
      it with its WorkOS end queued for its organization, is never moved on);
    - :class:`SwitchTargetLost` (401; the session ended here, its end at WorkOS queued for the appliers with this
      transaction (``workos_revocations``), audited: commit it) when the member was removed from *target*, or
      *target* left ``active``, after the check: WorkOS already holds the session in *target*, which the removal
      never saw (it would stay unended there, live again if the member is re-added);
    - otherwise the moved record; a removal or deletion committing after waits for this transaction and ends it.

    Another transaction holding these rows in another order (an applier's batch deprovisioning the member in two
    organizations) can meet it in a deadlock: PostgreSQL rolls one back, and the caller runs this again
    (``db_conflicts.retrying``).
    """
    if db.get_bind().dialect.name == "sqlite":
        person_email.hold_organization(db, target.id)
    db.scalar(select(Organization).where(Organization.id == target.id).with_for_update(read=True)
              .execution_options(populate_existing=True))
    membership = db.scalar(select(Membership).where(Membership.organization_id == target.id,
                                                    Membership.user_id == user_id)
                           .with_for_update().execution_options(populate_existing=True))
    record = find_by_workos_session_id(db, workos_session_id)
    if record is not None:
        record = lock_for_update(db, record)
    if record is None or record.revoked_at is not None:
        raise AppError("The session has ended; sign in again.", status=401, code="unauthenticated")
    if membership is None or membership.status != "active" or not target.live:
        with workos_revocations.deferred_in(db):  # with this transaction: never asked twice, nor under these locks
            revoke_records(db, client, [record],
                           cause=cause.with_reason("membership ended during an organization switch"))
        raise SwitchTargetLost(target)
    previous = record.organization_id
    record.organization_id = target.id
    db.flush()
    details = {"from_organization_id": previous, "to_organization_id": target.id, "role": membership.role,
               "session_id": record.id}
    audit.record(db, action="session.organization_switched", cause=cause, organization_id=target.id,
                 target_type="session", target_id=record.id, details=details)
    if previous != target.id:
        audit.record(db, action="session.organization_switched", cause=cause, organization_id=previous,
                     target_type="session", target_id=record.id, details=details)
    invalidate_after_commit(db, "session", workos_session_id)
    return record
