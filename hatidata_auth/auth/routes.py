"""``/auth/login``, ``/auth/callback``, ``/auth/logout``, ``/auth/organizations``, ``/auth/switch-organization``."""

from __future__ import annotations

import dataclasses
import secrets
from typing import Any

from flask import Blueprint, Response, current_app, flash, g, jsonify, redirect, request, session
from flask_wtf.csrf import generate_csrf
from werkzeug.wrappers import Response as BaseResponse

from .. import security_reports
from ..causes import Actor, Cause
from ..cookie_tokens import clear_session_cookie, set_session_cookie
from ..errors import AppError
from ..extensions import db, limiter
from ..identity import (
    browser_session_required,
    current_identity,
    get_identity,
    request_cause,
    request_tokens,
    rotate,
    runtime,
    seal_tokens,
)
from ..request_hooks import request_info
from ..services import auth_policy, db_conflicts, login_flow, session_refresh
from ..services import login as login_service
from ..services import organizations as organizations_service
from ..services.introspection import Unauthenticated
from ..services.login import LoginFailed
from ..urls import external_url, public_base
from .flow import BROWSER_KEY, MAX_PENDING_LOGINS, InvalidState, LoginState, dump_state, load_state
from .flow import safe_return_to as safe_return_to

bp = Blueprint("hatidata_auth", __name__, url_prefix="/auth")

STATE_KEY = "auth:state:{}"


def _login_limit() -> str:
    return str(current_app.config["HATIDATA_LOGIN_RATE_LIMIT"])


def _redirect_uri() -> str:
    return external_url("hatidata_auth.callback")


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes", "on")


def _max_age(value: str | None) -> int | None:
    if value is None:
        return None
    if not value.isascii() or not value.isdigit() or len(value) > 9:
        raise AppError("max_age must be a whole number of seconds.", status=422, code="validation_error",
                       details={"fields": {"max_age": ["Not a valid number of seconds."]}, "location": "query"})
    return int(value)


def _signed_in_as() -> tuple[tuple[str, str] | None, str | None, str | None]:
    """The browser's current (user, organization), for a re-authentication to stay within, its session and its
    email."""
    try:
        identity = get_identity()
    except AppError:
        return None, None, None
    if identity is None or identity.auth_type != "session" or identity.user_id is None:
        return None, None, None
    return (identity.user_id, identity.organization_id), identity.session_id, identity.email


@bp.get("/login")
@limiter.limit(_login_limit)
def login() -> BaseResponse:
    """Start a login at WorkOS AuthKit (home-realm discovery by ``email``; SSO-enforcing orgs go straight to
    their connection).

    With ``break_glass=1`` an SSO-enforcing organization's own non-SSO methods are offered (to anyone; the
    callback accepts only its break-glass members). With ``max_age`` (step-up re-authentication) AuthKit
    authenticates the user again unless their last active authentication is that recent; a browser that is signed
    in must come back as the same person in the same organization (else the callback refuses, 403
    ``reauthentication_mismatch``).

    Answers 302 to WorkOS (the PKCE verifier kept for the callback, the browser's pending logins noted); 400
    ``unknown_organization`` for an ``organization_id`` we do not know; 422 ``validation_error`` for a
    ``max_age`` that is not a whole number of seconds; 429 past the login rate limit.
    """
    rt = runtime()
    email = (request.args.get("email") or "").strip() or None
    max_age = _max_age(request.args.get("max_age"))
    reauthenticating, replaces, signed_in_email = _signed_in_as() if max_age is not None else (None, None, None)
    state = LoginState(nonce=secrets.token_urlsafe(24), return_to=safe_return_to(request.args.get("return_to")),
                       remember=_truthy(request.args.get("remember")), reauthenticating=reauthenticating,
                       replaces=replaces)
    authorization = login_flow.authorization_url(
        db.session(), rt.gateway.client, redirect_uri=_redirect_uri(),
        state=dump_state(str(current_app.secret_key or ""), state), email=email,
        organization_id=request.args.get("organization_id") or None, max_age=max_age,
        break_glass=_truthy(request.args.get("break_glass")), signed_in_email=signed_in_email)
    db.session.remove()
    rt.put(STATE_KEY.format(state.nonce), {"verifier": authorization.code_verifier}, rt.state_ttl)
    pending = [n for n in session.get(BROWSER_KEY, []) if isinstance(n, str)][-(MAX_PENDING_LOGINS - 1):]
    session[BROWSER_KEY] = [*pending, state.nonce]
    return redirect(authorization.url, code=302)


