"""A policy change is in force in every gunicorn worker within a second (Redis bus, or the revocation log of
the embedded default), for bearer tokens and API keys."""

from __future__ import annotations

import time
from typing import Any

import httpx2
import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.auth_support import access_token, csrf_headers, login, sync_organizations
from tests.test_revocation_processes import _burst
from tests.test_revocation_processes import app_config as app_config
from tests.test_revocation_processes import workers as workers

pytestmark = pytest.mark.slow


def _statuses(url: str, credential: str, n: int = 16) -> set[int]:
    return set(_burst(url, credential, n))


def test_a_policy_change_reaches_every_worker_within_a_second(app: Flask, client: FlaskClient,
                                                              workers: str) -> None:
    sync_organizations(app)
    assert login(client, "admin@acme.test").status_code == 302
    token = access_token(app, client)
    key = client.post("/api/v1/api-keys", json={"name": "agent", "scopes": ["data:read"]},
                      headers=csrf_headers(client)).get_json()["secret"]
    assert _statuses(workers, token, 40) == {200}  # both workers cached the session and the policy
    assert _statuses(workers, key, 40) == {200}
    # From an address of the new allowlist (the lock-out guard checks the caller's); the workers see 127.0.0.1.
    body: dict[str, Any] = {"ip_allowlist": ["10.0.0.0/8"], "ip_allowlist_applies_to_api_keys": True}
    response = client.patch("/api/v1/organization/policy", json=body, headers=csrf_headers(client),
                            environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert response.status_code == 200, response.get_json()
    started = time.monotonic()
    while True:
        probe = time.monotonic()  # every request of a probe that starts here is refused: in force by now
        if _statuses(workers, token) == {403} and _statuses(workers, key) == {403}:
            break
        assert probe - started < 1.0, "a worker still applies the old policy"
    elapsed = probe - started
    assert elapsed < 1.0
    refused = httpx2.get(f"{workers}/api/v1/me", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert refused.json()["error"]["code"] == "ip_not_allowed"
    print(f"\npolicy change in force in every worker after {elapsed * 1000:.0f} ms")
    response = client.patch("/api/v1/organization/policy", json={"ip_allowlist": None},
                            headers=csrf_headers(client), environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert response.status_code == 200
    started = time.monotonic()
    while _statuses(workers, token) != {200}:
        assert time.monotonic() - started < 1.0, "a worker still applies the old policy"
