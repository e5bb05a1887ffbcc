"""AuthKit's own sign-in methods: passwords, Magic Auth codes, email verification, and their rate limits.

Shared by the API grants (``POST /user_management/authenticate``) and the hosted page. State lives in plain
JSON-able Store fields (``passwords``, ``magic_auths``, ``pending_authentications``, ``rate_limits``), so the
Store's persistence covers it. Every function expects ``store.lock`` held by the caller or takes it itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from datetime import timedelta
from typing import Any

from . import serialize
from .errors import ApiError, oauth_error
from .ids import iso, new_id, token, utcnow
from .state import Emulator
from .store import Entity, Store

PASSWORD = "Password"
MAGIC_AUTH = "MagicAuth"
AUTHKIT_METHODS = frozenset({PASSWORD, MAGIC_AUTH})  # methods where AuthKit checks the user's proof itself
CODE_TTL = 600  # Magic Auth and email verification codes: 10 minutes, as WorkOS documents
PENDING_TTL = 600
MAX_CODE_ATTEMPTS = 5
# WorkOS's documented rate limits: authentication 10 per 60 s per email; Magic Auth codes 3 per 60 s per email.
AUTHENTICATE_LIMIT = (10, 60.0)
MAGIC_AUTH_LIMIT = (3, 60.0)
# scrypt's cost kept low: the emulator hashes so that no plain password sits in its state, not to resist cracking.
_SCRYPT = {"n": 2**12, "r": 8, "p": 1}
_EVENT_TYPE = {PASSWORD: "password", MAGIC_AUTH: "magic_auth"}


# ---- passwords --------------------------------------------------------------------------------------------
def hash_password(password: str) -> str:
    """``scrypt$n$r$p$salt$hash`` (base64) of *password* with a fresh salt."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${b64(salt).decode()}${b64(digest).decode()}"


def password_matches(stored: str | None, password: str) -> bool:
    """Whether *password* matches the stored hash (``False`` when there is none)."""
    if not stored:
        return False
    try:
        _, n, r, p, salt, digest = stored.split("$")
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), dklen=32, n=int(n), r=int(r),
                                p=int(p))
    except ValueError:
        return False
    return hmac.compare_digest(actual, base64.b64decode(digest))


def set_password(store: Store, user_id: str, password: str) -> None:
    """Give the user a password (WorkOS: ``password`` on create/update user)."""
    if len(password) < 8:
        raise ApiError(422, "Password does not meet strength requirements.", "password_strength_error",
                       errors=[{"code": "password_too_short", "message": "Password must be at least 8 characters."}])
    store.passwords[user_id] = hash_password(password)


# ---- rate limits ------------------------------------------------------------------------------------------
def take_rate(store: Store, bucket: str, key: str, limit: tuple[int, float], now: float | None = None) -> bool:
    """Count one request in *bucket* for *key*; ``False`` when the sliding window is already full."""
    now = time.time() if now is None else now
    count, window = limit
    name = f"{bucket}:{key.strip().lower()}"
    recent = [t for t in store.rate_limits.get(name, []) if now - t < window]
    if len(recent) >= count:
        store.rate_limits[name] = recent
        return False
    store.rate_limits[name] = [*recent, now]
    return True


def check_authenticate_rate(store: Store, email: str) -> None:
    """429 ``too_many_requests`` (OAuth shape, as the spec documents for authenticate) past the limit."""
    if not take_rate(store, "authenticate", email, AUTHENTICATE_LIMIT):
        raise oauth_error("too_many_requests", "Too many authentication attempts for this email; retry later.", 429)


def check_magic_auth_rate(store: Store, email: str) -> None:
    """429 ``rate_limit_exceeded`` past 3 codes per 60 s for one email."""
    if not take_rate(store, "magic_auth", email, MAGIC_AUTH_LIMIT):
        raise ApiError(429, "Too many Magic Auth codes requested for this email; retry later.",
                       "rate_limit_exceeded")


# ---- which organizations enforce SSO ------------------------------------------------------------------------
def sso_connections(store: Store, email: str, org_id: str | None = None) -> list[str]:
    """Active connections that must authenticate *email*: those of the organization owning its domain (verified:
    a pending claim enforces nothing), and of *org_id* when given. An organization with an active SSO connection
    is SSO only (no password, no code)."""
    orgs: list[str] = []
    owner = store.org_for_domain(email.rpartition("@")[2]) if "@" in email else None
    if owner is not None:
        orgs.append(owner["id"])
    if org_id and org_id not in orgs:
        orgs.append(org_id)
    return [c["id"] for c in store.connections.values()
            if c.get("organization_id") in orgs and c["state"] == "active"]


