"""A browser sign-in as the ``/auth`` views run it: where to send the browser, finishing the callback, signing out.

Built on :mod:`.login` (the code exchange and the records) and :mod:`.sessions` (revocation). The views keep
the request's pieces (the signed ``state``, the cookie, the browser's pending logins); this module decides and
talks to WorkOS. A login's transactions are the caller's: :func:`finish` commits through the ``commit`` it is
given, at the points the login's audit trail and its revocations depend on.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from ..causes import NO_REQUEST, Actor, Cause, RequestInfo
from ..errors import AppError, is_connection_error
from ..workos import WorkOSClient, WorkOSFailure
from . import auth_policy, db_conflicts, login, sessions, sign_in_attempts, sign_in_membership
from . import break_glass as break_glass_members
from .login import LoginFailed, LoginResult
from .organizations import find_organization, find_organization_for_email
from .session_refresh import Tokens
from .sessions import SessionPolicy

if TYPE_CHECKING:
    from .introspection import TokenVerifier

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Authorization:
    """Where to send the browser to sign in, and the PKCE ``code_verifier`` to keep for the callback."""

    url: str
    code_verifier: str


@dataclass(frozen=True, slots=True)
class Finished:
    """A completed sign-in: the login recorded here and the tokens WorkOS issued for the cookie."""

    result: LoginResult
    tokens: Tokens


def pkce_pair() -> tuple[str, str]:
    """A PKCE verifier and its S256 challenge."""
    verifier = secrets.token_urlsafe(64)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorization_url(db: Session, client: WorkOSClient, *, redirect_uri: str, state: str,
                      email: str | None = None, organization_id: str | None = None,
                      max_age: int | None = None, break_glass: bool = False,
                      signed_in_email: str | None = None) -> Authorization:
    """The WorkOS AuthKit URL a sign-in starts at: an SSO-enforcing organization's connection, else the
    organization (named by *organization_id*, or owning *email*'s domain), else AuthKit (*email* as the hint).

    An SSO-enforcing organization's own non-SSO methods instead when *break_glass* is asked for (by anyone: the
    callback accepts only its break-glass members, so the answer never tells who is one), or when the browser is
    signed in as one of them (*signed_in_email*: their re-authentication). Never by the *email* hint alone, which
    anyone can type: the redirect would reveal the list.

    *max_age* (AuthKit's, seconds since the user last actively authenticated; ``0`` forces it) asks for a fresh
    authentication: step-up re-authentication. The SDK's ``get_authorization_url`` passes it as is. For an
    organization with an absolute lifetime it is never larger than the lifetime (the lifetime itself when none is
    asked): AuthKit then cannot pass the browser through on an authentication the lifetime has already ended, so
    the new session is not born expired (no sign-in loop) and a caller's large ``max_age`` cannot stretch it.

    Raises 400 ``unknown_organization`` for an *organization_id* we do not know.
    """
    if organization_id:
        org = find_organization(db, organization_id)
        if org is None:
            raise AppError("Unknown organization.", status=400, code="unknown_organization")
    else:
        org = find_organization_for_email(db, email) if email else None
    verifier, challenge = pkce_pair()
    params: dict[str, Any] = {"redirect_uri": redirect_uri, "state": state, "code_challenge": challenge,
                              "code_challenge_method": "S256"}
    if email:
        params["login_hint"] = email
    lifetime = org.session_absolute_ttl if org is not None else None
    if lifetime is not None:
        max_age = lifetime if max_age is None else min(max_age, lifetime)
    if max_age is not None:
        params["max_age"] = max_age
    own_methods = org is not None and (break_glass
                                       or break_glass_members.exempt(db, org, signed_in_email) is not None)
    if org is not None and org.sso_enforced and org.connection_id and not own_methods:
        params["connection_id"] = org.connection_id
    elif org is not None and org.workos_organization_id:
        params["organization_id"] = org.workos_organization_id
    else:
        params["provider"] = "authkit"
    return Authorization(client.user_management.get_authorization_url(**params), verifier)


def finish(db: Session, client: WorkOSClient, verifier: TokenVerifier, *, code: str, code_verifier: str,
           remember: bool, policy: SessionPolicy, commit: Callable[[], None],
           request: RequestInfo = NO_REQUEST) -> Finished:
    """Exchange the callback's code, record the login (committed; run again when the database rolled it back to
    break a deadlock: :func:`db_conflicts.retrying`), then mirror the user's other memberships (committed apart: a
    failure there is only logged).

    Raises :class:`LoginFailed` for the caller to count and audit (the code refused, no organization, WorkOS
    refusing; ``denied``: we do not let the user in, the WorkOS session ended), :class:`auth_policy.SsoRequired`
    (its audit event committed, the WorkOS session ended) and ``ServiceUnavailable`` (WorkOS unreachable).
    """
    exchanged = login.exchange_code(db, client, verifier, code=code, code_verifier=code_verifier, request=request)

    def record() -> LoginResult:
        recorded = login.complete_login(db, client, tokens=exchanged.tokens, claims=exchanged.claims,
                                        remember=remember, policy=policy, request=request,
                                        authentication=exchanged.authentication, listed=exchanged.listed)
        commit()
        return recorded

    try:
        # A sign-in may cross an applier's batch (its keys taken before its organizations): the loser runs again.
        result = db_conflicts.retrying(db, record, what="a sign-in's transaction")
    except auth_policy.SsoRequired:
        commit()  # the refusal's audit event; no session was recorded
        login.end_workos_session(client, exchanged.workos_session_id, why="refused")
        raise
    except login.LoginDenied as exc:
        db.rollback()
        login.end_workos_session(client, exchanged.workos_session_id, why="denied")
        workos_org_id = exchanged.tokens.organization_id or exchanged.claims.get("org_id")
        org = find_organization(db, str(workos_org_id)) if workos_org_id else None
        if org is not None and exchanged.authentication.method == "sso":  # committed with the failure summary
            sign_in_attempts.record_callback(db, sign_in_attempts.Seen(
                organization_id=org.id, kind="sign_in", outcome="failure", reason="not_a_member", error_code="denied",
                error_message=exc.message, email=exchanged.tokens.user.get("email"),
                connection_id=exchanged.authentication.connection_id,
                workos_session_id=exchanged.workos_session_id, idp_plugin=org.idp_plugin,
                ip_address=request.ip_address))
        raise LoginFailed("denied", exc.message, status=403, code="login_denied",
                          organization_id=org.id if org is not None else None,
                          actor=login.signing_in(db, exchanged.tokens.user),
                          email=exchanged.tokens.user.get("email")) from exc

    def mirror_memberships() -> None:
        sign_in_membership.sync_user_memberships(db, client, user_id=result.user_id,
                                                 workos_user_id=str(exchanged.tokens.user["id"]),
                                                 cause=Cause.by(Actor("user", result.user_id, result.email), request))
        commit()

    try:
        db_conflicts.retrying(db, mirror_memberships, what="a sign-in's mirroring of its other memberships")
    except Exception as exc:  # the sign-in committed: a failure of its mirroring is only logged
        if not (isinstance(exc, WorkOSFailure) or is_connection_error(exc)):
            raise
        db.rollback()
        log.warning("could not mirror the other memberships of %s: %s", result.user_id, type(exc).__name__)
    log.info("login %s user=%s org=%s", result.session_id, result.user_id, result.organization_id)
    return Finished(result, exchanged.tokens)


def refuse_reauthentication(db: Session, client: WorkOSClient, result: LoginResult,
                            request: RequestInfo = NO_REQUEST) -> AppError:
    """A re-authentication that signed in someone else, or elsewhere: end the session it created (audited,
    caller commits) and return the 403 ``reauthentication_mismatch`` to raise; the caller's own session stays."""
    sessions.revoke_session(db, client, organization_id=result.organization_id, session_id=result.session_id,
                            cause=Cause.by(Actor("user", result.user_id, result.email), request,
                                           reason="reauthentication_mismatch"))
    return AppError("The sign-in was not the same person in the same organization; your session is unchanged.",
                    status=403, code="reauthentication_mismatch")


