"""Who is calling: one :class:`Identity` for the session cookie, ``Bearer <JWT>`` and ``Bearer hd_live_…``.

``current_identity`` is resolved once per request (lazily); ``login_required``, ``require_role`` and
``require_permission`` guard views. A credential that is presented but not valid is always a 401 (and clears
the session cookie when the cookie was the credential); no credential at all is a 401 for JSON callers and a
redirect to ``/auth/login`` for browsers.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import urlencode

from flask import current_app, redirect, request
from werkzeug.local import LocalProxy

from . import step_up
from .causes import Actor, Cause
from .cookie_tokens import CookieSessions as CookieSessions
from .cookie_tokens import request_tokens, rotate
from .cookie_tokens import seal_tokens as seal_tokens
from .cookie_tokens import unseal_cookie as unseal_cookie
from .errors import AppError, wants_html
from .extensions import csrf, db
from .request_hooks import request_info
from .roles import permissions_for, role_at_least
from .security_reports import report as report_failure
from .services import session_refresh
from .services.access_policy import api_key_refusal, networks
from .services.api_keys import KEY_PREFIX, PUBLIC_PREFIX_CHARS, looks_like_key
from .services.credential_status import SessionStatus, load_session_status
from .services.credentials import AddressNotAllowed, TokenExpired, Unauthenticated, token_hash
from .session_checks import allowed_until, enforce_session_policy

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from .embedding import AuthRuntime

F = TypeVar("F", bound=Callable[..., Any])
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_MISSING = object()
KEY_PUBLIC_PREFIX_LEN = len(KEY_PREFIX) + PUBLIC_PREFIX_CHARS


@dataclass(frozen=True, slots=True)
class Identity:
    """The authenticated caller, whatever the credential."""

    auth_type: str  # "session" or "api_key"
    user_id: str | None
    email: str | None
    organization_id: str
    role: str | None
    permissions: frozenset[str]
    session_id: str | None
    api_key_id: str | None
    scopes: tuple[str, ...]
    authenticated_at: float | None = None  # sessions: the access token's ``auth_time`` (the last active sign-in)

    def has_permission(self, *permissions: str) -> bool:
        """Whether every named permission is granted."""
        return all(p in self.permissions for p in permissions)

    @property
    def actor(self) -> Actor:
        """The audit actor for changes this caller makes."""
        if self.auth_type == "api_key":
            return Actor("api_key", self.api_key_id, self.email)
        return Actor("user", self.user_id, self.email)

    def to_json(self) -> dict[str, Any]:
        """The ``/api/v1/me`` view."""
        return {
            "auth_type": self.auth_type, "user_id": self.user_id, "email": self.email,
            "organization_id": self.organization_id, "role": self.role,
            "permissions": sorted(self.permissions), "session_id": self.session_id,
            "api_key_id": self.api_key_id, "scopes": list(self.scopes),
        }


class TooManyAttempts(AppError):
    """Too many failed API-key attempts from one address."""

    status = 429
    code = "too_many_requests"


def runtime() -> AuthRuntime:
    """The :class:`~hatidata_auth.embedding.AuthRuntime` of the current app."""
    return cast("AuthRuntime", current_app.extensions["hatidata_auth"])


# --- resolution ----------------------------------------------------------------------------------------------


def get_identity() -> Identity | None:
    """The caller's identity (resolved once per request), or ``None`` when no credential was presented."""
    environ = request.environ
    found = environ.get("hatidata.identity", _MISSING)
    if found is _MISSING:
        found = _resolve()
        environ["hatidata.identity"] = found
        environ["hatidata.identity_at"] = runtime().introspector.clock()  # a use of the session: see conflict_reruns
    return cast("Identity | None", found)


current_identity: Identity = cast(Identity, LocalProxy(get_identity))


def request_cause(*, reason: str | None = None) -> Cause:
    """The cause of what a view changes: the current identity acting through the current request."""
    return Cause.by(current_identity.actor, request_info(), reason=reason)