def _recorded(failure: LoginFailed) -> LoginFailed:
    """Count and audit a failed sign-in (its own commit; in its organization, naming the person, when WorkOS
    vouched for both), then hand the failure back to be raised."""
    cause = Cause.by(failure.actor or Actor("user"), request_info())
    login_service.record_login_failure(db.session(), security_reports.shared_cache(), reason=failure.reason,
                                       cause=cause, organization_id=failure.organization_id,
                                       details=failure.sample, window=security_reports.window())
    db.session.commit()
    return failure


def _take_state(rt: Any) -> tuple[LoginState, str, str]:
    """The callback's verified state, its PKCE verifier and code; :class:`InvalidState` otherwise."""
    state = load_state(str(current_app.secret_key or ""), request.args.get("state"), rt.state_ttl)
    pending = session.get(BROWSER_KEY) or []
    if state.nonce not in pending:
        raise InvalidState("This sign-in was started in another browser; start again.")
    session[BROWSER_KEY] = [n for n in pending if n != state.nonce]
    record = rt.take_once(STATE_KEY.format(state.nonce))
    if not isinstance(record, dict):
        raise InvalidState("This sign-in was already completed or has expired; start again.")
    code = request.args.get("code")
    if not code:
        raise InvalidState("The login response carries no code.")
    return state, str(record["verifier"]), code


def _rotate_csrf() -> None:
    """A CSRF token handed out before the login stops working: the callback starts a fresh one."""
    field = str(current_app.config.get("WTF_CSRF_FIELD_NAME", "csrf_token"))
    session.pop(field, None)
    g.pop(field, None)
    generate_csrf()


@bp.get("/callback")
def callback() -> BaseResponse:
    """Finish the login: check ``state``, exchange the code (PKCE), record the session, set the cookie.

    Answers 302 to ``return_to`` with the session cookie; 400 ``login_failed`` (the IdP's error), 400
    ``invalid_state`` (missing, forged, expired, reused or another browser's), 400 ``invalid_code``, 403
    ``login_failed`` (no organization, WorkOS refused), 403 ``login_denied`` (the WorkOS session is revoked), all
    counted in the failed-login summary; 403 ``reauthentication_mismatch`` (a re-authentication that signed in
    another person or organization; that new session revoked, the browser's own kept);
    409 ``sso_required`` (audited ``auth.policy_refused``, the WorkOS session
    revoked); 503 ``workos_unavailable``.
    """
    rt = runtime()
    if request.args.get("error"):
        raise _recorded(LoginFailed("idp_error", "The sign-in was not completed.", error=request.args.get("error"),
                                    description=request.args.get("error_description")))
    try:
        state, verifier, code = _take_state(rt)
    except InvalidState as exc:
        _recorded(LoginFailed("invalid_state", exc.message))
        raise
    try:
        finished = login_flow.finish(db.session(), rt.gateway.client, rt.verifier, code=code, code_verifier=verifier,
                                     remember=state.remember, policy=rt.policy, commit=db.session.commit,
                                     request=request_info())
    except LoginFailed as exc:
        _recorded(exc)
        raise
    result = finished.result
    if state.reauthenticating is not None and state.reauthenticating != (result.user_id, result.organization_id):
        refusal = login_flow.refuse_reauthentication(db.session(), rt.gateway.client, result, request_info())
        db.session.commit()
        raise refusal
    if state.replaces is not None and state.replaces != result.session_id:
        login_flow.retire_replaced(db.session(), rt.gateway.client, result, state.replaces, request_info())
        db.session.commit()
    _rotate_csrf()
    response = redirect(state.return_to, code=302)
    set_session_cookie(response, rt, seal_tokens(rt, finished.tokens), remembered=state.remember)
    return response


@bp.post("/logout")
def logout() -> BaseResponse:
    """Revoke the session here and at WorkOS, clear the cookie, continue at WorkOS's logout URL.

    Answers 303 to WorkOS's logout URL (a cookie whose tokens verify, even expired), else 303 home; the cookie
    cleared either way, and "You are signed out." flashed for the page the browser lands on. With a cookie:
    400 ``bad_request`` without a valid CSRF token.
    """
    from ..extensions import csrf

    rt = runtime()
    home = public_base() + "/"
    cookie = request.cookies.get(rt.cookie_name)
    target = home
    if cookie:
        csrf.protect()
        try:
            data = request_tokens(rt) or {}
            claims = rt.verifier.verify(str(data.get("access_token")), allow_expired=True)
        except Unauthenticated:
            claims = None
        if claims is not None:
            sid = str(claims["sid"])
            if login_flow.sign_out(db.session(), rt.gateway.client, workos_session_id=sid,
                                   email=(data.get("user") or {}).get("email"), request=request_info()):
                db.session.commit()
            target = login_flow.logout_url(rt.gateway.client, workos_session_id=sid, return_to=home)
    flash("You are signed out.", "success")
    response = redirect(target, code=303)
    clear_session_cookie(response, rt)
    return response