def check_method_allowed(store: Store, method: str, email: str, org_id: str | None) -> None:
    """The SSO-only rule for every grant that lands a sign-in in an organization (code exchange, selection,
    refresh switch): a session AuthKit authenticated itself (:data:`AUTHKIT_METHODS`) never enters an
    organization with an active connection, nor one while the email's domain belongs to such an organization."""
    if method in AUTHKIT_METHODS and org_id:
        conns = sso_connections(store, email, org_id)
        if conns:
            raise sso_required(email, conns)


def sso_required(email: str, connection_ids: list[str]) -> ApiError:
    """400 ``sso_required`` naming the connections (spec 0.61.0 shape)."""
    err = oauth_error("sso_required", "The user must authenticate through SSO.")
    err.extra.update(connection_ids=connection_ids, email=email)
    return err


# ---- events -------------------------------------------------------------------------------------------------
def emit_result(emu: Emulator, method: str, email: str, user: Entity | None, ip: str | None, ua: str | None,
                error: ApiError | None = None) -> None:
    """``authentication.<password|magic_auth|email_verification>_<succeeded|failed>``."""
    kind = _EVENT_TYPE.get(method, method)
    data: dict[str, Any] = {"type": kind, "status": "failed" if error else "succeeded", "ip_address": ip,
                            "user_agent": ua, "user_id": user["id"] if user else None, "email": email}
    if error is not None:
        data["error"] = {"code": error.code or "error", "message": error.message}
    org_ids = [m["organization_id"] for m in emu.store.user_memberships(user["id"])] if user else []
    emu.emit(f"authentication.{kind}_{data['status']}", data, org_ids[0] if len(org_ids) == 1 else None)


def _fail(emu: Emulator, method: str, email: str, user: Entity | None, ip: str | None, ua: str | None,
          error: ApiError) -> ApiError:
    emit_result(emu, method, email, user, ip, ua, error)
    return error


# ---- password -----------------------------------------------------------------------------------------------
def verify_password(emu: Emulator, email: str, password: str, ip: str | None, ua: str | None,
                    org_id: str | None = None) -> Entity:
    """The user whose password this is, or an :class:`ApiError` (rate limit, ``sso_required``,
    ``invalid_credentials``, ``email_verification_required`` with a pending token)."""
    store = emu.store
    check_authenticate_rate(store, email)
    conns = sso_connections(store, email, org_id)
    if conns:
        raise _fail(emu, PASSWORD, email, store.user_by_email(email), ip, ua, sso_required(email, conns))
    user = store.user_by_email(email)
    if user is None or not password_matches(store.passwords.get(user["id"]), password):
        raise _fail(emu, PASSWORD, email, user, ip, ua,
                    ApiError(400, "Invalid credentials.", "invalid_credentials"))
    if not user.get("email_verified"):
        raise email_verification_required(emu, user, PASSWORD, org_id)
    emit_result(emu, PASSWORD, email, user, ip, ua)
    return user


# ---- email verification --------------------------------------------------------------------------------------
def email_verification_required(emu: Emulator, user: Entity, method: str, org_id: str | None) -> ApiError:
    """Start an email verification (a code, readable through the control API) and the 403 that carries its
    ``pending_authentication_token``."""
    pending_token = token(24)
    verification_id = new_id("email_verification")
    emu.store.pending_authentications[pending_token] = {
        "kind": "email_verification", "user_id": user["id"], "expires": time.time() + PENDING_TTL,
        "email_verification_id": verification_id, "code": _six_digits(), "method": method,
        "organization_id": org_id, "attempts": 0, "created_at": iso(),
    }
    return ApiError(403, "Email ownership must be verified before authentication.", "email_verification_required",
                    pending_authentication_token=pending_token, email=user["email"],
                    email_verification_id=verification_id)


def verify_email(emu: Emulator, pending_token: str, code: str, ip: str | None,
                 ua: str | None) -> tuple[Entity, Entity]:
    """Complete a pending email verification: (user, pending record) or an :class:`ApiError`."""
    store = emu.store
    pending = store.pending_authentications.get(pending_token)
    if pending is None or pending.get("kind") != "email_verification" or pending["expires"] < time.time():
        raise ApiError(400, "The pending authentication token is invalid or has expired.",
                       "invalid_pending_authentication_token")
    user = store.users.get(pending["user_id"])
    if user is None:
        raise ApiError(400, "The pending authentication token is invalid or has expired.",
                       "invalid_pending_authentication_token")
    check_authenticate_rate(store, user["email"])
    if pending["attempts"] >= MAX_CODE_ATTEMPTS:
        raise _fail(emu, "email_verification", user["email"], user, ip, ua,
                    ApiError(400, "Too many attempts for this code.", "one_time_code_too_many_attempts"))
    if not hmac.compare_digest(str(pending["code"]), code):
        pending["attempts"] += 1
        raise _fail(emu, "email_verification", user["email"], user, ip, ua,
                    ApiError(400, "The code is invalid.", "invalid_one_time_code"))
    del store.pending_authentications[pending_token]
    mark_verified(emu, user)
    emit_result(emu, "email_verification", user["email"], user, ip, ua)
    return user, pending


