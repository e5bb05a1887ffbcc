"""The embedded profile (file cache, no Redis) answers from memory and still revokes across workers at once.

A real gunicorn with 3 sync workers shares the test's database and file cache; the workers learn of revocations
through the revocation log beside the cache folder (:mod:`hatidata_auth.revocation_log`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2
import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.auth_support import access_token, csrf_headers, login, sync_organizations
from tests.support.processes import AppProcess, app_settings

pytestmark = pytest.mark.slow
WORKERS = 3


@pytest.fixture
def app_config(app_config: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """``make run``'s cache whatever the suite's backends: the file cache, no Redis."""
    app_config.pop("REDIS_URL", None)
    app_config["CACHE_TYPE"] = "FileSystemCache"
    app_config["CACHE_DIR"] = str(tmp_path / "shared-cache")
    return app_config


@pytest.fixture
def server(app: Flask, app_config: dict[str, Any], tmp_path: Path) -> Iterator[AppProcess]:
    process = AppProcess(app_settings(app_config), tmp_path / "srv", workers=WORKERS, name="embedded",
                         env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom")})
    with process:
        yield process


def _get(url: str, path: str, headers: dict[str, str]) -> httpx2.Response:
    with httpx2.Client(timeout=10) as c:
        return c.get(f"{url}{path}", headers=headers)


def _burst(url: str, headers: dict[str, str], n: int = 24) -> list[int]:
    with ThreadPoolExecutor(6) as pool:
        return list(pool.map(lambda _: _get(url, "/api/v1/me", headers).status_code, range(n)))


def _local_hits(url: str, cache: str) -> float:
    text = _get(url, "/metrics", {}).text
    found = re.search(rf'hatidata_cache_lookups_total{{cache="{cache}",result="hit"}} ([0-9.e+]+)', text)
    return float(found.group(1)) if found else 0.0


@pytest.mark.parametrize("credential", ["bearer", "cookie", "api_key"])
def test_every_worker_answers_from_memory_and_rejects_within_a_second_of_a_revocation(
    app: Flask, client: FlaskClient, server: AppProcess, credential: str,
) -> None:
    sync_organizations(app)
    assert login(client, "dev@acme.test").status_code == 302
    me = client.get("/api/v1/me").get_json()
    if credential == "api_key":
        created = client.post("/api/v1/api-keys", json={"name": "agent"}, headers=csrf_headers(client)).get_json()
        headers = {"Authorization": f"Bearer {created['secret']}"}
        revoke = f"/api/v1/api-keys/{created['key']['id']}/revoke"
    elif credential == "cookie":
        headers = {"Cookie": f"hatidata_session={client.get_cookie('hatidata_session').value}"}  # type: ignore[union-attr]
        revoke = f"/api/v1/sessions/{me['session_id']}/revoke"
    else:
        headers = {"Authorization": f"Bearer {access_token(app, client)}"}
        revoke = f"/api/v1/sessions/{me['session_id']}/revoke"
    admin = app.test_client()
    assert login(admin, "admin@acme.test").status_code == 302
    admin_headers = {"Authorization": f"Bearer {access_token(app, admin)}"}

    assert set(_burst(server.url, headers, 48)) == {200}  # every worker has cached it
    # answered from memory, not from the database: a session credential by the identity memo or, when the memo
    # lapsed, by the session status cache
    caches = ("api_keys_local",) if credential == "api_key" else ("identities", "sessions_local")
    before = sum(_local_hits(server.url, cache) for cache in caches)
    assert set(_burst(server.url, headers, 30)) == {200}
    assert sum(_local_hits(server.url, cache) for cache in caches) - before >= 30

    with httpx2.Client(timeout=10) as c:  # revoked through one of the workers
        revoked = c.post(f"{server.url}{revoke}", json={"reason": "test"}, headers=admin_headers)
    assert revoked.status_code == 200, revoked.text
    started = time.monotonic()
    while 200 in _burst(server.url, headers, 3 * WORKERS):
        assert time.monotonic() - started < 1.0, "a worker still accepts the revoked credential"
    assert 200 not in _burst(server.url, headers, 48)
