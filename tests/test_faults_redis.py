"""Redis down, against real processes: a private redis-server that is killed and restarted, and a gunicorn
instance of the app that had cached sessions and keys in memory.

The app keeps answering from the database, and a revoked session or API key is never accepted because a
cache (or the pub/sub invalidation) is missing: fail closed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2
import pytest
from flask import Flask
from flask.testing import FlaskClient

from hatidata_auth.causes import Actor, Cause
from hatidata_auth.extensions import db
from hatidata_auth.services import sessions as session_service
from tests.auth_support import access_token, csrf_headers, login, sync_organizations
from tests.support.processes import AppProcess, PrivateRedis, app_settings

pytestmark = pytest.mark.slow


@pytest.fixture
def redis_server() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def app_config(app_config: dict[str, Any], redis_server: PrivateRedis) -> dict[str, Any]:
    """The test's app on the private Redis (cache, revocation bus, rate limits)."""
    app_config["REDIS_URL"] = redis_server.url
    app_config["RATELIMIT_STORAGE_URI"] = "memory://"
    return app_config


def burst(url: str, credential: str, n: int = 16) -> set[int]:
    """Status codes of *n* concurrent ``/api/v1/me`` calls (spread over the workers)."""
    def one(_: int) -> int:
        with httpx2.Client(timeout=10) as c:
            return c.get(f"{url}/api/v1/me", headers={"Authorization": f"Bearer {credential}"}).status_code

    with ThreadPoolExecutor(8) as pool:
        return set(pool.map(one, range(n)))


def test_redis_down_keeps_serving_from_the_database_and_fails_closed(
    app: Flask, client: FlaskClient, app_config: dict[str, Any], redis_server: PrivateRedis, tmp_path: Path,
) -> None:
    sync_organizations(app)
    assert login(client, "dev@acme.test").status_code == 302
    token = access_token(app, client)
    me = client.get("/api/v1/me").get_json()
    created = client.post("/api/v1/api-keys", json={"name": "agent"}, headers=csrf_headers(client)).get_json()
    key = created["secret"]
    with AppProcess(app_settings(app_config), tmp_path / "b", workers=2, name="b") as other:
        # Warm the other instance: every worker caches the session and the key in memory.
        deadline = time.monotonic() + 10
        while burst(other.url, token) != {200} or burst(other.url, key) != {200}:
            assert time.monotonic() < deadline
        redis_server.kill()

        # Still working, from the database, on both instances.
        assert burst(other.url, token) == {200}
        assert burst(other.url, key) == {200}
        assert client.get("/api/v1/me").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.get_json()["failed"] == ["cache"]

        # Revoked while Redis is down (nothing can be published): never accepted again, anywhere.
        with app.app_context():
            session_service.revoke_session(db.session(), app.extensions["hatidata_workos"].client,
                                           organization_id=me["organization_id"], session_id=me["session_id"],
                                           cause=Cause(Actor.system(), reason="test"))
            db.session.commit()
        assert burst(other.url, token, 32) == {401}
        assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401

        with app.app_context():
            from hatidata_auth.services import api_keys as key_service

            key_service.revoke_key(db.session(), organization_id=me["organization_id"],
                                   key_id=created["key"]["id"], cause=Cause(Actor.system(), reason="test"))
            db.session.commit()
        assert burst(other.url, key, 32) <= {401, 429}  # 429: the failed-key limiter kicks in, also a refusal

        # Redis comes back (empty): the revocations still hold, and the caches work again.
        redis_server.start()
        time.sleep(1.5)  # the listener re-subscribes (backoff up to 2 s) - only a speed-up, not needed for safety
        assert burst(other.url, token, 32) == {401}
        assert burst(other.url, key, 32) <= {401, 429}
        second = app.test_client()
        assert login(second, "viewer@acme.test").status_code == 302
        fresh = access_token(app, second)
        assert burst(other.url, fresh) == {200}


def test_frozen_redis_never_hangs_requests(app: Flask, client: FlaskClient, redis_server: PrivateRedis) -> None:
    """SIGSTOP: connections stay open but nothing answers. Requests stay bounded by the socket timeouts."""
    sync_organizations(app)
    assert login(client, "dev@acme.test").status_code == 302
    token = access_token(app, client)
    redis_server.pause()
    try:
        started = time.monotonic()
        response = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200
        assert time.monotonic() - started < 5.0
        started = time.monotonic()
        assert client.get("/auth/login?email=dev@acme.test").status_code == 503  # login state needs Redis
        assert time.monotonic() - started < 5.0
    finally:
        redis_server.resume()
