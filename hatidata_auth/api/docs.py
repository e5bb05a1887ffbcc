"""``/api/docs``: Swagger UI for the OpenAPI document, served locally from the ``swagger-ui-bundle`` package."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, abort, send_from_directory

bp = Blueprint("hatidata_api_docs", __name__, url_prefix="/api/docs")

_ASSETS = ("swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "favicon-32x32.png")

PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>HatiData Auth Admin API</title>
  <link rel="stylesheet" href="/api/docs/assets/swagger-ui.css">
  <link rel="icon" type="image/png" href="/api/docs/assets/favicon-32x32.png">
</head>
<body>
  <noscript>The OpenAPI document is at <a href="/api/openapi.json">/api/openapi.json</a>.</noscript>
  <div id="swagger-ui"></div>
  <script src="/api/docs/assets/swagger-ui-bundle.js"></script>
  <script src="/api/docs/assets/swagger-ui-standalone-preset.js"></script>
  <script src="/api/docs/init.js"></script>
</body>
</html>
"""

INIT = """// "Try it out" with the dashboard's session cookie: unsafe methods carry the CSRF token the API requires of
// cookie callers (fetched fresh from /auth/csrf, bound to this browser's session); bearer callers ignore it.
var UNSAFE = ["POST", "PUT", "PATCH", "DELETE"];

function withCsrfToken(request) {
  if (UNSAFE.indexOf(String(request.method || "GET").toUpperCase()) < 0) {
    return request;
  }
  return fetch("/auth/csrf", {credentials: "same-origin", headers: {"Accept": "application/json"}})
    .then(function (response) { return response.json(); })
    .then(function (body) {
      request.headers = request.headers || {};
      request.headers["X-CSRFToken"] = body.csrf_token;
      return request;
    });
}

window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/api/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    withCredentials: true,
    requestInterceptor: withCsrfToken,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "BaseLayout"
  });
});
"""


def _assets_dir() -> Path | None:
    try:
        import swagger_ui_bundle
    except ImportError:  # pragma: no cover - the package is a runtime dependency
        return None
    return Path(swagger_ui_bundle.swagger_ui_path)


@bp.get("")
def page() -> Response:
    """The interactive documentation page."""
    return Response(PAGE, mimetype="text/html")


@bp.get("/init.js")
def init_script() -> Response:
    """Starts Swagger UI (a file, not inline: the CSP allows scripts from this origin only)."""
    return Response(INIT, mimetype="application/javascript")


@bp.get("/assets/<name>")
def asset(name: str) -> Response:
    """Swagger UI's own files."""
    folder = _assets_dir()
    if folder is None or name not in _ASSETS:
        abort(404)
    return send_from_directory(folder, name, max_age=3600)
