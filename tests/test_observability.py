"""Metrics, structured logs with request ids, and no secret in any log line."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from workos.session import seal_data, unseal_data

from hatidata_auth.extensions import db
from hatidata_auth.logs import QUIET_LOGGERS, JsonFormatter, configure_logging, redact
from hatidata_auth.metrics import path_template
from hatidata_auth.models import AuditEvent
from tests.auth_support import access_token, cookie_value, csrf_headers, forge_token, login, sync_organizations
from tests.support.dsync import post_event
from tests.support.servers import EmulatorControl, LiveServer


class _Capture(logging.Handler):
    """Keeps every record, formatted by the app's JSON formatter and raw (message, args, exception)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.formatted = io.StringIO()
        self.raw: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.formatted.write(self.format(record) + "\n")
        parts = [str(record.msg), repr(record.args), record.getMessage()]
        if record.exc_info and record.exc_info[1] is not None:
            parts.append(repr(record.exc_info[1]))
        self.raw.append(" ".join(parts))


@pytest.fixture
def captured() -> Iterator[_Capture]:
    handler = _Capture()
    root = logging.getLogger()
    previous = root.level
    # Alembic's fileConfig (run by the migrations fixture) disables every logger that existed before it.
    disabled = [lg for lg in logging.root.manager.loggerDict.values()
                if isinstance(lg, logging.Logger) and lg.disabled]
    for lg in disabled:
        lg.disabled = False
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(previous)
    for lg in disabled:
        lg.disabled = True


def test_json_log_lines_carry_the_request_id(app: Flask, client: FlaskClient, captured: _Capture) -> None:
    @app.get("/_test/log_probe")
    def probe() -> str:
        logging.getLogger("hatidata_auth.probe").info("probe", extra={"tenant": "acme"})
        return "ok"

    response = client.get("/_test/log_probe", headers={"X-Request-ID": "req-12345678"})
    assert response.headers["X-Request-ID"] == "req-12345678"
    lines = [json.loads(line) for line in captured.formatted.getvalue().splitlines()]
    probe_line = next(line for line in lines if line["logger"] == "hatidata_auth.probe")
    assert probe_line["request_id"] == "req-12345678"
    assert probe_line["tenant"] == "acme"
    assert probe_line["level"] == "INFO"


def test_error_responses_and_audit_events_carry_the_request_id(app: Flask, client: FlaskClient) -> None:
    sync_organizations(app)
    response = client.get("/api/v1/me", headers={"X-Request-ID": "req-abcdefgh"})
    assert response.get_json()["error"]["request_id"] == "req-abcdefgh"
    assert login(client, "dev@acme.test").status_code == 302
    created = client.post("/api/v1/api-keys", json={"name": "x"},
                          headers={**csrf_headers(client), "X-Request-ID": "req-key-0001"})
    assert created.status_code == 201
    with app.app_context():
        event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "api_key.created"))
        assert event is not None
        assert event.request_id == "req-key-0001"
        db.session.remove()


def test_redaction_is_a_last_line_of_defence() -> None:
    text = redact("Bearer eyJhbGciOi.eyJzdWIiOiJ4In0.c2ln hd_live_abcdefghijkl sk_test_emulator "
                  "whsec_abcdef gAAAAABnZXQtc2VhbGVkLWNvb2tpZS12YWx1ZQ== /cb?code=01ABC&state=x")
    for secret in ("eyJhbGciOi", "hd_live_abcdefghijkl", "sk_test_emulator", "whsec_abcdef", "gAAAAABnZXQ", "01ABC"):
        assert secret not in text


