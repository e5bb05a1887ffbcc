"""User Management sessions: the one path from a finished sign-in to a session, the code exchange, tokens,
refresh and revocation.

Every AuthKit sign-in (code exchange, organization selection, password, Magic Auth, email verification) ends in
:func:`sign_in`, so sessions, events, ``organization_selection_required`` and the AuthenticateResponse are the
same whatever authenticated the user."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from datetime import timedelta
from typing import Any

from . import authkit, serialize
from .errors import oauth_error
from .ids import iso, new_id, token, utcnow
from .pending import require_organization
from .state import Emulator
from .store import Entity

# The session's ``auth_method`` (spec enum) for each ``authentication_method`` of the AuthenticateResponse.
SESSION_AUTH_METHOD = {"SSO": "sso", "Password": "password", "MagicAuth": "magic_code",
                       "Impersonation": "impersonation", "Passkey": "passkey"}


def session_auth_method(method: str) -> str:
    """The spec's lower-case session ``auth_method`` for an ``authentication_method``."""
    if method.endswith("OAuth"):
        return "oauth"
    return SESSION_AUTH_METHOD.get(method, "unknown")


def check_client(emu: Emulator, body: dict[str, Any], *, secret_required: bool) -> None:
    """The client id must be the emulator's; a client secret, when given or required, its API key."""
    if body.get("client_id") != emu.config.client_id:
        raise oauth_error("invalid_client", "Invalid client ID.")
    secret = body.get("client_secret")
    if secret is not None and secret != emu.config.api_key:
        raise oauth_error("invalid_client", "Invalid client secret.")
    if secret is None and secret_required:
        raise oauth_error("invalid_client", "client_secret is required for this code.")


def take_code(emu: Emulator, body: dict[str, Any], kind: str) -> dict[str, Any]:
    """Validate client + code and consume the code (single use, spent by a failed attempt too). A code is
    redeemed with the PKCE verifier of its challenge or, for a code issued without a challenge, with the client
    secret: a verifier proves nothing for a code that has no challenge to match it against."""
    if body.get("client_id") != emu.config.client_id:
        raise oauth_error("invalid_client", "Invalid client ID.")
    code = body.get("code")
    if not isinstance(code, str) or not code:
        raise oauth_error("invalid_request", "code is required.")
    record = emu.store.codes.pop(code, None)
    if record is None or record["kind"] != kind:
        raise oauth_error("invalid_grant", "The code is invalid or has already been used.")
    challenge = record.get("code_challenge")
    check_client(emu, body, secret_required=not challenge)
    if record["expires"] < time.time():
        raise oauth_error("invalid_grant", "The code has expired.")
    if challenge:
        _check_verifier(body.get("code_verifier"), challenge, record.get("code_challenge_method") or "S256")
    return record


def _check_verifier(verifier: Any, challenge: str, method: str) -> None:
    if not isinstance(verifier, str) or not verifier:
        raise oauth_error("invalid_grant", "code_verifier is required for this code.")
    digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    expected = digest if method == "S256" else verifier
    if not hmac.compare_digest(expected, challenge):
        raise oauth_error("invalid_grant", "code_verifier does not match the code_challenge.")


