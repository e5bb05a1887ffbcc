"""The login flow's moving parts: safe ``return_to``, signed single-use ``state``, PKCE."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from itsdangerous import BadSignature, URLSafeTimedSerializer

from ..errors import AppError

STATE_SALT = "hatidata-auth-login-state"
BROWSER_KEY = "hd_login_nonces"
MAX_PENDING_LOGINS = 5


class InvalidState(AppError):
    """The callback's ``state`` is missing, forged, expired, reused or from another browser."""

    status = 400
    code = "invalid_state"


def safe_return_to(value: str | None) -> str:
    """A same-site relative path, or ``/`` (no scheme, no host, no ``//`` or backslash tricks)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or any(ord(c) < 32 for c in value):
        return "/"
    return value


@dataclass(frozen=True, slots=True)
class LoginState:
    """What the signed ``state`` carries."""

    nonce: str
    return_to: str
    remember: bool
    # a re-authentication (step-up) of this (user id, organization id): the sign-in must be theirs, there
    reauthenticating: tuple[str, str] | None = None
    replaces: str | None = None  # the session a re-authentication replaces (ended once the new one is recorded)


def serializer(secret_key: str) -> URLSafeTimedSerializer:
    """The signer of ``state`` values."""
    return URLSafeTimedSerializer(secret_key, salt=STATE_SALT)


def dump_state(secret_key: str, state: LoginState) -> str:
    """Sign a state."""
    data: dict[str, Any] = {"n": state.nonce, "r": state.return_to, "m": state.remember}
    if state.reauthenticating is not None:
        data["a"] = list(state.reauthenticating)
    if state.replaces is not None:
        data["s"] = state.replaces
    return serializer(secret_key).dumps(data)


def load_state(secret_key: str, value: str | None, max_age: int) -> LoginState:
    """Verify a state's signature and age."""
    if not value:
        raise InvalidState("The login response carries no state.")
    try:
        data: Any = serializer(secret_key).loads(value, max_age=max_age)
    except BadSignature as exc:  # includes SignatureExpired
        raise InvalidState("The login state is invalid or expired; start again.") from exc
    if not isinstance(data, dict) or not isinstance(data.get("n"), str):
        raise InvalidState("The login state is invalid; start again.")
    again = data.get("a")
    reauthenticating = (str(again[0]), str(again[1])) if isinstance(again, list) and len(again) == 2 else None
    return LoginState(nonce=data["n"], return_to=safe_return_to(data.get("r")), remember=bool(data.get("m")),
                      reauthenticating=reauthenticating,
                      replaces=str(data["s"]) if isinstance(data.get("s"), str) and reauthenticating else None)