def _resolve() -> Identity | None:
    rt = runtime()
    req = request._get_current_object()  # type: ignore[attr-defined]  # read once: the hottest path
    environ = req.environ
    header = req.headers.get("Authorization")  # through the request class (a host app's may supply it)
    if header:
        scheme, _, credential = header.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise Unauthenticated("Use 'Authorization: Bearer <token>'.", reason="malformed", clear_cookie=False)
        environ["hatidata.credential"] = "bearer"
        if looks_like_key(credential):
            return _from_api_key(rt, credential)
        memo = rt.identities.key(b"b", credential)
        remembered = rt.identities.get(memo, req.remote_addr)
        if remembered is not None:
            return cast(Identity, remembered)
        epoch = rt.identities.epoch()
        try:
            claims = rt.verifier.verify(credential)
        except Unauthenticated as exc:
            exc.clear_cookie = False
            raise
        return _from_session_claims(rt, claims, (memo, epoch))
    cookie = req.cookies.get(rt.cookie_name)
    if cookie:
        environ["hatidata.credential"] = "cookie"
        memo = rt.identities.key(b"c", cookie)
        remembered = rt.identities.get(memo, req.remote_addr)
        if remembered is not None:
            return cast(Identity, remembered)
        try:
            return _from_cookie(rt, (memo, rt.identities.epoch()))
        except Unauthenticated as exc:
            if exc.clear_cookie:
                environ["hatidata.clear_cookie"] = True
            raise
    return None


def _lazy_db() -> Session:
    """The request's database session, built only if something uses it.

    The scoped proxy forwards every call to the real session, so a request answered from the caches never
    builds one (``db.session()`` would, on the hottest path).
    """
    return cast("Session", db.session)


def _from_session_claims(rt: AuthRuntime, claims: dict[str, Any],
                         memo: tuple[bytes, int | None] | None = None) -> Identity:
    """The identity of verified *claims*; with *memo* (its key, and the bus epoch read before the credential
    was), remembered for the credential's next requests (:mod:`.session_checks`)."""
    status = rt.introspector.session_status(_lazy_db(), str(claims["sid"]))
    if status is None or not status.active:
        raise Unauthenticated("The session has ended.", reason="revoked")
    now = time.time()
    if status.expires_at <= now:
        raise Unauthenticated("The session has expired.", reason="session_expired")
    token_org = claims.get("org_id")
    if token_org and status.workos_organization_id and token_org != status.workos_organization_id:
        # A switch in another process may have moved the session after this one cached it: ask the database.
        status = load_session_status(_lazy_db(), str(claims["sid"]), default_cache_ttl=rt.introspector.cache_ttl,
                                     active_ttl=rt.introspector.active_ttl)
        if status is None or not status.active or token_org != status.workos_organization_id:
            raise Unauthenticated("The token is for another organization than the session.", reason="organization")
    authenticated_at = _auth_time(claims)
    status, policy = enforce_session_policy(rt, _lazy_db(), status, authenticated_at)
    if rt.introspector.should_touch(status):
        status = rt.introspector.touch(status)
    identity = _session_identity(status, authenticated_at)
    if memo is not None:
        until = allowed_until(rt.introspector, float(claims["exp"]), status, policy, authenticated_at)
        rt.identities.keep(memo[0], memo[1], identity, status, until, request.remote_addr)
    return identity


def _auth_time(claims: dict[str, Any]) -> float | None:
    """The token's ``auth_time`` (the last active sign-in), if it carries a number."""
    value = claims.get("auth_time")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _session_identity(status: SessionStatus, authenticated_at: float | None = None) -> Identity:
    return Identity(auth_type="session", user_id=status.user_id, email=status.email,
                    organization_id=status.organization_id, role=status.role,
                    permissions=permissions_for(status.role), session_id=status.session_id, api_key_id=None,
                    scopes=(), authenticated_at=authenticated_at)