def test_metrics_endpoint(app: Flask, client: FlaskClient) -> None:
    sync_organizations(app)
    client.get("/healthz")
    assert login(client, "dev@acme.test").status_code == 302
    text = client.get("/metrics").get_data(as_text=True)
    assert 'hatidata_http_requests_total{endpoint="/healthz",method="GET",status="200"}' in text
    assert 'hatidata_logins_total{outcome="succeeded"}' in text
    assert "hatidata_workos_request_duration_seconds_bucket" in text
    assert 'path="/user_management/authenticate"' in text
    assert 'hatidata_inbox_backlog{status="failed"}' in text
    assert "hatidata_cache_lookups_total" in text
    assert path_template("http://x/organizations/org_01HTDQ8A100000000000000001?x=1") == "/organizations/{id}"


def test_metrics_token(app: Flask, client: FlaskClient) -> None:
    app.config["HATIDATA_METRICS_TOKEN"] = "scrape-token-value"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer scrape-token-value"}).status_code == 200


def test_no_secret_reaches_the_logs(app: Flask, client: FlaskClient, emulator: Any, captured: _Capture,
                                    capfd: pytest.CaptureFixture[str]) -> None:
    """Login, cookies, refresh, API keys (create, use, rotate, a wrong one), webhooks, logout - at DEBUG."""
    sync_organizations(app)
    secrets: dict[str, str] = {
        "webhook secret": app.config["WORKOS_WEBHOOK_SECRET"],
        "cookie key": app.config["HATIDATA_COOKIE_KEY"],
        "flask secret": app.config["SECRET_KEY"],
        "workos api key": app.config["WORKOS_API_KEY"],
    }
    assert login(client, "admin@acme.test").status_code == 302
    cookie = cookie_value(client) or ""
    sealed = unseal_data(cookie, app.config["HATIDATA_COOKIE_KEY"])
    secrets.update({"cookie": cookie, "access token": sealed["access_token"],
                    "refresh token": sealed["refresh_token"]})
    assert client.get("/api/v1/me").status_code == 200

    # An expired access token in the cookie: refreshed (the refresh token rotates).
    claims = jwt.decode(sealed["access_token"], options={"verify_signature": False})
    now = int(time.time())
    sealed["access_token"] = forge_token(emulator, **{**claims, "iat": now - 600, "exp": now - 300})
    client.set_cookie("hatidata_session", seal_data(sealed, app.config["HATIDATA_COOKIE_KEY"]))
    secrets["expired token"] = sealed["access_token"]
    assert client.get("/api/v1/me").status_code == 200
    refreshed = unseal_data(cookie_value(client) or "", app.config["HATIDATA_COOKIE_KEY"])
    secrets.update({"new cookie": cookie_value(client) or "", "new access token": refreshed["access_token"],
                    "new refresh token": refreshed["refresh_token"]})

    created = client.post("/api/v1/api-keys", json={"name": "agent", "scopes": ["keys:read"]},
                          headers=csrf_headers(client)).get_json()
    secrets["api key"] = created["secret"]
    with LiveServer(app) as live:  # real HTTP: werkzeug's request log is captured too
        assert httpx2.get(f"{live.url}/api/v1/api-keys", timeout=10,
                          headers={"Authorization": f"Bearer {created['secret']}"}).status_code == 200
        assert httpx2.get(f"{live.url}/api/v1/me", timeout=10,
                          headers={"Authorization": f"Bearer {access_token(app, client)}"}).status_code == 200
        wrong = created["secret"][:-4] + "AAAA"
        secrets["wrong api key"] = wrong
        assert httpx2.get(f"{live.url}/api/v1/me", headers={"Authorization": f"Bearer {wrong}"},
                          timeout=10).status_code == 401
        control = EmulatorControl(emulator.url)
        control.register_webhook(f"{live.url}/webhooks/workos", app.config["WORKOS_WEBHOOK_SECRET"])
        control.ctl("POST", "/directories/directory_01HTDQ8D100000000000000001/users",
                    {"email": "logscan@acme.test", "first_name": "Log", "last_name": "Scan"})
        assert control.flush(timeout=30)
    rotated = client.post(f"/api/v1/api-keys/{created['key']['id']}/rotate", json={"grace_seconds": 0},
                          headers=csrf_headers(client)).get_json()
    secrets["rotated api key"] = rotated["secret"]
    # A webhook with a bad signature and one signed with the wrong secret.
    assert post_event(client, app, {"id": "event_X", "event": "dsync.user.created", "data": {},
                                    "created_at": "2026-01-01T00:00:00Z"}, secret="whsec_wrong_secret_value"
                      ).status_code == 401
    secrets["wrong webhook secret"] = "whsec_wrong_secret_value"
    client.post("/auth/logout", headers=csrf_headers(client))

    out, err = capfd.readouterr()
    streams = {"formatted logs": captured.formatted.getvalue(), "raw log records": "\n".join(captured.raw),
               "stdout": out, "stderr": err}
    assert captured.raw, "nothing was logged: the capture is broken"
    leaks = [f"{name} in {where}" for name, secret in secrets.items() if secret
             for where, text in streams.items() if secret in text]
    assert not leaks, leaks


