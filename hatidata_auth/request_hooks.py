"""Per-request plumbing: a request id on every request and response, security headers, and no caching of
authenticated responses."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, g, request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from flask.wrappers import Request

from .causes import RequestInfo
from .config import DEFAULTS
from .random_ids import uuid4_hex

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{8,64}$")


def request_info() -> RequestInfo:
    """Describe the current request for services and audit events."""
    return RequestInfo(
        ip_address=request.remote_addr,
        user_agent=request.headers.get("User-Agent"),
        request_id=g.get("request_id"),
    )


PRIVATE_VARY = ("Cookie", "Authorization")
_PRIVATE_VARY_HEADER = ", ".join(PRIVATE_VARY)
WORKOS_DEFAULT_ORIGIN = "https://api.workos.com"


def _carries_credentials(response: Response) -> bool:
    req = request._get_current_object()  # type: ignore[attr-defined]
    environ = req.environ
    if environ.get("hatidata.credential") or environ.get("HTTP_AUTHORIZATION"):
        return True
    cookie = str(current_app.config.get("HATIDATA_COOKIE_NAME") or DEFAULTS["HATIDATA_COOKIE_NAME"])
    if environ.get("HTTP_COOKIE") and cookie in req.cookies:  # no Cookie header: nothing to parse
        return True
    return any(value.startswith(f"{cookie}=") for value in response.headers.getlist("Set-Cookie"))


def mark_private(response: Response) -> Response:
    """``Cache-Control: no-store`` and ``Vary: Cookie, Authorization`` (merged) on every response to a request
    that presented a credential (session cookie, JWT or API key) or that sets or clears the session cookie: no
    browser or shared cache may keep or hand on a caller's data."""
    if _carries_credentials(response):
        headers = response.headers
        present = {name.lower() for name, _ in headers}  # read once (each test or set scans them all)
        if "cache-control" in present:
            headers["Cache-Control"] = "no-store"
        else:
            headers.add("Cache-Control", "no-store")
        if "vary" in present:
            response.vary.update(PRIVATE_VARY)
        else:  # the usual case, set as the merge would set it without parsing and rewriting a header set
            headers.add("Vary", _PRIVATE_VARY_HEADER)
    return response


def origin(url: str) -> str:
    """``scheme://host[:port]`` of *url*."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def form_action_sources(config: Mapping[str, Any]) -> str:
    """CSP ``form-action``: this site, the WorkOS origin (the logout and login forms end there), and the
    origins of ``HATIDATA_CSP_FORM_ACTION`` (space-separated: e.g. an AuthKit domain WorkOS redirects on to)."""
    sources = ["'self'", origin(str(config.get("WORKOS_BASE_URL") or WORKOS_DEFAULT_ORIGIN))]
    sources += [origin(extra) for extra in str(config.get("HATIDATA_CSP_FORM_ACTION") or "").split()]
    return " ".join(dict.fromkeys(sources))


SECURITY_HEADERS = (("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY"),
                    ("Referrer-Policy", "same-origin"))
HSTS = ("Strict-Transport-Security", "max-age=31536000; includeSubDomains")


def add_missing(response: Response, headers: list[tuple[str, str]]) -> None:
    """Add each of *headers* (name, value) that *response* does not carry yet (a view's own value wins), reading
    the response's headers once (``Headers.setdefault`` scans them two or three times per name)."""
    present = {name.lower() for name, _ in response.headers}
    for name, value in headers:
        if name.lower() not in present:
            response.headers.add(name, value)


class CookieSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, opened as Flask opens it but without building the cookie's signer for a
    request that carries no session cookie (webhooks, bearer and API-key calls, health checks): Flask builds it
    on every request, about a tenth of a cookie-less request's framework cost."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if app.secret_key and not request.cookies.get(self.get_cookie_name(app)):
            return self.session_class()
        return super().open_session(app, request)


def register_request_hooks(app: Flask) -> None:
    """Assign request ids and add security headers; open Flask's session cookie only when there is one; end the
    request's uncommitted transaction with it."""
    app.session_interface = CookieSessionInterface()
    csp = ("default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self'; img-src 'self' data:; "
           f"frame-ancestors 'none'; form-action {form_action_sources(app.config)}")

    @app.before_request
    def assign_request_id() -> None:
        incoming = request.headers.get("X-Request-ID", "")
        # Only accept an upstream id of a safe shape: it ends up in logs and audit events.
        g.request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else uuid4_hex()

    @app.after_request
    def add_headers(response: Response) -> Response:
        wanted = [("X-Request-ID", g.get("request_id", "")), *SECURITY_HEADERS]
        if response.mimetype == "text/html":
            wanted.append(("Content-Security-Policy", csp))
        if app.config.get("SESSION_COOKIE_SECURE"):
            wanted.append(HSTS)
        add_missing(response, wanted)
        return response

    @app.teardown_request
    def end_open_transaction(_error: BaseException | None) -> None:
        # What a request did not commit (a refusal after a locking read) is rolled back as it ends, releasing its
        # locks (on SQLite, the database's write turn) even where the application context outlives the request:
        # an embedding host's, or a test's.
        from .extensions import db

        if db.session.registry.has():
            db.session.rollback()
