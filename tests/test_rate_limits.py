"""Flask-Limiter on login starts and failed API-key attempts: 429 with Retry-After."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask


@pytest.fixture
def limited_app(app_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[Flask]:
    from hatidata_auth import create_app
    from hatidata_auth.extensions import db

    monkeypatch.setenv("HATIDATA_INSTANCE_PATH", str(tmp_path / "instance"))
    app_config.update(HATIDATA_LOGIN_RATE_LIMIT="3 per minute", HATIDATA_API_KEY_FAILURE_RATE_LIMIT="2 per minute",
                      RATELIMIT_STORAGE_URI="memory://")
    application = create_app(app_config)
    yield application
    with application.app_context():
        db.session.remove()
    application.extensions["hatidata_workos"].close()


def test_login_starts_are_limited_per_address(limited_app: Flask) -> None:
    client = limited_app.test_client()
    for _ in range(3):
        assert client.get("/auth/login").status_code == 302
    response = client.get("/auth/login", headers={"Accept": "application/json"})
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0
    other = limited_app.test_client()
    assert other.get("/auth/login", environ_base={"REMOTE_ADDR": "10.0.0.9"}).status_code == 302


def test_failed_api_key_attempts_are_limited(limited_app: Flask) -> None:
    client = limited_app.test_client()
    bad = {"Authorization": "Bearer hd_live_" + "A" * 43}
    assert client.get("/api/v1/me", headers=bad).status_code == 401
    assert client.get("/api/v1/me", headers=bad).status_code == 401
    response = client.get("/api/v1/me", headers=bad)
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0
    assert response.get_json()["error"]["code"] == "too_many_requests"
    # other addresses are unaffected
    assert client.get("/api/v1/me", headers=bad, environ_base={"REMOTE_ADDR": "10.0.0.7"}).status_code == 401
