"""Per-request plumbing: a request id on every request and response, and security headers."""

from __future__ import annotations

import re
import uuid

from flask import Flask, Response, g, request

from .context import RequestInfo

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{8,64}$")


def request_info() -> RequestInfo:
    """Describe the current request for services and audit events."""
    return RequestInfo(
        ip_address=request.remote_addr,
        user_agent=request.headers.get("User-Agent"),
        request_id=g.get("request_id"),
    )


def register_request_hooks(app: Flask) -> None:
    """Assign request ids and add security headers."""

    @app.before_request
    def assign_request_id() -> None:
        incoming = request.headers.get("X-Request-ID", "")
        # Only accept an upstream id of a safe shape: it ends up in logs and audit events.
        g.request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else uuid.uuid4().hex

    @app.after_request
    def add_headers(response: Response) -> Response:
        response.headers.setdefault("X-Request-ID", g.get("request_id", ""))
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if response.mimetype == "text/html":
            response.headers.setdefault(
                "Content-Security-Policy",
                "default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self'; "
                "img-src 'self' data:; frame-ancestors 'none'; form-action 'self' http: https:",
            )
        if app.config.get("SESSION_COOKIE_SECURE"):
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
        return response
