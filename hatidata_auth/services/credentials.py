"""Credentials' shared vocabulary: the 401 a bad credential answers, the 503 of unreachable keys, token hashes."""

from __future__ import annotations

import hashlib

from ..errors import AppError, ServiceUnavailable


class Unauthenticated(AppError):
    """The credentials presented are not (or no longer) valid: answer 401, clear the session cookie."""

    status = 401
    code = "unauthenticated"

    def __init__(self, message: str = "Authentication required.", *, reason: str = "invalid",
                 clear_cookie: bool = True) -> None:
        super().__init__(message, details={"reason": reason})
        self.reason = reason
        self.clear_cookie = clear_cookie


class SessionEnded(Unauthenticated):
    """The organization's access policy ended the session (``session_idle_timeout``, ``session_expired``)."""

    def __init__(self, code: str, message: str, *, login_url: str | None = None) -> None:
        super().__init__(message, reason=code)
        self.code = code
        if login_url is not None:  # where to sign in again (``session_expired``: a fresh authentication)
            self.details = {**(self.details or {}), "login_url": login_url}


class AddressNotAllowed(AppError):
    """The request comes from an address outside the organization's (or the key's) IP allowlist."""

    status = 403
    code = "ip_not_allowed"


class TokenExpired(Unauthenticated):
    """A correctly signed access token whose ``exp`` has passed (a cookie session may refresh it)."""

    def __init__(self) -> None:
        super().__init__("The access token has expired.", reason="expired")


class KeysUnavailable(ServiceUnavailable):
    """WorkOS's key set (JWKS) could not be fetched."""

    def __init__(self, detail: str) -> None:
        super().__init__("Cannot verify the session right now: WorkOS's signing keys (JWKS) are unreachable. "
                         "Retry shortly.", code="jwks_unavailable", details={"cause": detail},
                         headers={"Retry-After": "5"})


def token_hash(token: str) -> str:
    """The SHA-256 hex digest of a token (cache keys, stored API-key hashes)."""
    return hashlib.sha256(token.encode()).hexdigest()