def access_token(emu: Emulator, session: Entity, user: Entity, org_id: str | None) -> str:
    """Sign an RS256 access token for the session."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": emu.issuer(),
        "sub": user["id"],
        "sid": session["id"],
        "jti": new_id("jti"),
        "iat": now,
        "exp": now + emu.config.access_token_ttl,
        # when the user last authenticated (AuthKit; SDK 10.8 requires it): refreshes keep the sign-in's instant
        "auth_time": int(session.get("_auth_time") or now),
        # the application the token was minted for, as AuthKit's tokens carry it
        "aud": session.get("_client_id") or emu.config.client_id,
        "client_id": session.get("_client_id") or emu.config.client_id,
    }
    if session.get("_impersonator"):  # RFC 8693 actor claim: the impersonator's email in the nested sub
        claims["act"] = {"sub": session["_impersonator"]["email"]}
    if org_id:
        m = emu.store.membership(user["id"], org_id)
        slug = m["role_slug"] if m else "viewer"
        role = emu.store.roles.get(slug)
        claims.update(
            org_id=org_id,
            role=slug,
            roles=[slug],
            permissions=list(role["permissions"]) if role else [],
        )
    return emu.keys.sign(claims)


def issue(emu: Emulator, session: Entity, user: Entity, org_id: str | None) -> dict[str, Any]:
    """A fresh refresh token and access token for the session: the AuthenticateResponse."""
    # authentication_method is "the authentication method used to initiate the session": refreshes repeat it.
    rt = token(32)
    emu.store.refresh_tokens[rt] = {"session_id": session["id"], "organization_id": org_id, "rotated_at": None}
    out: dict[str, Any] = {
        "user": serialize.user(user),
        "access_token": access_token(emu, session, user, org_id),
        "refresh_token": rt,
        "authentication_method": session.get("_authentication_method") or "SSO",
    }
    if session.get("_impersonator"):
        out["impersonator"] = dict(session["_impersonator"])
    if org_id:
        out["organization_id"] = org_id
    return out


def sign_in_record(emu: Emulator, user: Entity, method: str, client_id: str | None = None) -> dict[str, Any]:
    """What :func:`sign_in` needs to know of a sign-in AuthKit authenticated itself (no code, no IdP)."""
    return {"kind": "authkit", "client_id": client_id or emu.config.client_id, "user_id": user["id"],
            "authentication_method": method, "connection_id": None, "impersonator": None}


def sign_in(emu: Emulator, user: Entity, org_id: str | None, record: dict[str, Any], ip: str | None,
            ua: str | None) -> dict[str, Any]:
    """Finish a sign-in: a member of several organizations without *org_id* gets 403
    ``organization_selection_required`` (*record* is kept for the selection grant); otherwise a session in
    *org_id*, ``session.created`` (and ``authentication.sso_succeeded`` for SSO), and the AuthenticateResponse.

    *record* says how the user signed in: ``authentication_method``, ``client_id``, ``connection_id`` and
    ``impersonator``."""
    store = emu.store
    method = record.get("authentication_method") or "SSO"
    if org_id is None:
        require_organization(emu, user, record)
    else:
        m = store.membership(user["id"], org_id)
        if m is None or m["status"] != "active":
            raise oauth_error("invalid_grant", "The user is not an active member of the organization.")
        authkit.check_method_allowed(store, method, user["email"], org_id)
    now = utcnow()
    session: Entity = {
        "id": new_id("session"),
        "user_id": user["id"],
        "organization_id": org_id,
        "ip_address": ip,
        "user_agent": ua,
        "auth_method": session_auth_method(method),
        "status": "active",
        "expires_at": iso(now + timedelta(seconds=emu.config.session_ttl)),
        "ended_at": None,
        "created_at": iso(now),
        "updated_at": iso(now),
        "_authentication_method": method,
        # the last *active* authentication: the sign-in's instant, or the one AuthKit passed through (max_age)
        "_auth_time": int(record.get("auth_time") or now.timestamp()),
        "_client_id": record.get("client_id") or emu.config.client_id,
        "_impersonator": record.get("impersonator"),
    }
    if org_id is None:
        del session["organization_id"]
    store.sessions[session["id"]] = session
    user["last_sign_in_at"] = iso(now)
    serialize.touch(user)
    emu.emit("session.created", serialize.session(session), org_id)
    if method == "SSO":
        emit_sso_succeeded(emu, session, user, org_id, record.get("connection_id"))
    return issue(emu, session, user, org_id)


def authenticate_code(emu: Emulator, body: dict[str, Any], ip: str | None, ua: str | None) -> dict[str, Any]:
    """``grant_type=authorization_code``: create a session and return an AuthenticateResponse."""
    store = emu.store
    with store.lock:
        record = take_code(emu, body, "authkit")
        user = store.users.get(record["user_id"])
        if user is None:
            raise oauth_error("invalid_grant", "The user no longer exists.")
        return sign_in(emu, user, record.get("organization_id"), record, body.get("ip_address") or ip,
                       body.get("user_agent") or ua)


def emit_sso_succeeded(emu: Emulator, session: Entity, user: Entity, org_id: str | None,
                       connection_id: str | None) -> None:
    """``authentication.sso_succeeded``: which organization and connection authenticated the session
    (``sso.session_id`` is the session the sign-in created)."""
    emu.emit("authentication.sso_succeeded", {
        "type": "sso", "status": "succeeded", "ip_address": session.get("ip_address"),
        "user_agent": session.get("user_agent"), "user_id": user["id"], "email": user["email"],
        "sso": {"organization_id": org_id, "connection_id": connection_id, "session_id": session["id"]},
    }, org_id)


def authenticate_refresh(emu: Emulator, body: dict[str, Any]) -> dict[str, Any]:
    """``grant_type=refresh_token``: rotate the refresh token, optionally switching organization."""
    store = emu.store
    with store.lock:
        check_client(emu, body, secret_required=False)
        rt = body.get("refresh_token")
        if not isinstance(rt, str) or not rt:
            raise oauth_error("invalid_request", "refresh_token is required.")
        rec = store.refresh_tokens.get(rt)
        if rec is None:
            raise oauth_error("invalid_grant", "Invalid refresh token.")
        if rec["rotated_at"] is not None and time.time() - rec["rotated_at"] > emu.config.refresh_grace_seconds:
            raise oauth_error("invalid_grant", "Refresh token already exchanged.")
        session = store.sessions.get(rec["session_id"])
        if session is None or serialize.session(session)["status"] != "active":
            raise oauth_error("invalid_grant", "Session has ended.")
        user = store.users.get(session["user_id"])
        if user is None:
            raise oauth_error("invalid_grant", "The user no longer exists.")
        org_id = body.get("organization_id") or rec["organization_id"]
        if org_id:
            m = store.membership(user["id"], org_id)
            if m is None or m["status"] != "active":
                if body.get("organization_id"):
                    raise oauth_error(
                        "organization_membership_not_found",
                        f"User is not a member of organization '{org_id}'.",
                    )
                raise oauth_error("invalid_grant", "The user is no longer a member of the organization.")
        if body.get("organization_id") and org_id != rec["organization_id"]:
            authkit.check_method_allowed(store, session.get("_authentication_method") or "SSO", user["email"],
                                         org_id)
        rec["rotated_at"] = time.time()
        if org_id:
            session["organization_id"] = org_id
        serialize.touch(session)
        return issue(emu, session, user, org_id)


def revoke_session(emu: Emulator, session_id: str) -> Entity:
    """Revoke a session (idempotent) and emit ``session.revoked`` on the first revocation."""
    store = emu.store
    with store.lock:
        session = store.get("sessions", session_id, "Session")
        if session["status"] == "active":
            session["status"] = "revoked"
            session["ended_at"] = iso()
            serialize.touch(session)
            emu.emit("session.revoked", serialize.session(session), session.get("organization_id"))
        return session
