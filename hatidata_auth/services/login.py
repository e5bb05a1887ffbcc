"""Logging in: the code exchange at WorkOS, the organization choice, the user, membership and session records.

The views parse the callback and set the cookie; this module decides (the membership it signs into, and the
mirror of the person's others: ``sign_in_membership``). Functions here flush but do not commit:
the caller commits the login together with its audit events.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..causes import NO_REQUEST, Actor, Cause, RequestInfo
from ..errors import AppError, ServiceUnavailable
from ..models import AuthSession, Organization, User, utcnow
from ..unit_of_work import invalidate_after_commit
from ..workos import OrganizationSelectionRequired, WorkOSClient, WorkOSFailure, WorkOSUnavailable, translate_errors
from . import (
    audit,
    auth_policy,
    security_events,
    sign_in_attempts,
    sign_in_membership,
    sign_in_person,
    workos_memberships,
)
from .auth_policy import Authentication
from .organizations import ensure_organization
from .session_refresh import Tokens, refresh_tokens
from .sessions import SessionPolicy
from .sign_in_membership import LoginDenied as LoginDenied

if TYPE_CHECKING:
    from .introspection import TokenVerifier

log = logging.getLogger(__name__)


class LoginFailed(AppError):
    """The sign-in did not complete; ``reason`` names why in the failed-login summary, ``sample`` holds the
    (untrusted) details it keeps. ``organization_id`` (ours) and ``actor`` are set only when WorkOS vouched for
    them (a ``denied`` sign-in): the failure is then audited in that organization, naming the person."""

    def __init__(self, reason: str, message: str, *, status: int = 400, code: str = "login_failed",
                 organization_id: str | None = None, actor: Actor | None = None, **sample: Any) -> None:
        super().__init__(message, status=status, code=code, details={"reason": reason})
        self.reason = reason
        self.sample = sample
        self.organization_id = organization_id
        self.actor = actor


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
class Exchanged:
    """A sign-in code exchanged at WorkOS: the tokens, their verified claims and how WorkOS authenticated them."""

    tokens: Tokens
    claims: dict[str, Any]
    authentication: Authentication
    listed: Sequence[Any] = ()
    """``workos_memberships.listing_for_sign_in``'s answer, asked before anything was written."""

    @property
    def workos_session_id(self) -> str:
        """WorkOS's id of the session the exchange opened."""
        return str(self.claims["sid"])


# --- the code exchange -------------------------------------------------------------------------------------


def exchange_code(db: Session, client: WorkOSClient, verifier: TokenVerifier, *, code: str, code_verifier: str,
                  request: RequestInfo = NO_REQUEST) -> Exchanged:
    """Exchange the callback's *code* (PKCE *code_verifier*) for tokens in an organization, verify them and
    read how WorkOS authenticated them.

    Raises :class:`LoginFailed` (a used or invalid code, no organization, WorkOS refusing) and
    :class:`ServiceUnavailable` (WorkOS unreachable). Asks WorkOS for the membership a first sign-in is made from
    (``Exchanged.listed``), then reading the authentication may mirror the organization that vouched for it.
    """
    try:
        response = _authenticate(client, code=code, code_verifier=code_verifier, request=request)
    except WorkOSUnavailable as exc:
        raise _retry_later() from exc
    except WorkOSFailure as exc:
        if exc.http_status in (400, 401):
            raise LoginFailed("invalid_code", "The sign-in code is invalid or was already used; sign in again.",
                              code="invalid_code", workos_code=exc.workos_code) from exc
        raise LoginFailed("workos_error", "WorkOS refused the sign-in.", status=403,
                          workos_code=exc.workos_code) from exc
    tokens = Tokens.from_response(response)
    if tokens.organization_id is None:
        tokens = choose_organization(client, tokens, request=request)
    claims = verifier.verify(tokens.access_token)
    # Before anything is written (the organization's mirror included): nothing waits for WorkOS behind it.
    listed = workos_memberships.listing_for_sign_in(db, client, str(tokens.organization_id or claims.get("org_id")
                                                                    or ""), tokens.user)
    authentication = auth_policy.authentication_of(db, client, method=tokens.authentication_method,
                                                   workos_session_id=str(claims["sid"]),
                                                   workos_organization_id=tokens.organization_id,
                                                   issued_at=claims.get("iat"))
    return Exchanged(tokens, claims, authentication, listed)


