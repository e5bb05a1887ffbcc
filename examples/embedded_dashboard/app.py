"""A separate, small dashboard that embeds HatiData Auth's login with ``HatiDataAuth(app)``.

Run it against the same database and WorkOS settings as HatiData Auth::

    DATABASE_URL=... SECRET_KEY=... HATIDATA_COOKIE_KEY=... WORKOS_API_KEY=... WORKOS_CLIENT_ID=... \\
    WORKOS_BASE_URL=http://127.0.0.1:4100 HATIDATA_PUBLIC_URL=http://127.0.0.1:5000 \\
    flask --app examples.embedded_dashboard.app:create_dashboard run

(``HATIDATA_PUBLIC_URL`` is where the dashboard is served: its redirect URIs are built from it, never from
the request's ``Host``.)

It gets ``/auth/login``, ``/auth/callback``, ``/auth/logout``, ``/auth/organizations``,
``/auth/switch-organization``, the documented ``/api/v1`` API (``/api/v1/me`` and the rest), the
``current_identity`` proxy and the decorators. Its own pages (``/``, ``/admin``) are HTML; a refusal a browser
meets (a viewer at ``/admin``) is a page saying why, with a way back, while ``/data`` and ``/api/…`` answer JSON.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, jsonify, render_template_string
from flask.typing import ResponseReturnValue

from hatidata_auth import HatiDataAuth
from hatidata_auth.errors import AppError, error_response, wants_html
from hatidata_auth.identity import get_identity, login_required, require_permission, require_role

LAYOUT = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{{ title }} · HatiData dashboard</title>
  <style>body { font: 16px/1.5 system-ui, sans-serif; margin: 0 auto; max-width: 40rem; padding: 1rem 1.25rem; }
         a, button { font: inherit; } :focus-visible { outline: 3px solid #f5a623; outline-offset: 2px; }</style>
</head>
<body>
<header><a href="/">HatiData dashboard</a></header>
<main>
{{ body|safe }}
</main>
</body>
</html>
"""

HOME = """<h1>Dashboard</h1>
<p id="who">Signed in as {{ identity.email }} ({{ identity.role }})</p>
<p id="org">Organization {{ identity.organization_id }}</p>
<ul>
  {% if identity.role == "admin" %}<li><a href="/admin">Administration</a></li>{% endif %}
  <li><a href="/data">Your data (JSON API)</a></li>
</ul>
<form method="post" action="/auth/logout">
  <input type="hidden" name="csrf_token" value="{{ csrf_token() }}">
  <button id="logout" type="submit">Sign out</button>
</form>
"""

ADMIN = """<h1>Administration</h1>
<p id="admin">Only admins see this page; you are {{ identity.email }} ({{ identity.role }}).</p>
<p><a href="/">Back to the dashboard</a></p>
"""

REFUSED = """<h1 id="refused">{{ title }}</h1>
<p>{{ message }}</p>
{% if identity %}<p>You are signed in as {{ identity.email }} with the {{ identity.role or "no" }} role; ask an admin of
your organization if you need access.</p>{% endif %}
<p><a href="/">Back to the dashboard</a></p>
<p><small>Error {{ status }} ({{ code }})</small></p>
"""


def render(title: str, body: str, **context: Any) -> str:
    """One of the dashboard's pages in its layout (*context* for *body*, which may use ``title`` too)."""
    return render_template_string(LAYOUT, title=title, body=render_template_string(body, title=title, **context))


def refused(exc: AppError) -> Response:
    """HatiData Auth's refusals: a page for a person's browser, the JSON error shape for API callers."""
    if not wants_html():
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)
    title = "You do not have access to this page" if exc.status == 403 else "This could not be done"
    page = render(title, REFUSED, message=exc.message, status=exc.status, code=exc.code,
                  identity=get_identity() if exc.status == 403 else None)
    return Response(page, status=exc.status, headers=exc.headers, mimetype="text/html")

ENVIRONMENT = {
    "DATABASE_URL": "SQLALCHEMY_DATABASE_URI", "SECRET_KEY": "SECRET_KEY", "HATIDATA_COOKIE_KEY": "HATIDATA_COOKIE_KEY",
    "WORKOS_API_KEY": "WORKOS_API_KEY", "WORKOS_CLIENT_ID": "WORKOS_CLIENT_ID", "WORKOS_BASE_URL": "WORKOS_BASE_URL",
    "REDIS_URL": "REDIS_URL", "HATIDATA_PUBLIC_URL": "HATIDATA_PUBLIC_URL",
}


def create_dashboard(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the dashboard; *config* wins over the environment."""
    app = Flask(__name__)
    app.config.update({key: os.environ[var] for var, key in ENVIRONMENT.items() if os.environ.get(var)})
    app.config.update(config or {})
    if app.config.get("REDIS_URL"):
        app.config.setdefault("CACHE_TYPE", "RedisCache")
        app.config.setdefault("CACHE_REDIS_URL", app.config["REDIS_URL"])
        app.config.setdefault("RATELIMIT_STORAGE_URI", app.config["REDIS_URL"])
    app.register_error_handler(AppError, refused)  # before HatiDataAuth(app), which keeps a host's own handler
    HatiDataAuth(app)

    @app.get("/")
    @login_required
    def home() -> ResponseReturnValue:
        return render("Dashboard", HOME, identity=get_identity())

    @app.get("/admin")
    @require_role("admin")
    def admin() -> ResponseReturnValue:
        return render("Administration", ADMIN, identity=get_identity())

    @app.get("/data")
    @require_permission("data:read")
    def data() -> ResponseReturnValue:
        identity = get_identity()
        assert identity is not None  # require_permission let the request in
        return jsonify(rows=[1, 2, 3], caller=identity.to_json())

    return app
