"""The session cookie's tokens within a request, their rotation at WorkOS (refresh, organization switch), and
the cookie itself (:func:`set_session_cookie`, :func:`clear_session_cookie`).

Rules (see ``docs/auth.md``):

- **One holder per request.** :func:`request_tokens` is the request's current ``{access_token, refresh_token,
  user, …}``: the cookie's, until a rotation in this request replaces them everywhere (the holder and the
  cookie the response sets). Every consumer reads it; none unseals the cookie itself.
- **One rotation per session at a time, across processes and instances.** :func:`rotate` holds the session's
  shared lock (:mod:`hatidata_auth.shared_lock`) across the WorkOS call; the others wait, then reuse the
  winner's tokens.
- **A rotated refresh token leads to its successor.** For ``HATIDATA_REFRESH_SUCCESSOR_TTL`` seconds the shared
  cache maps the hash of every refresh token we rotated to the sealed successor, so a request still carrying
  it (a concurrent one, or a tab that missed the new cookie) gets the successor instead of an ``invalid_grant``.
- **The successor is kept before anything that can fail.** It is stored in the shared cache and adopted by
  the request before the audit event is written.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jwt
from cryptography.fernet import InvalidToken
from flask import request
from workos.session import seal_session_from_auth_response, unseal_data

from .causes import Actor, Cause
from .extensions import db
from .local_cache import LocalCache
from .request_hooks import request_info
from .services import session_refresh
from .services.credential_status import SessionStatus
from .services.credentials import TokenExpired, Unauthenticated, token_hash

if TYPE_CHECKING:
    from werkzeug.wrappers import Response as BaseResponse

    from .embedding import AuthRuntime
    from .revocation_bus import RevocationBus

_HOLDER = "hatidata.cookie_data"
_SET_COOKIE = "hatidata.set_cookie"
_MAX_CHAIN = 8  # successors followed at most (each rotation of the session adds one)


class CookieSessions:
    """Unsealed cookies (by hash), per process, at most *maxsize*: each kept *ttl* seconds, renewed by hits while in
    use, never past its access token's ``exp``, and evicted with its session's status by *bus* (a revocation, or
    everything when a message may have been missed). Only a memo of the unsealing: whether the session is still
    good is always asked of the introspector next."""

    def __init__(self, maxsize: int = 10_000, *, ttl: int = 300, bus: RevocationBus | None = None) -> None:
        self.ttl = ttl
        self.bus = bus
        self.unsealed: LocalCache[dict[str, Any]] = LocalCache(maxsize)
        if bus is not None:
            bus.follow_sessions(self.unsealed)

    def keep(self, digest: bytes, data: dict[str, Any], epoch: int | None) -> None:
        """Memoise *data*, unsealed from the cookie hashing to *digest* while the bus's epoch was *epoch* (an
        eviction since: not kept, it may have been this session's). A token without ``exp`` and ``sid`` is not
        kept: it could outlive its token or miss its session's eviction."""
        if self.bus is not None and self.bus.epoch != epoch:
            return
        try:
            claims = jwt.decode(str(data["access_token"]), options={"verify_signature": False})
        except jwt.PyJWTError:
            return
        exp, sid = claims.get("exp"), claims.get("sid")
        if not isinstance(exp, int | float) or isinstance(exp, bool) or not isinstance(sid, str):
            return
        now = time.monotonic()
        until = now + exp - time.time()
        if until > now:
            self.unsealed.set(digest, data, now + self.ttl, renew=self.ttl, until=until, tag=sid)


def unseal_cookie(rt: AuthRuntime, cookie: str) -> dict[str, Any]:
    """The cookie's ``{access_token, refresh_token, user}``; raises :class:`Unauthenticated` if tampered."""
    digest = hashlib.sha256(cookie.encode()).digest()
    data = rt.cookies.unsealed.get(digest)
    if data is not None:
        return data
    epoch = rt.bus.epoch
    try:
        data = unseal_data(cookie, rt.cookie_key)
    except (InvalidToken, ValueError, TypeError) as exc:
        raise Unauthenticated("The session cookie is invalid.", reason="cookie") from exc
    if not isinstance(data, dict) or not data.get("access_token") or not data.get("refresh_token"):
        raise Unauthenticated("The session cookie is invalid.", reason="cookie")
    rt.cookies.keep(digest, data, epoch)
    return data


def seal_tokens(rt: AuthRuntime, tokens: session_refresh.Tokens) -> str:
    """Seal tokens into a cookie value with the SDK."""
    return seal_session_from_auth_response(access_token=tokens.access_token, refresh_token=tokens.refresh_token,
                                           user=tokens.user, impersonator=tokens.impersonator,
                                           cookie_password=rt.cookie_key)


def request_tokens(rt: AuthRuntime) -> dict[str, Any] | None:
    """The request's current cookie tokens (``None`` without a session cookie); raises
    :class:`Unauthenticated` for a tampered cookie. After a rotation in this request: the successor's."""
    data = request.environ.get(_HOLDER)
    if data is None:
        cookie = request.cookies.get(rt.cookie_name)
        if not cookie:
            return None
        data = request.environ[_HOLDER] = unseal_cookie(rt, cookie)
    return dict(data)


