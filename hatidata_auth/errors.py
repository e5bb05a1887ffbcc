"""One error shape for every JSON answer (``{"error": {"code", "message", "details"}}``) and one error page for
people: the same error answers an API caller with JSON and a browser with a page (:func:`wants_html`)."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode

from flask import Flask, Response, g, jsonify, render_template, request
from sqlalchemy.exc import DBAPIError, OperationalError
from werkzeug.exceptions import HTTPException

from .services import db_conflicts

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5


class AppError(Exception):
    """A domain error with the HTTP status and machine-readable code it maps to."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None,
                 details: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status:
            self.status = status
        self.details = details or {}
        self.headers = headers or {}


class ServiceUnavailable(AppError):
    """A dependency (database, cache, WorkOS) is unreachable; the client should retry."""

    status = 503
    code = "service_unavailable"


def error_response(status: int, code: str, message: str, details: dict[str, Any] | None = None,
                   headers: dict[str, str] | None = None) -> Response:
    """Build the JSON error answer, carrying the request id."""
    body: dict[str, Any] = {"error": {"code": code, "message": message, "details": details or {}}}
    request_id = g.get("request_id") if g else None
    if request_id:
        body["error"]["request_id"] = request_id
    response = jsonify(body)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def is_connection_error(exc: BaseException) -> bool:
    """Whether *exc* means the database (or Redis) is unreachable, rather than a bug or a bad statement."""
    if isinstance(exc, OperationalError):
        return True
    if isinstance(exc, DBAPIError):
        return bool(exc.connection_invalidated)
    try:
        import redis
    except ImportError:  # pragma: no cover - redis is a dependency
        return False
    return isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError)


# What a person is told for each status, and the way forward offered (see ``docs/errors.md``).
PAGES: dict[int, tuple[str, str, str]] = {
    400: ("This request could not be used", "The page sent something we could not use.", "back"),
    401: ("Please sign in", "You need to sign in to see this page.", "sign_in"),
    403: ("You do not have access to this page", "Your account cannot use this page.", "ask_admin"),
    404: ("Page not found", "There is no page at this address. It may have moved, or the link may be mistyped.",
          "home"),
    405: ("This page cannot be used that way", "This address does not accept that kind of request.", "home"),
    409: ("This could not be done", "The change conflicts with the current state.", "back"),
    413: ("Too much data", "What was sent is larger than this page accepts.", "back"),
    422: ("Please check what you entered", "Some of what was sent is not valid.", "back"),
    429: ("Too many attempts", "Too many requests came from you in a short time.", "retry"),
    500: ("Something went wrong on our side", "The page failed because of a fault on our side, not anything you "
          "did. It has been logged.", "retry"),
    502: ("A service we rely on failed", "A service this page needs answered with an error.", "retry"),
    503: ("Service temporarily unavailable", "A service this page needs cannot be reached right now.", "retry"),
}
GENERIC_PAGE = ("This request could not be completed", "The page could not be shown.", "home")
"""Any status without its own entry: a 4xx keeps the message the error carries, with a way home."""


def _signed_in() -> Any:
    """The identity already resolved for this request (never resolved here: the error may be the database)."""
    found = request.environ.get("hatidata.identity") if request else None
    return found if getattr(found, "auth_type", None) == "session" else None


def html_error_page(status: int, code: str, message: str | None, details: dict[str, Any] | None = None) -> Response:
    """The error page for people: what happened, a way forward that can help, and the request id for support.

    *message* is the error's own explanation (``None`` when it has only the generic one); a 403 names the
    signed-in person's role and never offers to sign in again, which cannot give them a role they lack.
    """
    title, lead, forward = PAGES.get(status, GENERIC_PAGE)
    identity = _signed_in()
    if forward == "sign_in" and identity is not None:
        forward = "home"
    if forward == "ask_admin" and identity is None:
        forward = "home"
    login_url = (details or {}).get("login_url")
    safe_login_url = login_url if isinstance(login_url, str) and login_url.startswith("/auth/login?") else None
    return_to = request.path if request.method == "GET" and request.path.startswith("/") \
        and not request.path.startswith("//") else "/"
    body = render_template("error.html", title=title, lead=lead, message=message, status=status, code=code,
                           forward=forward, identity=identity, login_url=safe_login_url,
                           sign_in_url="/auth/login?" + urlencode({"return_to": return_to}),
                           retry_here=request.method == "GET", request_id=g.get("request_id") if g else None)
    return Response(body, status=status, mimetype="text/html")


def wants_html() -> bool:
    """Whether the error goes to a person: a browser asking for HTML first, outside the machine paths.

    No ``Accept`` at all, ``*/*``, JSON first, or a path under ``/api/``, ``/webhooks/``, ``/healthz``,
    ``/readyz`` or ``/metrics`` gets the JSON error shape.
    """
    if not request.accept_mimetypes.provided or _wants_json_path():
        return False
    return request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html"


def _wants_json_path() -> bool:
    return request.path.startswith(JSON_PATHS)


JSON_PATHS = ("/api/", "/webhooks/", "/readyz", "/healthz", "/metrics")


def _http_headers(exc: HTTPException) -> dict[str, str]:
    """The exception's own headers (``Allow`` of a 405, ``Retry-After``...), without its content type."""
    return {name: value for name, value in exc.get_headers() if name.lower() != "content-type"}


def register_error_handlers(app: Flask) -> None:
    """Answer HTTP and domain errors with the JSON error shape, or the error page to a browser (never Werkzeug's)."""

    @app.errorhandler(AppError)
    def handle_app_error(exc: AppError) -> Response:
        if wants_html():
            response = html_error_page(exc.status, exc.code, exc.message, exc.details)
            for name, value in exc.headers.items():
                response.headers[name] = value
            return response
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    def handle_unavailable(exc: Exception) -> Response:
        if not is_connection_error(exc):
            raise exc
        crossed = db_conflicts.conflict(exc) or ("lock timeout" if db_conflicts.waited_too_long(exc) else None)
        log.warning("%s on %s %s: %s", "rolled back by the database" if crossed else "dependency unavailable",
                    request.method, request.path, crossed or type(exc).__name__)
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        message = ("The change crossed a concurrent one and was rolled back; retry shortly." if crossed
                   else "A backing service is unreachable; retry shortly.")
        if wants_html():
            response = html_error_page(503, "service_unavailable", message if crossed else None)
            response.headers.update(headers)
            return response
        return error_response(503, "service_unavailable", message, headers=headers)

    app.register_error_handler(DBAPIError, handle_unavailable)
    app.register_error_handler(db_conflicts.KeyHeld, lambda exc: handle_app_error(
        ServiceUnavailable(exc.message, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})))
    try:
        import redis

        app.register_error_handler(redis.exceptions.ConnectionError, handle_unavailable)
        app.register_error_handler(redis.exceptions.TimeoutError, handle_unavailable)
    except ImportError:  # pragma: no cover
        pass

    @app.errorhandler(HTTPException)
    def handle_http_error(exc: HTTPException) -> Response | HTTPException:
        if exc.response is not None:  # abort(response): the view chose the answer itself
            return exc
        status = exc.code or 500
        code = (exc.name or "error").lower().replace(" ", "_")
        headers = _http_headers(exc)
        if wants_html():
            # Werkzeug's generic wording is replaced by the page's; a view's own description is kept.
            own = exc.description if exc.description != type(exc).description else None
            response = html_error_page(status, code, own)
            response.headers.update(headers)
            return response
        return error_response(status, code, exc.description or exc.name or "error", headers=headers)
