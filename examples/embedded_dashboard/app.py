"""A separate, small dashboard that embeds HatiData Auth's login with ``HatiDataAuth(app)``.

Run it against the same database and WorkOS settings as HatiData Auth::

    DATABASE_URL=... SECRET_KEY=... HATIDATA_COOKIE_KEY=... WORKOS_API_KEY=... WORKOS_CLIENT_ID=... \\
    WORKOS_BASE_URL=http://127.0.0.1:4100 HATIDATA_PUBLIC_URL=http://127.0.0.1:5000 \\
    flask --app examples.embedded_dashboard.app:create_dashboard run

(``HATIDATA_PUBLIC_URL`` is where the dashboard is served: its redirect URIs are built from it, never from
the request's ``Host``.)

It gets ``/auth/login``, ``/auth/callback``, ``/auth/logout``, ``/auth/organizations``,
``/auth/switch-organization``, the documented ``/api/v1`` API (``/api/v1/me`` and the rest), the
``current_identity`` proxy and the decorators.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask, jsonify, render_template_string
from flask.typing import ResponseReturnValue

from hatidata_auth import HatiDataAuth
from hatidata_auth.identity import current_identity, login_required, require_permission, require_role

PAGE = """<!doctype html>
<title>HatiData dashboard</title>
<h1>Dashboard</h1>
<p id="who">Signed in as {{ identity.email }} ({{ identity.role }})</p>
<p id="org">Organization {{ identity.organization_id }}</p>
<form method="post" action="/auth/logout">
  <input type="hidden" name="csrf_token" value="{{ csrf_token() }}">
  <button id="logout" type="submit">Sign out</button>
</form>
"""

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
    HatiDataAuth(app)

    @app.get("/")
    @login_required
    def home() -> ResponseReturnValue:
        return render_template_string(PAGE, identity=current_identity)

    @app.get("/admin")
    @require_role("admin")
    def admin() -> ResponseReturnValue:
        return jsonify(message="only admins see this")

    @app.get("/data")
    @require_permission("data:read")
    def data() -> ResponseReturnValue:
        return jsonify(rows=[1, 2, 3], caller=current_identity.to_json())

    return app
