"""WorkOS-shaped API errors."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error rendered as a WorkOS JSON error body ``{"message", "code", ...}``."""

    def __init__(self, status: int, message: str, code: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.extra = extra
        # a rate limit's window (authkit.py: 60 s)
        self.headers: dict[str, str] = {"Retry-After": "60"} if status == 429 else {}

    def body(self) -> dict[str, Any]:
        """Return the JSON body for this error."""
        out: dict[str, Any] = {"message": self.message}
        if self.code:
            out["code"] = self.code
        out.update(self.extra)
        return out


def not_found(kind: str, entity_id: str) -> ApiError:
    """404 ``entity_not_found`` for an unknown id."""
    return ApiError(404, f"{kind} not found: '{entity_id}'.", "entity_not_found", entity_id=entity_id)


def invalid_params(message: str, *fields: str) -> ApiError:
    """422 ``invalid_request_parameters`` naming the offending fields."""
    errors = [{"code": "invalid", "field": f} for f in fields]
    return ApiError(422, message, "invalid_request_parameters", errors=errors)


def oauth_error(error: str, description: str, status: int = 400) -> ApiError:
    """OAuth-style error (``{"error", "error_description"}``) with ``message``/``code`` mirrored."""
    return ApiError(status, description, error, error=error, error_description=description)


def unauthorized(message: str = "Unauthorized") -> ApiError:
    """401 for a missing/invalid API key."""
    return ApiError(401, message, "unauthorized")
