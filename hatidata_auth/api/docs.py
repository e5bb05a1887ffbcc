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
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>HatiData Auth Admin API</title>
  <link rel="stylesheet" href="/api/docs/assets/swagger-ui.css">
  <link rel="stylesheet" href="/api/docs/page.css">
  <link rel="icon" type="image/png" href="/api/docs/assets/favicon-32x32.png">
</head>
<body>
  <header class="hd-top"><a href="/">HatiData</a></header>
  <main id="main">
    <h1 class="hd-title">Admin API (JSON) for developers</h1>
    <p class="hd-lead">Every call is scoped to your organization. "Try it out" uses your browser's session; or
      paste an API key under "Authorize". The OpenAPI document is at
      <a href="/api/openapi.json">/api/openapi.json</a>.</p>
    <div id="swagger-ui"></div>
  </main>
  <script src="/api/docs/assets/swagger-ui-bundle.js"></script>
  <script src="/api/docs/assets/swagger-ui-standalone-preset.js"></script>
  <script src="/api/docs/init.js"></script>
</body>
</html>
"""

# Swagger UI's own colours darkened to WCAG AA contrast, and nothing wider than a 390 px screen.
STYLE = """body { margin: 0; font-family: system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2328; }
.hd-top { border-bottom: 1px solid #d0d7de; padding: .9rem 1.25rem; }
.hd-top a { color: #1f2328; font-weight: 600; text-decoration: none; }
.hd-title { font-size: 1.6rem; margin: 1.5rem 1.25rem .5rem; }
.hd-lead { margin: 0 1.25rem; max-width: 60rem; overflow-wrap: anywhere; }
.hd-lead a { color: #0b5cad; }
:focus-visible { outline: 3px solid #f5a623; outline-offset: 2px; }
.swagger-ui .info .title small { background: #57606a; }
.swagger-ui .info .title small.version-stamp { background: #1a7f37; }
.swagger-ui .url, .swagger-ui .info a { color: #0b5cad; }
.swagger-ui .btn.authorize { color: #1a7f37; border-color: #1a7f37; }
.swagger-ui .btn.authorize span { color: #1a7f37; }
.swagger-ui .btn.authorize svg { fill: #1a7f37; }
.swagger-ui .opblock.opblock-get .opblock-summary-method { background: #0b5cad; }
.swagger-ui .opblock.opblock-post .opblock-summary-method { background: #1a7f37; }
.swagger-ui .opblock.opblock-put .opblock-summary-method { background: #9a5b00; }
.swagger-ui .opblock.opblock-patch .opblock-summary-method { background: #0f6e64; }
.swagger-ui .opblock.opblock-delete .opblock-summary-method { background: #b3261e; }
.swagger-ui .wrapper { padding: 0 1.25rem; box-sizing: border-box; }
.swagger-ui, .swagger-ui .opblock .opblock-summary-path { overflow-wrap: anywhere; word-break: break-word; }
.swagger-ui .opblock .opblock-summary-path { max-width: 100%; }
.swagger-ui .scheme-container { padding: 1rem 0; }
@media (max-width: 600px) {
  .swagger-ui .opblock .opblock-summary { flex-wrap: wrap; }
  .swagger-ui .opblock .opblock-summary-description { flex-basis: 100%; }
  .swagger-ui .info .title { font-size: 1.4rem; }
  .swagger-ui .auth-wrapper, .swagger-ui .schemes { flex-wrap: wrap; }
}
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

// Swagger UI labels each operation's button with its method and path only, though the button also shows the
// summary (WCAG 2.5.3, label in name): its content names it. The servers menu gets a label.
function labelControls() {
  document.querySelectorAll(".opblock-summary-control[aria-label]").forEach(function (button) {
    button.removeAttribute("aria-label");
  });
  document.querySelectorAll(".servers select:not([aria-label])").forEach(function (select) {
    select.setAttribute("aria-label", "Server");
  });
}

window.addEventListener("load", function () {
  new MutationObserver(labelControls).observe(document.getElementById("swagger-ui"), {childList: true, subtree: true});
  window.ui = SwaggerUIBundle({
    url: "/api/openapi.json",
    dom_id: "#swagger-ui",
    // No deep links: Swagger UI renders them as links inside each operation's button (nested controls).
    deepLinking: false,
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


@bp.get("/page.css")
def stylesheet() -> Response:
    """The page's own styles (a file, as the scripts: the CSP allows styles from this origin)."""
    return Response(STYLE, mimetype="text/css")


@bp.get("/assets/<name>")
def asset(name: str) -> Response:
    """Swagger UI's own files."""
    folder = _assets_dir()
    if folder is None or name not in _ASSETS:
        abort(404)
    return send_from_directory(folder, name, max_age=3600)