def _authenticate(client: WorkOSClient, *, code: str, code_verifier: str, request: RequestInfo) -> Any:
    """The code exchange; a user of several organizations continues in the first one WorkOS lists. Both calls
    raise our :class:`WorkOSFailure` subclasses."""
    try:
        with translate_errors():
            return client.user_management.authenticate_with_code(
                code=code, code_verifier=code_verifier, ip_address=request.ip_address, user_agent=request.user_agent)
    except OrganizationSelectionRequired as exc:
        if not exc.organization_ids or not exc.pending_authentication_token:
            raise LoginFailed("no_organization", "You are not a member of any organization.", status=403) from exc
        with translate_errors():
            return client.user_management.authenticate_with_organization_selection(
                pending_authentication_token=exc.pending_authentication_token,
                organization_id=exc.organization_ids[0])


def _retry_later() -> ServiceUnavailable:
    return ServiceUnavailable("WorkOS is unreachable; retry the sign-in shortly.", code="workos_unavailable",
                              headers={"Retry-After": "5"})


def choose_organization(client: WorkOSClient, tokens: Tokens, *, request: RequestInfo = NO_REQUEST) -> Tokens:
    """A login without an organization: continue in the user's first active organization.

    Raises :class:`LoginFailed` (no active membership, WorkOS refusing the listing) and
    :class:`ServiceUnavailable` (WorkOS unreachable), plus what :func:`refresh_tokens` raises."""
    try:
        with translate_errors():
            memberships = client.organization_membership.list_organization_memberships(
                user_id=str(tokens.user["id"]), statuses=["active"], limit=10, order="asc").data
    except WorkOSUnavailable as exc:
        raise _retry_later() from exc
    except WorkOSFailure as exc:
        raise LoginFailed("workos_error", "WorkOS refused the sign-in.", status=403,
                          workos_code=exc.workos_code) from exc
    if not memberships:
        raise LoginFailed("no_organization", "You are not a member of any organization.", status=403)
    return refresh_tokens(client, refresh_token=tokens.refresh_token,
                          organization_id=memberships[0].organization_id, request=request)


def end_workos_session(client: WorkOSClient, workos_session_id: str, *, why: str) -> None:
    """End at WorkOS a session we did not let in (*why*: ``denied`` or ``refused``); a failure is only logged."""
    try:
        with translate_errors():
            client.user_management.revoke_session(session_id=workos_session_id)
    except WorkOSFailure:
        log.warning("could not revoke the %s session at WorkOS", why)