def _from_cookie(rt: AuthRuntime, memo: tuple[bytes, int | None]) -> Identity:
    data = request_tokens(rt)
    assert data is not None  # the caller saw the cookie
    try:
        claims = rt.verifier.verify(str(data["access_token"]))
    except TokenExpired:
        return _from_session_claims(rt, _refresh_cookie(rt, data))  # the old cookie's successor: not remembered
    return _from_session_claims(rt, claims, memo)


def _refresh_cookie(rt: AuthRuntime, data: dict[str, Any]) -> dict[str, Any]:
    old_claims = rt.verifier.verify(str(data["access_token"]), allow_expired=True)
    status = rt.introspector.session_status(_lazy_db(), str(old_claims["sid"]))
    if status is None or not status.active or status.expires_at <= time.time():
        raise Unauthenticated("The session has ended.", reason="revoked")
    # never refresh an ended session
    status, _policy = enforce_session_policy(rt, _lazy_db(), status, _auth_time(old_claims))
    try:
        new_data = rotate(rt, status)
    except session_refresh.RefreshFailed as failure:
        if failure.transient:
            raise
        raise Unauthenticated("The session has ended; sign in again.", reason="refresh_rejected") from None
    return rt.verifier.verify(str(new_data["access_token"]))


def _from_api_key(rt: AuthRuntime, secret: str) -> Identity:
    digest = token_hash(secret)
    status = rt.introspector.api_key_status(_lazy_db(), digest)
    if status is None or not hmac.compare_digest(status.key_hash, digest) or not status.usable(time.time()):
        # The one place a key attempt fails: counted (and limited) here, never before the secret is checked.
        report_failure("api_key", "invalid_key", organization_id=status.organization_id if status else None)
        rt.key_attempt_failed(secret[:KEY_PUBLIC_PREFIX_LEN])
        raise Unauthenticated("Invalid API key.", reason="api_key", clear_cookie=False)
    policy = rt.introspector.policy(_lazy_db(), status.organization_id)
    if policy is not None and api_key_refusal(policy, networks(status.ip_allowlist), request.remote_addr):
        report_failure("access_policy", "ip_not_allowed", organization_id=status.organization_id,
                       actor=Actor("api_key", status.key_id, status.owner_email), target_type="api_key",
                       target_id=status.key_id)
        raise AddressNotAllowed("This address is not in the API key's (or its organization's) IP allowlist.",
                                details={"address": request.remote_addr})
    if rt.usage.due(status.key_id):
        rt.usage.write(_lazy_db(), organization_id=status.organization_id, key_id=status.key_id)
    return Identity(auth_type="api_key", user_id=status.owner_user_id, email=status.owner_email,
                    organization_id=status.organization_id, role=status.owner_role,
                    permissions=status.permissions, session_id=None, api_key_id=status.key_id,
                    scopes=status.scopes)


# --- decorators ------------------------------------------------------------------------------------------------


def _wants_html() -> bool:
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return request.method == "GET" and best == "text/html" and not request.path.startswith("/api/")


def login_url(return_to: str | None = None) -> str:
    """Where to send a browser to sign in, coming back to *return_to*."""
    return "/auth/login?" + urlencode({"return_to": return_to or "/"})


def require_recent_authentication(identity: Identity | None = None) -> None:
    """401 ``reauthentication_required`` unless the caller's session signed in within its organization's
    ``step_up_window`` (policy and clock from memory: ``rt.introspector``). API keys pass (see :mod:`.step_up`)."""
    identity = identity or current_identity
    if identity.auth_type == "api_key":
        return
    rt = runtime()
    policy = rt.introspector.policy(_lazy_db(), identity.organization_id)
    window = policy.step_up_window if policy is not None else step_up.DEFAULT_STEP_UP_WINDOW
    step_up.check(authenticated_at=identity.authenticated_at, window=window, now=rt.introspector.clock(),
                  organization_id=identity.organization_id, return_to=step_up.coming_back_to())