@bp.get("/csrf")
def csrf_token() -> Response:
    """A CSRF token for cookie-authenticated POSTs (``X-CSRFToken`` header or ``csrf_token`` form field)."""
    return jsonify(csrf_token=generate_csrf())


@bp.get("/organizations")
@browser_session_required
def organizations() -> Response:
    """The caller's organizations, the current one flagged; ``sign_in_required`` (with ``sign_in_reason`` and
    ``login_url``) marks those that do not accept how this session was authenticated (sign in there)."""
    identity = current_identity
    choices = session_refresh.organization_choices(db.session(), user_id=identity.user_id,
                                                   organization_id=identity.organization_id,
                                                   session_id=identity.session_id, email=identity.email)
    data = [dataclasses.asdict(choice) for choice in choices]
    return jsonify(data=data)


@bp.post("/switch-organization")
@browser_session_required
def switch_organization() -> BaseResponse:
    """Refresh the session into another of the caller's organizations (audited).

    Answers 200 with the organization, or, given ``return_to`` (the browser form), 303 there with "You are now
    in <organization> as <role>." flashed; 422 ``validation_error`` naming ``organization_id`` (missing, or not a
    non-empty string) or ``return_to`` (not a non-empty string); 404 ``not_found`` for an organization we do not
    know; 403 ``forbidden`` when the caller is not an active member; 401 when the session has ended, or when the
    membership ended while WorkOS moved the session (the session is then ended: ``details.reason``
    ``membership_ended``); 409 ``sso_required`` (audited) when the target does not accept how this session signed
    in and 409 ``switch_refused`` when WorkOS refuses the move (both with ``details.login_url``, the target's
    login; the current session stays); 503 when WorkOS is unreachable.
    """
    rt = runtime()
    identity = current_identity
    data: Any = request.get_json(silent=True) or request.form.to_dict()
    if not isinstance(data, dict):
        data = {}
    required_or_given = ["organization_id", *(["return_to"] if "return_to" in data else [])]
    wrong = {name: ["Must be a non-empty string."] for name in required_or_given
             if not isinstance(data.get(name), str) or not data[name]}
    if wrong:
        raise AppError("Give organization_id, the id of one of your organizations.", status=422,
                       code="validation_error", details={"fields": wrong})
    target = organizations_service.find_organization(db.session(), data["organization_id"])
    if target is None:
        raise AppError("Unknown organization.", status=404, code="not_found")
    assert identity.user_id is not None
    try:
        membership = session_refresh.check_switch_target(db.session(), user_id=identity.user_id,
                                                         current_organization_id=identity.organization_id,
                                                         target=target, session_id=identity.session_id,
                                                         request=request_info())
    except auth_policy.SsoRequired:
        db.session.commit()  # keep the refusal's audit event
        raise
    user_id = identity.user_id

    def apply(tokens: dict[str, Any]) -> None:  # committed before another request may use the new tokens
        claims = rt.verifier.verify(str(tokens["access_token"]))
        lost: list[session_refresh.SwitchTargetLost] = []

        def move() -> None:
            lost.clear()  # what an attempt the database rolled back found is not this one's answer
            try:
                session_refresh.apply_switch(db.session(), rt.gateway.client, workos_session_id=str(claims["sid"]),
                                             target=target, user_id=user_id, cause=request_cause())
            except session_refresh.SwitchTargetLost as ended:
                lost.append(ended)  # commit the session it ended, and the audit events
            db.session.commit()

        # WorkOS has moved the session: only our record is left to move, so a deadlock's loser runs it again
        db_conflicts.retrying(db.session(), move, what="an organization switch's move")
        if lost:
            raise lost[0]

    # The request's current tokens (refreshed already if the access token had expired) rotate into the target.
    try:
        rotate(rt, organization_id=target.workos_organization_id, then=apply)
    except session_refresh.RefreshFailed as failure:
        if failure.transient:
            raise
        # WorkOS refused only the move into the target: the current session and its cookie stay as they were.
        raise session_refresh.SwitchRefused(target, failure) from failure
    return_to = data.get("return_to")
    response: BaseResponse
    if return_to is not None:
        flash(f"You are now in {target.name} as {membership.role or 'a member without a role'}.", "success")
        response = redirect(safe_return_to(str(return_to)), code=303)
    else:
        response = jsonify(organization_id=target.id, name=target.name, role=membership.role)
    return response  # the new cookie is set from the request's tokens (embedding._apply_cookie_changes)