def mark_verified(emu: Emulator, user: Entity) -> None:
    """The user proved ownership of their email address."""
    if not user.get("email_verified"):
        user["email_verified"] = True
        serialize.touch(user)
        emu.emit("user.updated", serialize.user(user))


# ---- Magic Auth ---------------------------------------------------------------------------------------------
def _six_digits() -> str:
    return f"{secrets.randbelow(10**6):06d}"


def magic_auth_view(record: Entity, *, with_code: bool = True) -> Entity:
    """The MagicAuth object (the event payload leaves the code out)."""
    out = {k: record[k] for k in ("id", "user_id", "email", "expires_at", "created_at", "updated_at")}
    if with_code:
        out["code"] = record["code"]
    return {"object": "magic_auth", **out}


def create_magic_auth(emu: Emulator, email: str) -> Entity:
    """A one-time code for *email* (the user is created, unverified, when unknown: Magic Auth signs up)."""
    store = emu.store
    check_magic_auth_rate(store, email)
    user = store.user_by_email(email)
    if user is None:
        now = iso()
        user = {"id": new_id("user"), "email": email, "email_verified": False, "first_name": None,
                "last_name": None, "profile_picture_url": None, "external_id": None, "metadata": {},
                "last_sign_in_at": None, "locale": None, "created_at": now, "updated_at": now}
        store.users[user["id"]] = user
        emu.emit("user.created", serialize.user(user))
    for older in store.magic_auths.values():  # one live code per email, as WorkOS: a new code ends the others
        if older["email"].lower() == user["email"].lower():
            older["superseded"] = True
    now_dt = utcnow()
    record: Entity = {
        "id": new_id("magic_auth"), "user_id": user["id"], "email": user["email"], "code": _six_digits(),
        "expires_at": iso(now_dt + timedelta(seconds=CODE_TTL)), "created_at": iso(now_dt),
        "updated_at": iso(now_dt), "expires": time.time() + CODE_TTL, "used": False, "attempts": 0,
    }
    store.magic_auths[record["id"]] = record
    emu.emit("magic_auth.created", magic_auth_view(record, with_code=False))
    return record


def verify_magic_code(emu: Emulator, email: str, code: str, ip: str | None, ua: str | None,
                      org_id: str | None = None) -> Entity:
    """The user a Magic Auth *code* for *email* authenticates (its email becomes verified), or an error."""
    store = emu.store
    check_authenticate_rate(store, email)
    user = store.user_by_email(email)
    conns = sso_connections(store, email, org_id)
    if conns:
        raise _fail(emu, MAGIC_AUTH, email, user, ip, ua, sso_required(email, conns))
    mine = [r for r in store.magic_auths.values() if r["email"].lower() == email.strip().lower()]
    match = next((r for r in reversed(mine) if hmac.compare_digest(str(r["code"]), code)), None)
    latest = mine[-1] if mine else None
    error: ApiError | None = None
    if match is None:
        if latest is not None:
            latest["attempts"] += 1
        error = ApiError(400, "The code is invalid.", "invalid_one_time_code")
    elif match.get("superseded") and not match["used"]:
        error = ApiError(400, "The code is invalid.", "invalid_one_time_code")
    elif match["used"]:
        error = ApiError(400, "The code was already used.", "one_time_code_previously_used")
    elif match["expires"] < time.time():
        error = ApiError(400, "The code has expired.", "one_time_code_expired")
    elif match["attempts"] >= MAX_CODE_ATTEMPTS:
        error = ApiError(400, "Too many attempts for this code.", "one_time_code_too_many_attempts")
    if error is not None or match is None or user is None:
        raise _fail(emu, MAGIC_AUTH, email, user, ip, ua,
                    error or ApiError(400, "The code is invalid.", "invalid_one_time_code"))
    match["used"] = True
    mark_verified(emu, user)
    emit_result(emu, MAGIC_AUTH, email, user, ip, ua)
    return user


def sent_codes(store: Store, email: str) -> list[Entity]:
    """What the emulator would have emailed to *email*, newest first (control API)."""
    email = email.strip().lower()
    out: list[Entity] = [
        {"kind": "magic_auth", "id": r["id"], "email": r["email"], "code": r["code"], "expires_at": r["expires_at"],
         "created_at": r["created_at"], "used": r["used"]}
        for r in reversed(store.magic_auths.values()) if r["email"].lower() == email
    ]
    for tok, p in reversed(store.pending_authentications.items()):
        user = store.users.get(p.get("user_id") or "")
        if p.get("kind") == "email_verification" and user is not None and user["email"].lower() == email:
            out.append({"kind": "email_verification", "id": p["email_verification_id"], "email": user["email"],
                        "code": p["code"], "pending_authentication_token": tok, "created_at": p["created_at"],
                        "used": False})
    return sorted(out, key=lambda r: r["created_at"], reverse=True)