def retire_replaced(db: Session, client: WorkOSClient, result: LoginResult, replaced_session_id: str,
                    request: RequestInfo = NO_REQUEST) -> None:
    """End the session a re-authentication replaced (its cookie now holds the new one; audited, reason
    ``reauthenticated``; caller commits), so a step-up leaves no orphaned live session behind. A failure here is
    only logged: the new session stands, and the old one still ends by its own limits."""
    try:
        sessions.revoke_session(db, client, organization_id=result.organization_id, session_id=replaced_session_id,
                                cause=Cause.by(Actor("user", result.user_id, result.email), request,
                                               reason="reauthenticated"))
    except (AppError, WorkOSFailure):
        db.rollback()
        log.warning("could not end session %s replaced by a re-authentication", replaced_session_id)


def sign_out(db: Session, client: WorkOSClient, *, workos_session_id: str, email: str | None,
             request: RequestInfo = NO_REQUEST) -> bool:
    """Revoke (here and at WorkOS, audited ``logout``) our record of the WorkOS session, if we hold one;
    returns whether we did (caller commits)."""
    record = sessions.find_by_workos_session_id(db, workos_session_id)
    if record is None:
        return False
    sessions.revoke_session(db, client, organization_id=record.organization_id, session_id=record.id,
                            cause=Cause.by(Actor("user", record.user_id, email), request, reason="logout"))
    return True


def logout_url(client: WorkOSClient, *, workos_session_id: str, return_to: str) -> str:
    """WorkOS's logout URL for the session, continuing at *return_to*."""
    return client.user_management.get_logout_url(session_id=workos_session_id, return_to=return_to)