def _adopt(rt: AuthRuntime, sealed: str, remembered: bool) -> dict[str, Any]:
    data = unseal_cookie(rt, sealed)
    request.environ[_HOLDER] = data
    request.environ[_SET_COOKIE] = (sealed, remembered)
    return dict(data)


def _successor_key(refresh_token: str) -> str:
    return f"auth:refresh:{token_hash(refresh_token)}"


def _latest(rt: AuthRuntime, refresh_token: str) -> str | None:
    """The sealed newest successor of *refresh_token* we know of, following rotations; ``None`` if none."""
    sealed = None
    for _ in range(_MAX_CHAIN):
        found = rt.shared_get(_successor_key(refresh_token))
        if not isinstance(found, str):
            break
        sealed = found
        refresh_token = str(unseal_cookie(rt, found)["refresh_token"])
    return sealed


def _usable(rt: AuthRuntime, data: dict[str, Any]) -> bool:
    try:
        rt.verifier.verify(str(data["access_token"]))
    except TokenExpired:
        return False
    return True


def rotate(rt: AuthRuntime, status: SessionStatus | None = None, *, organization_id: str | None = None,  # noqa: C901 - one branch per token state; security fixes in flight
           then: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Rotate the request's tokens at WorkOS (into *organization_id*, for a switch) and adopt the successor.

    *status* is the session's (looked up from the tokens' ``sid`` when not given; its id names the lock;
    :class:`Unauthenticated` when it has ended). A plain refresh first takes a successor
    another request already obtained, if its access token is still valid, and audits
    ``session.refreshed``; a switch always calls WorkOS, and passes *then* (called with the new tokens while
    the lock is still held) to commit its change before another request may take these tokens. Returns the
    new tokens.
    Raises :class:`RefreshFailed` (transient: 503, the session stays; terminal: 401, and a plain refresh
    also ends our record of the session).
    """
    current = request_tokens(rt)
    if current is None:
        raise Unauthenticated("No session cookie.", reason="missing", clear_cookie=False)
    if status is None:
        sid = str(rt.verifier.verify(str(current["access_token"]), allow_expired=True)["sid"])
        status = rt.introspector.session_status(db.session(), sid)
        if status is None or not status.active or status.expires_at <= time.time():
            raise Unauthenticated("The session has ended.", reason="revoked")
    actor = Actor("user", status.user_id, status.email)
    with rt.locks.hold(f"refresh:{status.session_id}", ttl=rt.refresh_lock_ttl, wait=rt.refresh_wait) as held:
        sealed = _latest(rt, str(current["refresh_token"]))
        if sealed is not None:
            current = _adopt(rt, sealed, status.remembered)
            if organization_id is None and _usable(rt, current):
                return current
        if not held:
            raise session_refresh.RefreshFailed("Another refresh of this session is in progress; retry shortly.",
                                                transient=True, cause="refresh_in_progress")
        old_refresh_token = str(current["refresh_token"])
        try:
            tokens = session_refresh.refresh_tokens(rt.gateway.client, refresh_token=old_refresh_token,
                                                    organization_id=organization_id, request=request_info())
        except session_refresh.RefreshFailed as failure:
            sealed = _latest(rt, old_refresh_token)  # rotated by a holder whose lock ran out meanwhile
            if sealed is not None and organization_id is None:
                return _adopt(rt, sealed, status.remembered)
            if organization_id is None:
                session_refresh.record_refresh(db.session(), workos_session_id=status.workos_session_id,
                                               cause=Cause.by(actor, request_info()), failure=failure)
                db.session.commit()
            raise
        sealed = seal_tokens(rt, tokens)
        rt.shared_set(_successor_key(old_refresh_token), sealed, rt.successor_ttl)
        current = _adopt(rt, sealed, status.remembered)
        if then is not None:
            then(current)
    if organization_id is None:
        session_refresh.record_refresh(db.session(), workos_session_id=status.workos_session_id,
                                       cause=Cause.by(actor, request_info()))
        # A session is made again at every refresh: the organization's current SSO policy must accept it.
        refusal = session_refresh.enforce_after_refresh(db.session(), rt.gateway.client,
                                                        workos_session_id=status.workos_session_id,
                                                        request=request_info())
        db.session.commit()
        if refusal is not None:
            raise refusal
    return current


def set_session_cookie(response: BaseResponse, rt: AuthRuntime, sealed: str, *, remembered: bool) -> None:
    """Set the sealed session cookie: HttpOnly, SameSite=Lax, Secure unless in development/testing."""
    response.set_cookie(rt.cookie_name, sealed, httponly=True, secure=rt.cookie_secure, samesite="Lax",
                        path="/", max_age=rt.policy.remembered_ttl if remembered else None)


def clear_session_cookie(response: BaseResponse, rt: AuthRuntime) -> None:
    """Remove the session cookie."""
    response.delete_cookie(rt.cookie_name, path="/", httponly=True, secure=rt.cookie_secure, samesite="Lax")
