"""One error shape for every JSON answer: ``{"error": {"code", "message", "details"}}``."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, g, jsonify, render_template, request
from sqlalchemy.exc import DBAPIError, OperationalError
from werkzeug.exceptions import HTTPException

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


def html_error_page(status: int, code: str, message: str) -> Response:
    """A plain error page for browsers, carrying the request id to quote to support."""
    request_id = g.get("request_id") if g else None
    title = "Service temporarily unavailable" if status == 503 else "Something went wrong"
    body = render_template("error.html", title=title, message=message, status=status, code=code,
                           request_id=request_id)
    return Response(body, status=status, mimetype="text/html")


def _wants_html() -> bool:
    """A browser asked explicitly for HTML (no ``Accept`` at all, or an API path, gets JSON)."""
    if not request.accept_mimetypes.provided or _wants_json_path():
        return False
    return request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html"


def _wants_json_path() -> bool:
    return request.path.startswith(("/api/", "/webhooks/", "/readyz", "/healthz", "/metrics"))


def _wants_json() -> bool:
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return request.path.startswith(("/api/", "/webhooks/", "/readyz", "/healthz")) or best == "application/json"


def register_error_handlers(app: Flask) -> None:
    """Answer HTTP and domain errors with the JSON error shape (HTML pages keep Flask's defaults)."""

    @app.errorhandler(AppError)
    def handle_app_error(exc: AppError) -> Response:
        if _wants_html():
            response = html_error_page(exc.status, exc.code, exc.message)
            for name, value in exc.headers.items():
                response.headers[name] = value
            return response
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    def handle_unavailable(exc: Exception) -> Response:
        if not is_connection_error(exc):
            raise exc
        log.warning("dependency unavailable on %s %s: %s", request.method, request.path,
                    type(exc).__name__)
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        message = "A backing service is unreachable; retry shortly."
        if _wants_html():
            response = html_error_page(503, "service_unavailable", message)
            response.headers.update(headers)
            return response
        return error_response(503, "service_unavailable", message, headers=headers)

    app.register_error_handler(DBAPIError, handle_unavailable)
    try:
        import redis

        app.register_error_handler(redis.exceptions.ConnectionError, handle_unavailable)
        app.register_error_handler(redis.exceptions.TimeoutError, handle_unavailable)
    except ImportError:  # pragma: no cover
        pass

    @app.errorhandler(HTTPException)
    def handle_http_error(exc: HTTPException) -> Response | HTTPException:
        if not _wants_json():
            return exc
        code = (exc.name or "error").lower().replace(" ", "_")
        return error_response(exc.code or 500, code, exc.description or exc.name or "error")
