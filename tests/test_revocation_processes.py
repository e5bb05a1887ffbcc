"""Revocation seen by other processes: a real gunicorn with 2 workers sharing our database (and Redis)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
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
from hatidata_auth.revocation_bus import RevocationBus
from hatidata_auth.services import sessions as session_service
from tests.auth_support import access_token, csrf_headers, login, sync_organizations

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def app_config(app_config: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """Without Redis, every process (this one included) shares the file cache, like development."""
    if not app_config.get("REDIS_URL"):
        app_config["CACHE_TYPE"] = "FileSystemCache"
        app_config["CACHE_DIR"] = str(tmp_path / "shared-cache")
    return app_config


@pytest.fixture
def workers(app: Flask, app_config: dict[str, Any], tmp_path: Path) -> Iterator[str]:
    """gunicorn, 2 sync workers, on the test database; the file cache when there is no Redis."""
    settings = tmp_path / "settings.py"
    values = {k: app_config[k] for k in ("SQLALCHEMY_DATABASE_URI", "SECRET_KEY", "HATIDATA_COOKIE_KEY",
                                         "WORKOS_BASE_URL", "CACHE_KEY_PREFIX", "WORKOS_WEBHOOK_SECRET")}
    if app_config.get("REDIS_URL"):
        values["REDIS_URL"] = app_config["REDIS_URL"]
    else:
        values["CACHE_TYPE"] = "FileSystemCache"
        values["CACHE_DIR"] = app_config["CACHE_DIR"]
    settings.write_text("".join(f"{k} = {v!r}\n" for k, v in values.items()))
    port = _free_port()
    env = {**os.environ, "HATIDATA_ENV": "testing", "HATIDATA_SETTINGS": str(settings),
           "HATIDATA_INSTANCE_PATH": str(tmp_path / "instance"), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(  # our own interpreter and arguments
        [sys.executable, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}", "--access-logfile", "/dev/null",
         "hatidata_auth:create_app()"], env=env, cwd=str(ROOT), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx2.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx2.HTTPError:
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError(proc.stderr.read().decode() if proc.stderr else "gunicorn did not start")
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    if proc.stderr:
        proc.stderr.close()


def _burst(url: str, token: str, n: int = 40) -> list[int]:
    def one(_: int) -> int:
        with httpx2.Client(timeout=10) as c:
            return c.get(f"{url}/api/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(n)))


def test_revocation_is_seen_by_every_worker_at_once(app: Flask, client: FlaskClient, workers: str) -> None:
    sync_organizations(app)
    assert login(client, "dev@acme.test").status_code == 302
    token = access_token(app, client)
    assert set(_burst(workers, token)) == {200}  # both workers have seen (and cached) the session
    me = client.get("/api/v1/me").get_json()
    with app.app_context():
        session_service.revoke_session(db.session(), app.extensions["hatidata_workos"].client,
                                       organization_id=me["organization_id"], session_id=me["session_id"],
                                       cause=Cause(Actor.system(), reason="test"))
        db.session.commit()
    started = time.monotonic()
    while set(_burst(workers, token, 16)) != {401}:
        assert time.monotonic() - started < 1.0, "a worker still accepts the revoked session"
    assert set(_burst(workers, token)) == {401}


def test_api_key_revocation_is_seen_by_every_worker(app: Flask, client: FlaskClient, workers: str) -> None:
    sync_organizations(app)
    assert login(client, "dev@acme.test").status_code == 302
    created = client.post("/api/v1/api-keys", json={"name": "agent"}, headers=csrf_headers(client)).get_json()
    assert set(_burst(workers, created["secret"])) == {200}
    response = client.post(f"/api/v1/api-keys/{created['key']['id']}/revoke", json={}, headers=csrf_headers(client))
    assert response.status_code == 200
    started = time.monotonic()
    # refused everywhere (401; repeated failures from one address then turn into 429)
    while 200 in _burst(workers, created["secret"], 16):
        assert time.monotonic() - started < 1.0
    assert 200 not in _burst(workers, created["secret"])


def test_bus_without_a_reachable_redis_fails_closed() -> None:
    bus = RevocationBus("redis://127.0.0.1:1/0", liveness=1.0)
    try:
        bus.sessions.set("sid", object(), time.monotonic() + 60)
        assert not bus.local_enabled()
        time.sleep(0.3)
        assert not bus.local_enabled()
    finally:
        bus.stop()


@pytest.mark.redis
def test_bus_subscribes_and_evicts_on_message() -> None:
    url = os.environ["TEST_REDIS_URL"]
    channel = f"hatidata-test:{os.getpid()}:{time.time()}"
    a, b = RevocationBus(url, channel=channel), RevocationBus(url, channel=channel)
    try:
        assert a.wait_until_ready()
        assert b.wait_until_ready()
        b.sessions.set("sid_1", "cached", time.monotonic() + 60)
        assert a.publish("session", "sid_1")
        deadline = time.monotonic() + 2
        while b.sessions.get("sid_1") is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert b.sessions.get("sid_1") is None
    finally:
        a.stop()
        b.stop()


@pytest.mark.redis
def test_a_revocation_that_could_not_reach_redis_is_delivered_once_it_can() -> None:
    url = os.environ["TEST_REDIS_URL"]
    channel = f"hatidata-test:{os.getpid()}:{time.time()}:retry"
    a, b = RevocationBus(url, channel=channel), RevocationBus(url, channel=channel)
    try:
        assert a.wait_until_ready()
        assert b.wait_until_ready()
        b.sessions.set("sid_2", "cached", time.monotonic() + 60)
        # A is cut off from Redis for its writes (its publisher points nowhere) while it revokes.
        a.redis_url, real_url = "redis://127.0.0.1:1/0", a.redis_url
        a._publisher = None
        assert not a.publish("session", "sid_2")
        assert a.pending_retries == 1
        assert b.sessions.get("sid_2") == "cached"
        # Redis is reachable again: the listener thread delivers the revocation without being asked.
        a.redis_url = real_url
        a._publisher = None
        deadline = time.monotonic() + 5
        while b.sessions.get("sid_2") is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert b.sessions.get("sid_2") is None
        assert a.pending_retries == 0
    finally:
        a.stop()
        b.stop()
