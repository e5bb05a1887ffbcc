"""One error shape for every JSON answer: ``{"error": {"code", "message", "details"}}``."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException


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


def _wants_json() -> bool:
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return request.path.startswith(("/api/", "/webhooks/", "/readyz", "/healthz")) or best == "application/json"


def register_error_handlers(app: Flask) -> None:
    """Answer HTTP and domain errors with the JSON error shape (HTML pages keep Flask's defaults)."""

    @app.errorhandler(AppError)
    def handle_app_error(exc: AppError) -> Response:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.errorhandler(HTTPException)
    def handle_http_error(exc: HTTPException) -> Response | HTTPException:
        if not _wants_json():
            return exc
        code = (exc.name or "error").lower().replace(" ", "_")
        return error_response(exc.code or 500, code, exc.description or exc.name or "error")
