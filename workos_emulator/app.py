"""Flask application factory: request ids, API-key auth, fault injection, WorkOS-shaped errors."""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from . import authkit_session
from .errors import ApiError, unauthorized
from .lifecycle import load_state, reset_emulator
from .persistence import READ_ONLY
from .state import EXTENSION_KEY, Emulator, EmulatorConfig
from .webhooks import WebhookSettings

#: Paths reachable without ``Authorization: Bearer <api key>`` (browser flows, JWKS, token endpoints).
PUBLIC_PREFIXES = (
    "/sso/authorize",
    "/sso/jwks/",
    "/sso/logout",
    "/sso/token",
    "/sso/profile",
    "/user_management/authorize",
    "/user_management/authenticate",
    "/user_management/sessions/logout",
    "/login/",
    "/hosted/",
    "/portal/",
    "/_emulator/health",
    "/static/",
)
PRIVATE_PATHS = frozenset({"/sso/logout/authorize"})


def create_app(
    seed_path: str | None = None,
    *,
    data_dir: str | None = None,
    api_key: str = "sk_test_emulator",
    client_id: str = "client_emulator",
    access_token_ttl: int = 300,
    public_url: str | None = None,
    session_ttl: int = 7 * 24 * 3600,
    refresh_grace_seconds: float = 0.0,
    webhook_retry_base: float = 0.5,
    webhook_max_attempts: int = 8,
) -> Flask:
    """Build the emulator app: state saved in ``data_dir`` (else ``seed_path``) and the persisted signing key."""
    app = Flask("workos_emulator")
    app.json.sort_keys = False  # type: ignore[attr-defined]
    config = EmulatorConfig(
        seed_path=seed_path,
        data_dir=data_dir or os.path.join("instance", "emulator"),
        api_key=api_key,
        client_id=client_id,
        access_token_ttl=access_token_ttl,
        public_url=public_url,
        session_ttl=session_ttl,
        refresh_grace_seconds=refresh_grace_seconds,
    )
    emu = Emulator(config, WebhookSettings(retry_base_s=webhook_retry_base, max_attempts=webhook_max_attempts))
    load_state(emu, seed_path)
    app.extensions[EXTENSION_KEY] = emu

    from .api import register_api
    from .api.authkit_methods import control_bp as authkit_control_bp
    from .continuations import bp as continuations_bp
    from .control import bp as control_bp
    from .control_directory import bp as control_directory_bp
    from .hosted import bp as hosted_bp
    from .hosted_authkit import bp as hosted_authkit_bp
    from .idp_failures import bp as idp_failures_bp
    from .signing_certs import bp as signing_certs_bp
    from .signing_certs import control_bp as signing_control_bp

    register_api(app)
    app.register_blueprint(hosted_bp)
    app.register_blueprint(hosted_authkit_bp)
    app.register_blueprint(control_bp)
    app.register_blueprint(control_directory_bp)
    app.register_blueprint(continuations_bp)
    app.register_blueprint(authkit_control_bp)
    app.register_blueprint(idp_failures_bp)
    app.register_blueprint(signing_certs_bp)
    app.register_blueprint(signing_control_bp)

    @app.before_request
    def _before() -> Any:
        g.request_id = str(uuid.uuid4())
        path = request.path
        if not path.startswith("/_emulator/"):
            fault = emu.faults.take(request.method, path)
            if fault is not None:
                if fault.delay_ms:
                    time.sleep(fault.delay_ms / 1000)
                if fault.status:
                    resp = jsonify(fault.error_body())
                    resp.status_code = fault.status
                    resp.headers["x-emulator-fault"] = str(fault.id)
                    return resp
        if path == "/" or (path.startswith(PUBLIC_PREFIXES) and path not in PRIVATE_PATHS):
            return None
        auth = request.headers.get("Authorization", "")
        if auth != f"Bearer {config.api_key}":
            raise unauthorized("Missing or invalid API key." if auth else "No API key provided.")
        return None

    @app.after_request
    def _after(resp: Response) -> Response:
        authkit_session.remember(emu, resp)  # before saving: the browser's AuthKit session is state too
        _save(app, emu)
        resp.headers["x-request-id"] = getattr(g, "request_id", None) or str(uuid.uuid4())
        return resp

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> tuple[Response, int, dict[str, str]]:
        return jsonify(exc.body()), exc.status, exc.headers

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> tuple[Response, int]:
        status = exc.code or 500
        code = {404: "not_found", 405: "method_not_allowed", 400: "bad_request"}.get(status, "error")
        return jsonify({"message": exc.description or exc.name, "code": code}), status

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:  # pragma: no cover - defensive
        app.logger.exception("emulator bug")
        return jsonify({"message": f"Internal emulator error: {exc}", "code": "server_error"}), 500

    return app


def _save(app: Flask, emu: Emulator) -> None:
    """Save the store before the response leaves (a restart right after it forgets nothing), unless the request's
    view is marked read-only (``persistence.read_only``)."""
    if getattr(app.view_functions.get(request.endpoint or ""), READ_ONLY, False):
        return
    with emu.store.lock:
        emu.persistence.save(emu.store)


def reset(app: Flask) -> None:
    """Reload the seed into a fresh store and save it (the signing key is kept)."""
    reset_emulator(app.extensions[EXTENSION_KEY])
