"""The browser's AuthKit session on the hosted pages, and ``max_age`` on ``/user_management/authorize``.

AuthKit remembers, per browser, who last *actively* authenticated (a password, a code, or the IdP's page) and when.
An authorization with ``max_age`` passes a browser whose last active authentication is at most ``max_age`` seconds
old straight through (the code, and so the access token's ``auth_time``, keep that instant); an older one, none, or
``max_age=0`` must sign in again on the page: the ``login_hint`` shortcut is not taken (spec 0.61.0: "If the last
authentication is older than this value, the user is prompted to re-authenticate; a value of 0 forces
re-authentication"). Without ``max_age`` nothing changes.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Response, g, has_request_context, request

from . import flows
from .errors import invalid_params
from .ids import token
from .state import Emulator
from .store import AuthRequest

COOKIE = "wos_authkit_session"
LIFETIME = 7 * 24 * 3600


def parse_max_age(value: str | None) -> int | None:
    """The ``max_age`` parameter: absent, or a whole number of seconds >= 0 (422 otherwise, as the spec's
    ``integer, minimum: 0``)."""
    if value is None:
        return None
    text = value.strip()
    if not text.isascii() or not text.isdigit():
        raise invalid_params("max_age must be an integer greater than or equal to 0.", "max_age")
    return int(text)


def authenticated(user_id: str, method: str | None, auth_time: int) -> None:
    """Note a finished hosted sign-in for this request's response (the cookie is set after the request)."""
    if has_request_context():
        g.authkit_signed_in = {"user_id": user_id, "method": method, "auth_time": auth_time}


def remember(emu: Emulator, response: Response) -> Response:
    """Set the browser's AuthKit session cookie when this request finished a sign-in."""
    signed_in = g.pop("authkit_signed_in", None)
    if signed_in is None:
        return response
    with emu.store.lock:
        current = request.cookies.get(COOKIE, "")
        emu.store.browser_sessions.pop(current, None)
        cookie = token(24)
        emu.store.browser_sessions[cookie] = {**signed_in, "expires": time.time() + LIFETIME}
    response.set_cookie(COOKIE, cookie, max_age=LIFETIME, httponly=True, samesite="Lax", path="/")
    return response


def recent(emu: Emulator, max_age: int) -> dict[str, Any] | None:
    """The browser's AuthKit session if its last active authentication is at most *max_age* seconds old (never
    for ``max_age=0``)."""
    found = emu.store.browser_sessions.get(request.cookies.get(COOKIE, ""))
    if found is None or found["expires"] < time.time() or max_age == 0:
        return None
    return found if time.time() - found["auth_time"] <= max_age else None


def pass_through(emu: Emulator, areq: AuthRequest, target: str | None) -> str | None:
    """The ``redirect_uri?code`` for a browser whose last active authentication satisfies ``max_age`` (the same
    user, a member of *target*), or ``None``: then the page must authenticate the user again."""
    if areq.max_age is None or areq.kind != "authkit":
        return None
    found = recent(emu, areq.max_age)
    user = emu.store.users.get(found["user_id"]) if found else None
    if found is None or user is None:
        return None
    hint = (areq.login_hint or "").strip().lower()
    if hint and hint != user["email"].lower():
        return None
    if flows.find_candidate(emu.store, target, user["email"]) is None:
        return None
    method = found.get("method")
    if method is None and not flows.may_vouch(emu.store, areq, target, user["email"]):
        return None
    return flows.complete_login(emu, areq, target, user["email"], method, auth_time=int(found["auth_time"]))
