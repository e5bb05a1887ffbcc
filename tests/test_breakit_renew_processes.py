"""Break-it (issue #14, renewal on hit), with real gunicorn workers: credentials hit continuously from every worker
while their statuses and memoised cookies are renewed (a 1 s TTL renews them during the run) are refused by every
worker within 1 s of a revocation, a sign-out or a refresh racing one, on both profiles (file cache and its
revocation log; the suite's backends, Redis and its bus when ``TEST_REDIS_URL`` is set)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest
from flask import Flask
from sqlalchemy import update
from workos.session import seal_data, unseal_data

from hatidata_auth.extensions import db
from hatidata_auth.models import Organization
from tests.auth_support import (
    access_token,
    cookie_value,
    csrf_headers,
    forge_token,
    login,
    sync_organizations,
    use_file_cache,
)
from tests.support.processes import AppProcess, app_settings

pytestmark = pytest.mark.slow
WORKERS = 3
TTL = 1


@pytest.fixture(params=["embedded", "suite"])
def app_config(app_config: dict[str, Any], tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "embedded":
        use_file_cache(app_config, tmp_path / "shared-cache")
    app_config["HATIDATA_SESSION_CACHE_TTL"] = TTL
    return app_config


@pytest.fixture
def server(app: Flask, app_config: dict[str, Any], tmp_path: Path) -> Iterator[AppProcess]:
    sync_organizations(app)
    with app.app_context():
        db.session.execute(update(Organization).values(session_cache_ttl=TTL))
        db.session.commit()
        db.session.remove()
    process = AppProcess(app_settings(app_config, HATIDATA_SESSION_CACHE_TTL=TTL), tmp_path / "srv",
                         workers=WORKERS, name="renew", env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom")})
    with process:
        yield process


class Hammer:
    """Threads that hit ``/api/v1/me`` with each credential without pause, recording (time, status)."""

    def __init__(self, url: str, credentials: dict[str, dict[str, str]], threads: int = 2) -> None:
        self.url, self.credentials = url, credentials
        self.seen: dict[str, list[tuple[float, int]]] = {name: [] for name in credentials}
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(name,), daemon=True)
                        for name in credentials for _ in range(threads)]

    def _run(self, name: str) -> None:
        with httpx2.Client(timeout=10) as c:
            while not self.stop.is_set():
                code = c.get(f"{self.url}/api/v1/me", headers=self.credentials[name]).status_code
                self.seen[name].append((time.monotonic(), code))

    def __enter__(self) -> Hammer:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=15)


def _admin_headers(app: Flask) -> dict[str, str]:
    admin = app.test_client()
    assert login(admin, "admin@acme.test").status_code == 302
    return {"Authorization": f"Bearer {access_token(app, admin)}"}


def _burst(url: str, headers: dict[str, str], n: int = 3 * WORKERS) -> list[int]:
    def one(_: int) -> int:
        with httpx2.Client(timeout=10) as c:
            return c.get(f"{url}/api/v1/me", headers=headers).status_code
    with ThreadPoolExecutor(WORKERS) as pool:
        return list(pool.map(one, range(n)))


def _accepted_after(seen: list[tuple[float, int]], moment: float) -> list[float]:
    return [round(at - moment, 3) for at, code in seen if code == 200 and at > moment + 1.0]


def test_a_session_hit_from_every_worker_is_refused_within_a_second_of_its_revocation(
        app: Flask, server: AppProcess) -> None:
    client = app.test_client()
    assert login(client, "dev@acme.test").status_code == 302
    me = client.get("/api/v1/me").get_json()
    credentials = {"cookie": {"Cookie": f"hatidata_session={cookie_value(client)}"},
                   "bearer": {"Authorization": f"Bearer {access_token(app, client)}"}}
    admin = _admin_headers(app)
    with Hammer(server.url, credentials) as hammer:
        time.sleep(3 * TTL)  # every worker caches, renews, and the TTL passes several times
        assert {code for _, code in hammer.seen["cookie"]} == {200}
        assert {code for _, code in hammer.seen["bearer"]} == {200}
        with httpx2.Client(timeout=10) as c:
            revoked = c.post(f"{server.url}/api/v1/sessions/{me['session_id']}/revoke", json={"reason": "t"},
                             headers=admin)
        assert revoked.status_code == 200, revoked.text
        moment = time.monotonic()
        time.sleep(2.5)
    for name in credentials:
        assert _accepted_after(hammer.seen[name], moment) == [], name
        assert 200 not in _burst(server.url, credentials[name]), name


def test_a_signed_out_cookie_replayed_on_the_other_workers_is_refused(app: Flask, server: AppProcess) -> None:
    client = app.test_client()
    assert login(client, "dev@acme.test").status_code == 302
    cookie = {"Cookie": f"hatidata_session={cookie_value(client)}"}
    with Hammer(server.url, {"cookie": cookie}) as hammer:
        time.sleep(2 * TTL)
        with httpx2.Client(timeout=10) as c:  # the browser signs out through one worker
            csrf = c.get(f"{server.url}/auth/csrf", headers=cookie)
            jar = "; ".join(f"{k}={v}" for k, v in {**dict(csrf.cookies), "hatidata_session": cookie_value(client)}
                            .items())
            out = c.post(f"{server.url}/auth/logout", headers={"Cookie": jar,
                                                                "X-CSRFToken": csrf.json()["csrf_token"]})
        assert out.status_code in (200, 302, 303), out.text
        moment = time.monotonic()
        time.sleep(2.5)
    assert _accepted_after(hammer.seen["cookie"], moment) == []
    assert 200 not in _burst(server.url, cookie, 4 * WORKERS)


def test_a_refresh_racing_a_revocation_leaves_no_cookie_that_is_accepted(
        app: Flask, server: AppProcess, emulator: Any) -> None:
    client = app.test_client()
    assert login(client, "dev@acme.test").status_code == 302
    me = client.get("/api/v1/me").get_json()
    good = {"Cookie": f"hatidata_session={cookie_value(client)}"}
    data = unseal_data(cookie_value(client) or "", app.config["HATIDATA_COOKIE_KEY"])
    claims = jwt.decode(data["access_token"], options={"verify_signature": False})
    now = int(time.time())
    data["access_token"] = forge_token(emulator, **{**claims, "iat": now - 600, "exp": now - 300})
    stale = {"Cookie": f"hatidata_session={seal_data(data, app.config['HATIDATA_COOKIE_KEY'])}"}
    admin = _admin_headers(app)
    refreshed: list[str] = []

    def refresh(_: int) -> None:
        with httpx2.Client(timeout=10) as c:
            answer = c.get(f"{server.url}/api/v1/me", headers=stale)
            if answer.status_code == 200 and "hatidata_session" in answer.cookies:
                refreshed.append(answer.cookies["hatidata_session"])

    with Hammer(server.url, {"cookie": good}) as hammer, ThreadPoolExecutor(4) as pool:
        time.sleep(TTL)
        racing = [pool.submit(refresh, n) for n in range(4)]
        with httpx2.Client(timeout=10) as c:
            revoked = c.post(f"{server.url}/api/v1/sessions/{me['session_id']}/revoke", json={"reason": "t"},
                             headers=admin)
        assert revoked.status_code == 200, revoked.text
        moment = time.monotonic()
        for future in racing:
            future.result()
        time.sleep(2.0)
    assert _accepted_after(hammer.seen["cookie"], moment) == []
    for sealed in refreshed:  # a cookie a refresh handed out around the revocation
        assert 200 not in _burst(server.url, {"Cookie": f"hatidata_session={sealed}"}), "refreshed cookie accepted"


def test_an_api_key_revoked_while_hit_is_refused_by_every_worker_within_a_second(
        app: Flask, server: AppProcess) -> None:
    client = app.test_client()
    assert login(client, "dev@acme.test").status_code == 302
    created = client.post("/api/v1/api-keys", json={"name": "agent"}, headers=csrf_headers(client)).get_json()
    key = {"Authorization": f"Bearer {created['secret']}"}
    with Hammer(server.url, {"key": key}) as hammer:
        time.sleep(3 * TTL)
        assert {code for _, code in hammer.seen["key"]} == {200}
        with httpx2.Client(timeout=10) as c:
            revoked = c.post(f"{server.url}/api/v1/api-keys/{created['key']['id']}/revoke",
                             headers={**_admin_headers(app)})
        assert revoked.status_code == 200, revoked.text
        moment = time.monotonic()
        time.sleep(2.5)
    assert _accepted_after(hammer.seen["key"], moment) == []
    assert 200 not in _burst(server.url, key, 4 * WORKERS)


def test_a_member_removed_while_hit_is_refused_by_every_worker_within_a_second_on_every_credential(
        app: Flask, server: AppProcess) -> None:
    client = app.test_client()
    assert login(client, "dev@acme.test").status_code == 302
    created = client.post("/api/v1/api-keys", json={"name": "agent"}, headers=csrf_headers(client)).get_json()
    credentials = {"cookie": {"Cookie": f"hatidata_session={cookie_value(client)}"},
                   "bearer": {"Authorization": f"Bearer {access_token(app, client)}"},
                   "key": {"Authorization": f"Bearer {created['secret']}"}}
    admin = _admin_headers(app)
    with httpx2.Client(timeout=10) as c:
        found = c.get(f"{server.url}/api/v1/members", params={"email": "dev@acme.test"}, headers=admin).json()
    member_id = found["data"][0]["id"]
    with Hammer(server.url, credentials, threads=1) as hammer:
        time.sleep(3 * TTL)
        for name in credentials:
            assert {code for _, code in hammer.seen[name]} == {200}, name
        with httpx2.Client(timeout=10) as c:
            removed = c.delete(f"{server.url}/api/v1/members/{member_id}", headers=admin)
        assert removed.status_code == 200, removed.text
        moment = time.monotonic()
        time.sleep(2.5)
    for name in credentials:
        assert _accepted_after(hammer.seen[name], moment) == [], name
        assert 200 not in _burst(server.url, credentials[name]), name
