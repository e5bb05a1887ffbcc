"""The one translation of the WorkOS SDK's errors into ours.

Every caller catches these, never the SDK's classes:

- :class:`WorkOSUnavailable`: no usable answer (connection refused, timeout, network error, 5xx, 429 rate
  limit). Transient everywhere: keep state and retry later.
- :class:`WorkOSNotFound`: WorkOS answered 404.
- :class:`WorkOSRejected`: WorkOS answered another 4xx; ``workos_code`` carries its ``code`` (or OAuth ``error``).
  :class:`OrganizationSelectionRequired` is the rejection of a login whose user must choose an organization.
- :class:`WorkOSFailure` itself (none of the three): the SDK failed without asking WorkOS (its configuration).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from workos._errors import (
    APIError,
    ConfigurationError,
    OrganizationSelectionRequiredError,
    RateLimitExceededError,
    WorkOSConnectionError,
    WorkOSError,
    WorkOSTimeoutError,
)
from workos._http import TransportConnectError, TransportError, TransportTimeout

from ..errors import AppError


class WorkOSFailure(AppError):
    """WorkOS did not do what was asked.

    ``http_status``: WorkOS's HTTP status (``None``: no answer); ``workos_code``: WorkOS's ``code`` or ``error``
    (``None`` when it sent none); ``request_id``: WorkOS's ``X-Request-ID``; ``reason``: a short machine-readable
    cause (``connection``, ``timeout``, ``network``, ``http_<status>``, WorkOS's code); ``transient``: whether
    the same call may succeed later.
    """

    status = 502
    code = "workos_error"
    transient = False

    def __init__(self, message: str, *, reason: str, http_status: int | None = None, workos_code: str | None = None,
                 request_id: str | None = None) -> None:
        super().__init__(message, details={"reason": reason})
        self.reason = reason
        self.http_status = http_status
        self.workos_code = workos_code
        self.request_id = request_id


class WorkOSUnavailable(WorkOSFailure):
    """WorkOS is unreachable, slow, failing (5xx) or rate-limiting us (429); ``retry_after`` in seconds or ``None``."""

    status = 503
    code = "workos_unavailable"
    transient = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after
        self.headers = {"Retry-After": str(max(1, round(retry_after or 5)))}


class WorkOSNotFound(WorkOSFailure):
    """WorkOS does not know the object asked for (404)."""

    status = 404
    code = "not_found"


class WorkOSRejected(WorkOSFailure):
    """WorkOS refused the request (a 4xx other than 404 and 429)."""

    code = "workos_rejected"


class OrganizationSelectionRequired(WorkOSRejected):
    """The user belongs to several organizations and must pick one: ``organization_ids`` (WorkOS's, in WorkOS's
    order) and the ``pending_authentication_token`` to continue the login with."""

    def __init__(self, message: str, *, organization_ids: tuple[str, ...], pending_authentication_token: str | None,
                 **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.organization_ids = organization_ids
        self.pending_authentication_token = pending_authentication_token


def _organization_ids(organizations: Any) -> tuple[str, ...]:
    ids = (o.get("id") if isinstance(o, Mapping) else getattr(o, "id", None) for o in organizations or ())
    return tuple(str(i) for i in ids if i)


def _api_error(exc: APIError) -> WorkOSFailure:
    status = exc.status_code or 0
    code = exc.code or exc.error
    fields: dict[str, Any] = {"http_status": exc.status_code, "workos_code": code, "request_id": exc.request_id}
    if isinstance(exc, RateLimitExceededError) or status == 429:
        return WorkOSUnavailable(exc.message, reason="http_429", retry_after=getattr(exc, "retry_after", None),
                                 **fields)
    if status >= 500 or status == 0:
        return WorkOSUnavailable(exc.message, reason=f"http_{status}", **fields)
    if status == 404:
        return WorkOSNotFound(exc.message, reason=str(code or "http_404"), **fields)
    if isinstance(exc, OrganizationSelectionRequiredError):
        return OrganizationSelectionRequired(
            exc.message, reason=str(code or "organization_selection_required"),
            organization_ids=_organization_ids(exc.organizations),
            pending_authentication_token=exc.pending_authentication_token, **fields)
    return WorkOSRejected(exc.message, reason=str(code or f"http_{status}"), **fields)


def translate(exc: BaseException) -> WorkOSFailure | None:
    """Our error for an SDK (or SDK transport) error; ``None`` for anything else (a bug, a database error)."""
    if isinstance(exc, WorkOSFailure):
        return exc
    if isinstance(exc, APIError):
        return _api_error(exc)
    if isinstance(exc, ConfigurationError):
        return WorkOSFailure(exc.message, reason="configuration")
    if isinstance(exc, WorkOSTimeoutError | TransportTimeout):
        return WorkOSUnavailable(str(exc), reason="timeout")
    if isinstance(exc, WorkOSConnectionError | TransportConnectError):
        return WorkOSUnavailable(str(exc), reason="connection")
    if isinstance(exc, WorkOSError | TransportError):  # "Network error", "Max retries exceeded"
        return WorkOSUnavailable(str(exc), reason="network")
    return None


@contextmanager
def translate_errors() -> Iterator[None]:
    """Raise our :class:`WorkOSFailure` subclasses instead of the SDK's errors inside the block.

    Usable as ``with translate_errors():`` or as a decorator ``@translate_errors()`` (not on generators).
    Errors that are not the SDK's pass through unchanged.
    """
    try:
        yield
    except Exception as exc:
        translated = translate(exc)
        if translated is None or translated is exc:
            raise
        raise translated from exc