def _step_up(permissions: tuple[str, ...] = ()) -> Any:
    """Apply the step-up rule when the request is sensitive: ``None`` to go on, or the browser's redirect."""
    req = request._get_current_object()  # type: ignore[attr-defined]
    url_rule = req.url_rule
    if not step_up.is_sensitive(req.endpoint, req.method, permissions,
                                url_rule.rule if url_rule is not None else None):
        return None
    try:
        require_recent_authentication()
    except step_up.ReauthenticationRequired as exc:
        if wants_html():  # a page or a form post: to the re-authentication, then back to the page
            return redirect(exc.details["reauthenticate_url"], code=302 if request.method == "GET" else 303)
        raise
    return None


def _require_identity() -> Identity:
    identity = get_identity()
    if identity is None:
        raise Unauthenticated("Authentication required.", reason="missing", clear_cookie=False)
    req = request._get_current_object()  # type: ignore[attr-defined]
    if req.environ.get("hatidata.credential") == "cookie" and req.method not in SAFE_METHODS:
        csrf.protect()
    return identity


def login_required(view: F) -> F:
    """Require any valid credential; browsers without one are sent to the login page."""
    return _login_required(view, step_up_here=True)


def _login_required(view: F, *, step_up_here: bool) -> F:
    """:func:`login_required`; the guards built on it apply the step-up rule after their own checks instead."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            _require_identity()
        except Unauthenticated as exc:
            if _wants_html():
                path = request.full_path.rstrip("?") if request.query_string else request.path
                response = redirect((exc.details or {}).get("login_url") or login_url(path))
                if exc.clear_cookie and request.environ.get("hatidata.credential") == "cookie":
                    request.environ["hatidata.clear_cookie"] = True
                return response
            raise
        return (_step_up() if step_up_here else None) or view(*args, **kwargs)

    return cast(F, wrapped)


def browser_session_required(view: F) -> F:
    """Require the browser's session cookie: these routes speak for the person across their organizations,
    which no API key (bound to one organization) or bearer token may do. Others get 403
    ``browser_session_required``; browsers without a credential are sent to the login page."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        identity = current_identity
        if identity.auth_type != "session" or request.environ.get("hatidata.credential") != "cookie":
            raise AppError("This needs a browser session; API keys and bearer tokens are not accepted here.",
                           status=403, code="browser_session_required",
                           details={"credential": request.environ.get("hatidata.credential"),
                                    "auth_type": identity.auth_type})
        return _step_up() or view(*args, **kwargs)

    return cast(F, _login_required(cast(F, wrapped), step_up_here=False))


def require_role(minimum: str) -> Callable[[F], F]:
    """Require the caller's role to be *minimum* or stronger (``admin`` > ``developer`` > ``viewer``)."""

    def decorator(view: F) -> F:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            identity = _require_identity()
            if not role_at_least(identity.role, minimum):
                raise AppError(f"This needs the {minimum} role.", status=403, code="forbidden",
                               details={"required_role": minimum})
            return _step_up() or view(*args, **kwargs)

        return cast(F, _login_required(cast(F, wrapped), step_up_here=False))

    return decorator


def require_permission(*permissions: str) -> Callable[[F], F]:
    """Require every named permission (for API keys: within the key's scopes and its owner's role)."""

    def decorator(view: F) -> F:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            identity = _require_identity()
            missing = sorted(p for p in permissions if p not in identity.permissions)
            if missing:
                raise AppError("You lack a permission this needs.", status=403, code="forbidden",
                               details={"missing_permissions": missing})
            return _step_up(permissions) or view(*args, **kwargs)

        wrapped.hatidata_permissions = permissions  # type: ignore[attr-defined]
        return cast(F, _login_required(cast(F, wrapped), step_up_here=False))

    return decorator