def test_trusted_proxy_headers(app_config: dict[str, Any], tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from flask import request

    from hatidata_auth import create_app

    monkeypatch.setenv("HATIDATA_INSTANCE_PATH", str(tmp_path / "proxied"))
    seen: dict[str, str] = {}

    def build(hops: int) -> Flask:
        application = create_app({**app_config, "HATIDATA_TRUSTED_PROXIES": hops})

        @application.get("/_test/whoami")
        def whoami() -> str:
            seen.update(addr=str(request.remote_addr), scheme=request.scheme, host=request.host)
            return "ok"

        return application

    headers = {"X-Forwarded-For": "6.6.6.6, 203.0.113.7", "X-Forwarded-Proto": "https",
               "X-Forwarded-Host": "auth.example.test"}
    build(1).test_client().get("/_test/whoami", headers=headers)
    assert seen == {"addr": "203.0.113.7", "scheme": "https", "host": "auth.example.test"}  # only the last hop
    build(0).test_client().get("/_test/whoami", headers=headers)
    assert seen["addr"] == "127.0.0.1"
    assert seen["scheme"] == "http"


@pytest.mark.parametrize("level", ["INFO", "WARNING"])
def test_a_workos_call_logs_no_line_with_its_url(app: Flask, emulator: Any, captured: _Capture, level: str) -> None:
    """The HTTP client's INFO line per WorkOS call carried the whole URL with its query (an email): at every level
    but DEBUG the HTTP client libraries log warnings only (a new user saw one line per call from the CLI)."""
    configure_logging(app, level)
    app.extensions["hatidata_workos"].client.user_management.list_users(email="quiet.person@acme.test")
    assert "quiet.person" not in captured.formatted.getvalue()
    assert not [r for r in captured.raw if "/user_management/users" in r]
    assert all(logging.getLogger(name).getEffectiveLevel() >= logging.WARNING for name in QUIET_LOGGERS)


def test_the_http_client_loggers_follow_the_level_each_time() -> None:
    """A break-it review: the level set at INFO stayed at DEBUG (no HTTP lines), and pinning WARNING let their
    warnings through a root at ERROR. Now they follow the configured level, and a level set by someone else
    stays."""
    configure_logging(None, "INFO")
    try:
        assert all(logging.getLogger(n).getEffectiveLevel() == logging.WARNING for n in QUIET_LOGGERS)
        configure_logging(None, "DEBUG")
        assert all(logging.getLogger(n).getEffectiveLevel() == logging.DEBUG for n in QUIET_LOGGERS)
        configure_logging(None, "ERROR")
        assert all(logging.getLogger(n).getEffectiveLevel() == logging.ERROR for n in QUIET_LOGGERS)
        operator = logging.getLogger("httpcore")
        vars(operator)["_hatidata_quieted"] = False  # as if never quieted: the operator set it
        operator.setLevel(logging.INFO)
        configure_logging(None, "WARNING")
        assert operator.level == logging.INFO
    finally:
        logging.getLogger("httpcore").setLevel(logging.NOTSET)
        configure_logging(None, "INFO")
