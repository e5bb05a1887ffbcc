"""WorkOS (the emulator) down, slow or answering 5xx.

- a login shows a clear error page (503, ``Retry-After``, the request id), never a stack trace;
- valid sessions keep working while their access token is valid (tokens are verified locally with the cached
  JWKS, session status comes from our database);
- once the access token expires, the refresh fails *transiently* (503, the session is kept) while WorkOS is
  unreachable and *terminally* (401, cookie cleared) when WorkOS rejects the refresh token.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from workos.session import seal_data, unseal_data

from hatidata_auth.extensions import db
from hatidata_auth.models import AuditEvent, AuthSession
from tests.auth_support import (
    access_token,
    authorize,
    callback_path,
    cookie_value,
    forge_token,
    login,
    start_login,
    sync_organizations,
)
from tests.support.servers import http_json

pytestmark = pytest.mark.slow

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


@pytest.fixture
def own_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """An emulator of this test's own, so that it can be stopped."""
    from workos_emulator.testing import EmulatorServer

    server = EmulatorServer(data_dir=str(tmp_path_factory.mktemp("own-emulator")))
    server.start()
    yield server
    with contextlib.suppress(Exception):  # already stopped by the test
        server.stop()


@pytest.fixture
def app_config(app_config: dict[str, Any], own_emulator: Any) -> dict[str, Any]:
    app_config["WORKOS_BASE_URL"] = own_emulator.url
    app_config["WORKOS_TIMEOUT"] = 1.0
    app_config["WORKOS_MAX_RETRIES"] = 0
    return app_config


def _expire_access_token(app: Flask, client: FlaskClient, emulator: Any) -> None:
    data = unseal_data(cookie_value(client) or "", app.config["HATIDATA_COOKIE_KEY"])
    claims = jwt.decode(data["access_token"], options={"verify_signature": False})
    now = int(time.time())
    data["access_token"] = forge_token(emulator, **{**claims, "iat": now - 600, "exp": now - 300})
    client.set_cookie("hatidata_session", seal_data(data, app.config["HATIDATA_COOKIE_KEY"]))


def _assert_error_page(response: Any, text: str) -> None:
    assert response.status_code == 503
    assert response.mimetype == "text/html"
    body = response.get_data(as_text=True)
    assert text in body
    assert response.headers["X-Request-ID"] in body
    assert response.headers["Retry-After"].isdigit()
    assert "Traceback" not in body


def test_workos_down_error_page_sessions_survive_refresh_is_transient(
    app: Flask, client: FlaskClient, own_emulator: Any,
) -> None:
    sync_organizations(app)
    assert login(client, "admin@acme.test").status_code == 302
    token = access_token(app, client)
    pending = callback_path(authorize(start_login(client, email="dev@acme.test")))
    own_emulator.stop()

    # A login that needs WorkOS now: a clear page, not a crash.
    _assert_error_page(client.get(pending, headers=BROWSER), "WorkOS is unreachable")

    # Signed-in users keep working while their access token is valid: cookie and bearer.
    assert client.get("/api/v1/me").status_code == 200
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200

    # The access token expires: refreshing is impossible, which is transient - the session is kept.
    _expire_access_token(app, client, own_emulator)
    response = client.get("/api/v1/me")
    assert response.status_code == 503
    error = response.get_json()["error"]
    assert error["code"] == "refresh_unavailable"
    assert response.headers["Retry-After"].isdigit()
    assert not any(h.startswith("hatidata_session=;") for h in response.headers.getlist("Set-Cookie"))
    sid = jwt.decode(token, options={"verify_signature": False})["sid"]
    with app.app_context():
        record = db.session.scalar(select(AuthSession).where(AuthSession.workos_session_id == sid))
        assert record is not None
        assert record.revoked_at is None
        failure = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "session.refresh_failed"))
        assert failure is not None
        db.session.remove()


@pytest.mark.parametrize(("status", "delay_ms"), [(500, 0), (503, 0), (None, 8000)])
def test_workos_5xx_or_slow_during_login_shows_an_error_page(
    app: Flask, client: FlaskClient, own_emulator: Any, status: int | None, delay_ms: int,
) -> None:
    sync_organizations(app)
    pending = callback_path(authorize(start_login(client, email="dev@acme.test")))
    fault: dict[str, Any] = {"method": "POST", "path": "/user_management/authenticate", "count": 1}
    if status:
        fault["status"] = status
    if delay_ms:
        fault["delay_ms"] = delay_ms
    code, body = http_json("POST", f"{own_emulator.url}/_emulator/faults", fault,
                           {"Authorization": "Bearer sk_test_emulator"})
    assert code == 201, body
    started = time.monotonic()
    # A slow WorkOS would still answer with success: an error page at all means the app gave up at WORKOS_TIMEOUT
    # (1 s) instead of waiting. The wall-clock bound only has to tell 1 s from 8 s on a loaded CI machine.
    _assert_error_page(client.get(pending, headers=BROWSER), "WorkOS")
    assert time.monotonic() - started < 6.0


def test_refresh_rejected_by_workos_is_terminal(app: Flask, client: FlaskClient, own_emulator: Any) -> None:
    sync_organizations(app)
    assert login(client, "admin@acme.test").status_code == 302
    code, body = http_json("POST", f"{own_emulator.url}/_emulator/faults",
                           {"method": "POST", "path": "/user_management/authenticate", "status": 400, "count": 1,
                            "body": {"error": "invalid_grant", "error_description": "refresh token revoked"}},
                           {"Authorization": "Bearer sk_test_emulator"})
    assert code == 201, body
    _expire_access_token(app, client, own_emulator)
    response = client.get("/api/v1/me")
    assert response.status_code == 401
    assert response.get_json()["error"]["details"]["reason"] == "refresh_rejected"
    assert any(h.startswith("hatidata_session=;") for h in response.headers.getlist("Set-Cookie"))