# --- completing the login ----------------------------------------------------------------------------------


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
    listed: Sequence[Any] | None = None,
) -> LoginResult:
    """Upsert the user and membership, record the session and audit the login (caller commits).

    *claims* are the verified claims of ``tokens.access_token`` (``sid``, ``org_id``, ``role``); *authentication*
    is how WorkOS authenticated it (:func:`auth_policy.authentication_of`; default: the method, no connection);
    *listed*, WorkOS's memberships the exchange asked for (``Exchanged.listed``; ``None``: asked here). Raises
    :class:`LoginDenied` when the organization or the membership is not active, and
    :class:`~hatidata_auth.services.auth_policy.SsoRequired` (audited, nothing else written: commit it) when the
    organization does not accept the authentication.
    """
    now = now or utcnow()
    workos_org_id = tokens.organization_id or claims.get("org_id")
    if not workos_org_id:
        raise LoginDenied("You are not a member of any organization.")
    if listed is None:  # else asked by the exchange (``Exchanged.listed``), before it wrote anything
        listed = workos_memberships.listing_for_sign_in(db, client, str(workos_org_id), tokens.user)
    org = ensure_organization(db, client, str(workos_org_id))
    if not org.live:
        raise LoginDenied(f"{org.name} is not active.")
    auth = authentication or Authentication((tokens.authentication_method or "unknown").lower()[:32])
    email = str(tokens.user.get("email") or "").lower()
    try:
        auth_policy.check(db, org, auth, email=email, action="login",
                          cause=Cause.by(signing_in(db, tokens.user), request))
    except auth_policy.SsoRequired as refused:
        _note_sso_attempt(db, org, auth, tokens, sid=str(claims["sid"]), request=request,
                          refusal=str(refused.details.get("reason")))
        raise
    signed_in = sign_in_person.upsert(db, org, tokens.user, now, request)
    user = signed_in.person
    membership = sign_in_membership.upsert(db, client, org, signed_in, claims.get("role"), request, listed=listed,
                                           issued_at=claims.get("iat"))
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
    record.authenticated_at = _authenticated_at(claims)
    record.ip_address = request.ip_address
    record.user_agent = (request.user_agent or None) and request.user_agent[:512]
    record.remembered = remember
    record.last_seen_at = now
    record.expires_at = now + timedelta(seconds=ttl)
    db.flush()
    audit.record(db, action="auth.login.succeeded", cause=Cause.by(Actor("user", user.id, user.email), request),
                 organization_id=org.id, target_type="session", target_id=record.id,
                 details={"session_id": record.id, "remembered": remember, "auth_method": record.auth_method,
                          "auth_organization_id": auth.organization_id, "auth_connection_id": auth.connection_id,
                          "role": membership.role})
    _note_sso_attempt(db, org, auth, tokens, sid=sid, request=request)
    invalidate_after_commit(db, "session", sid)
    return LoginResult(session_id=record.id, workos_session_id=sid, user_id=user.id, email=user.email,
                       organization_id=org.id, role=membership.role, remembered=remember,
                       expires_at=record.expires_at)


def _authenticated_at(claims: dict[str, Any]) -> datetime | None:
    """The token's ``auth_time`` (the user's last active authentication), if it carries a number."""
    value = claims.get("auth_time")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return datetime.fromtimestamp(value, UTC)


def _note_sso_attempt(db: Session, org: Organization, auth: Authentication, tokens: Tokens, *, sid: str,
                      request: RequestInfo, refusal: str | None = None) -> None:
    """Keep an SSO sign-in (or our *refusal* of it) for the organization's sign-ins page, in the transaction of
    its audit event."""
    if auth.method != "sso":
        return
    user = tokens.user
    sign_in_attempts.record_callback(db, sign_in_attempts.Seen(
        organization_id=org.id, kind="sign_in", outcome="failure" if refusal else "success",
        reason=sign_in_attempts.refusal_reason(refusal) if refusal else None, error_code=refusal,
        email=str(user.get("email") or "") or None, connection_id=auth.connection_id, workos_session_id=sid,
        idp_plugin=org.idp_plugin, ip_address=request.ip_address,
        attributes={k: user.get(k) for k in ("email", "first_name", "last_name")}))


def signing_in(db: Session, user: dict[str, Any]) -> Actor:
    """Who WorkOS vouches is signing in: the person we hold for its WorkOS user id, else only the email."""
    email = str(user.get("email") or "").lower()[:320]
    known = db.execute(select(User.id, User.email).where(User.workos_user_id == str(user.get("id") or ""))).first()
    return Actor("user", known.id, known.email) if known is not None else Actor("user", None, email or None)


def record_login_failure(db: Session, cache: Any, *, reason: str, cause: Cause,
                         organization_id: str | None = None,
                         details: dict[str, Any] | None = None, window: int = security_events.DEFAULT_WINDOW,
                         clock: Callable[[], float] = time.time) -> None:
    """Count a failed login and audit it as a rate-limited summary (caller commits).

    *cause*: the callback's request and who tried (anonymous, or the person WorkOS vouched for: ``denied``);
    *details* (attacker-supplied text included) become a cleaned, cut sample; *organization_id* only when
    trusted. See :func:`~hatidata_auth.services.security_events.note` for *cache*, *window* and *clock*.
    """
    security_events.note(db, cache, kind="login_failure", reason=reason,
                         sample=security_events.describe(details or {}), organization_id=organization_id,
                         cause=cause, window=window, clock=clock)
