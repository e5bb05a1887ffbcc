"""Two app instances (gunicorn, 2 workers each, different ports) sharing one database and one Redis.

- a session revoked through one instance is rejected by the other within 1 s;
- webhooks delivered to either instance (or both, concurrently) are applied once;
- ``/metrics`` aggregates every worker when ``PROMETHEUS_MULTIPROC_DIR`` is set.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from hatidata_auth.extensions import db
from hatidata_auth.models import AuditEvent, WebhookEvent
from tests.auth_support import access_token, login, sync_organizations
from tests.support.dsync import sign, wait_applied
from tests.support.processes import AppProcess, PrivateRedis, app_settings
from tests.support.servers import EmulatorControl

pytestmark = pytest.mark.slow

ACME_DIR = "directory_01HTDQ8D100000000000000001"


@pytest.fixture
def redis_url() -> Iterator[str]:
    """The suite's Redis when there is one, else a private redis-server."""
    if os.environ.get("TEST_REDIS_URL"):
        yield os.environ["TEST_REDIS_URL"]
        return
    server = PrivateRedis()
    server.start()
    yield server.url
    server.stop()


@pytest.fixture
def app_config(app_config: dict[str, Any], redis_url: str) -> dict[str, Any]:
    app_config["REDIS_URL"] = redis_url
    return app_config


@pytest.fixture
def instances(app: Flask, app_config: dict[str, Any], tmp_path: Path) -> Iterator[tuple[AppProcess, AppProcess]]:
    metrics_dir = tmp_path / "prom-a"
    a = AppProcess(app_settings(app_config), tmp_path / "a", workers=2, name="a",
                   env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
    b = AppProcess(app_settings(app_config), tmp_path / "b", workers=2, name="b")
    with a, b:
        yield a, b


def _me(url: str, token: str) -> int:
    with httpx2.Client(timeout=10) as c:
        return c.get(f"{url}/api/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code


def _burst(url: str, token: str, n: int = 16) -> set[int]:
    with ThreadPoolExecutor(8) as pool:
        return set(pool.map(lambda _: _me(url, token), range(n)))


def test_session_revoked_on_one_instance_is_rejected_by_the_other_within_a_second(
    app: Flask, client: FlaskClient, instances: tuple[AppProcess, AppProcess],
) -> None:
    a, b = instances
    sync_organizations(app)
    assert login(client, "dev@acme.test").status_code == 302
    token = access_token(app, client)
    admin = app.test_client()
    assert login(admin, "admin@acme.test").status_code == 302
    admin_token = access_token(app, admin)
    deadline = time.monotonic() + 10
    while _burst(a.url, token) != {200} or _burst(b.url, token) != {200}:  # both cached it in memory
        assert time.monotonic() < deadline
    session_id = httpx2.get(f"{a.url}/api/v1/me", headers={"Authorization": f"Bearer {token}"},
                            timeout=10).json()["session_id"]
    revoked = httpx2.post(f"{a.url}/api/v1/sessions/{session_id}/revoke", json={"reason": "test"},
                          headers={"Authorization": f"Bearer {admin_token}"}, timeout=10)
    assert revoked.status_code == 200, revoked.text
    started = time.monotonic()
    while _burst(b.url, token) != {401}:
        assert time.monotonic() - started < 1.0, "instance b still accepts the session revoked on a"
    assert _burst(b.url, token, 32) == {401}
    assert _burst(a.url, token, 32) == {401}


def test_webhooks_delivered_to_either_instance_apply_once(
    app: Flask, emulator: Any, instances: tuple[AppProcess, AppProcess],
) -> None:
    a, b = instances
    sync_organizations(app)
    control = EmulatorControl(emulator.url)
    secret = app.config["WORKOS_WEBHOOK_SECRET"]
    # Every event goes to both instances (as if WorkOS retried through another instance), with duplicates.
    control.register_webhook(f"{a.url}/webhooks/workos", secret)
    control.register_webhook(f"{b.url}/webhooks/workos", secret)
    control.webhook_settings(duplicate_rate=0.5, retry_base_s=0.2, max_attempts=20)
    for i in range(5):
        control.ctl("POST", f"/directories/{ACME_DIR}/users",
                    {"email": f"multi{i}@acme.test", "first_name": "Multi", "last_name": str(i)})
    assert control.flush(timeout=60)
    deliveries = control.deliveries()
    assert {d["status"] for d in deliveries} == {"delivered"}
    # And one event posted to both instances at the same moment, several times.
    payload = next(e for e in control.events() if e["event"] == "dsync.user.created")
    body = json.dumps({**{k: payload[k] for k in ("event", "data", "created_at")},
                       "id": "event_" + uuid.uuid4().hex[:24].upper()}, separators=(",", ":"))

    def post(url: str) -> int:
        headers = {"WorkOS-Signature": sign(secret, body), "Content-Type": "application/json"}
        return httpx2.post(f"{url}/webhooks/workos", content=body, headers=headers, timeout=30).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(post, [a.url, b.url] * 4))
    assert set(statuses) == {200}
    wait_applied(app)  # by the instances' applier threads
    with app.app_context():
        ids = [e for (e,) in db.session.execute(select(WebhookEvent.event_id)).all()]
        audit = Counter(db.session.execute(select(AuditEvent.source_event_id, AuditEvent.action,
                                                  AuditEvent.target_id)
                                           .where(AuditEvent.source_event_id.is_not(None))).all())
        db.session.remove()
    assert len(ids) == len(set(ids))
    assert {d["event_id"] for d in deliveries} | {json.loads(body)["id"]} <= set(ids)
    assert max(audit.values()) == 1, audit

    # The instance in multi-process mode reports every worker's samples in one scrape.
    scraped = httpx2.get(f"{a.url}/metrics", timeout=10).text
    assert "hatidata_webhook_events_total" in scraped
    assert 'outcome="duplicate"' in scraped or 'outcome="received"' in scraped
    assert "hatidata_http_request_duration_seconds_bucket" in scraped
