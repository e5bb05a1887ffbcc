"""PostgreSQL faults against real processes: a private PostgreSQL that is stopped and started again.

- PostgreSQL down: ``/readyz`` 503; the API 503 with ``Retry-After``; browsers get an error page; webhooks 503
  so WorkOS retries; after recovery every event is applied exactly once.
- A gunicorn worker killed while its applier thread applies an acknowledged webhook: the batch's transaction
  dies with it, the replacement worker's appliers apply the event once.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, select, text

from hatidata_auth.extensions import db
from hatidata_auth.models import DirectoryUser, WebhookEvent
from tests.auth_support import csrf_headers, login, sync_organizations
from tests.support.dsync import audit_by_event, drain_inbox, wait_applied
from tests.support.processes import (
    AppProcess,
    PrivatePostgres,
    app_settings,
    migrated_database,
    private_postgres,  # noqa: F401 - fixture
)
from tests.support.servers import EmulatorControl, LiveServer

pytestmark = pytest.mark.slow

ACME_DIR = "directory_01HTDQ8D100000000000000001"
ACME_DEV_USER = "directory_user_01HTDQ8F100000000000000002"


@pytest.fixture
def app_config(app_config: dict[str, Any], private_postgres: PrivatePostgres,  # noqa: F811
               tmp_path: Path) -> dict[str, Any]:
    """The test's app, on its own migrated database in the private PostgreSQL."""
    name = f"hd_fault_{uuid.uuid4().hex[:8]}"
    app_config["SQLALCHEMY_DATABASE_URI"] = migrated_database(private_postgres, name, tmp_path / "migrate")
    app_config["SQLALCHEMY_ENGINE_OPTIONS"] = {"pool_pre_ping": True, "connect_args": {"connect_timeout": 2}}
    return app_config


@pytest.fixture
def live(app: Flask) -> Iterator[LiveServer]:
    server = LiveServer(app).start()
    yield server
    server.stop()


def _control(emulator: Any) -> EmulatorControl:
    return EmulatorControl(emulator.url)


def _wait(predicate: Any, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


def _inbox(app: Flask) -> list[tuple[str, str, int]]:
    with app.app_context():
        rows = db.session.execute(select(WebhookEvent.event_id, WebhookEvent.status, WebhookEvent.attempts)).all()
        db.session.remove()
    return [(str(a), str(b), int(c)) for a, b, c in rows]


def test_postgres_down_answers_503_and_loses_no_webhook(
    app: Flask, client: FlaskClient, emulator: Any, live: LiveServer, private_postgres: PrivatePostgres,  # noqa: F811
) -> None:
    sync_organizations(app)
    assert login(client, "admin@acme.test").status_code == 302
    created = client.post("/api/v1/api-keys", json={"name": "ops", "scopes": ["keys:read"]},
                          headers=csrf_headers(client))
    assert created.status_code == 201
    secret = created.get_json()["secret"]
    control = _control(emulator)
    control.register_webhook(f"{live.url}/webhooks/workos", app.config["WORKOS_WEBHOOK_SECRET"])
    control.webhook_settings(retry_base_s=0.2, max_attempts=40, timeout_s=5)
    control.flush()
    before = {d["id"] for d in control.deliveries()}

    private_postgres.stop()
    try:
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert "database" in ready.get_json()["failed"]

        by_key = client.get("/api/v1/api-keys", headers={"Authorization": f"Bearer {secret}"})
        assert by_key.status_code == 503, by_key.get_data(as_text=True)
        assert by_key.headers["Retry-After"].isdigit()
        body = by_key.get_json()["error"]
        assert body["code"] == "service_unavailable"
        assert body["request_id"] == by_key.headers["X-Request-ID"]

        write = client.post("/api/v1/api-keys", json={"name": "x"}, headers=csrf_headers(client))
        assert write.status_code == 503
        assert write.headers["Retry-After"].isdigit()

        page = client.get("/auth/login?email=dev@acme.test", headers={"Accept": "text/html"})
        assert page.status_code == 503
        assert page.mimetype == "text/html"
        assert "temporarily unavailable" in page.get_data(as_text=True)

        # The IdP changes things while we are down: WorkOS keeps delivering and we keep answering 503.
        control.ctl("PATCH", f"/directory_users/{ACME_DEV_USER}", {"job_title": "Principal Engineer"})
        control.ctl("POST", f"/directory_users/{ACME_DEV_USER}/suspend")
        control.ctl("POST", f"/directory_users/{ACME_DEV_USER}/reactivate")

        def all_refused_and_retried() -> bool:
            new = [d for d in control.deliveries() if d["id"] not in before]
            codes = [[h.get("status_code") for h in d.get("history", [])] for d in new]
            return (len(new) >= 3 and all(c and set(c) == {503} for c in codes)
                    and sum(len(c) for c in codes) > len(codes))

        _wait(all_refused_and_retried, 30, "webhooks were not refused with 503 (and retried) while PostgreSQL "
              f"was down: {[d for d in control.deliveries() if d['id'] not in before]}")
    finally:
        private_postgres.start()

    control.flush(timeout=60)
    drain_inbox(app)  # the in-process test server runs no applier threads
    new = [d for d in control.deliveries() if d["id"] not in before]
    assert {d["status"] for d in new} == {"delivered"}
    inbox = _inbox(app)
    assert len(inbox) == len({event_id for event_id, _, _ in inbox})
    assert len(inbox) >= 3
    assert all(status in ("applied", "ignored") for _, status, _ in inbox)
    audit = audit_by_event(app)
    assert audit
    assert max(audit.values()) == 1, f"an event was applied more than once: {audit}"
    with app.app_context():
        user = db.session.scalar(select(DirectoryUser).where(DirectoryUser.workos_id == ACME_DEV_USER))
        assert user is not None
        assert user.state == "active"
        db.session.remove()
    # And the app is back: ready, keys work.
    assert client.get("/readyz").status_code == 200
    again = client.get("/api/v1/api-keys", headers={"Authorization": f"Bearer {secret}"})
    assert again.status_code == 200, again.get_data(as_text=True)


def _worker_blocked_on(engine: Any, table: str) -> bool:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT query FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                 "AND datname = current_database()")).all()
    return any(table in str(q) for (q,) in rows)


def test_worker_killed_while_applying_a_webhook_applies_it_once(
    app: Flask, app_config: dict[str, Any], emulator: Any, tmp_path: Path,
) -> None:
    from tests.support.dsync import mirror_organizations

    with app.app_context():
        mirror_organizations(db.session, app.extensions["hatidata_workos"].client)
        db.session.commit()
        db.session.remove()
    settings = app_settings(app_config, CACHE_TYPE="SimpleCache")
    settings.pop("REDIS_URL", None)
    settings.pop("CACHE_DIR", None)
    control = _control(emulator)
    engine = create_engine(str(app_config["SQLALCHEMY_DATABASE_URI"]))
    with AppProcess(settings, tmp_path / "gunicorn", workers=1, name="killed") as server:
        control.register_webhook(f"{server.url}/webhooks/workos", app.config["WORKOS_WEBHOOK_SECRET"])
        control.webhook_settings(retry_base_s=0.2, max_attempts=40, timeout_s=20)
        victim = server.worker_pids()
        assert len(victim) == 1
        locker = engine.connect()
        transaction = locker.begin()
        try:
            # Hold the directory tables: the worker acknowledges the event, then its applier blocks applying it.
            locker.execute(text("LOCK TABLE directory_users IN ACCESS EXCLUSIVE MODE"))
            control.ctl("POST", f"/directories/{ACME_DIR}/users",
                        {"email": "newhire@acme.test", "first_name": "New", "last_name": "Hire"})
            _wait(lambda: _worker_blocked_on(engine, "directory_users") or _worker_blocked_on(engine, "INSERT"),
                  20, "the worker never got to applying the event")
            os.kill(victim[0], signal.SIGKILL)
            _wait(lambda: bool(server.worker_pids()) and server.worker_pids() != victim, 20,
                  "gunicorn did not replace the killed worker")
        finally:
            transaction.rollback()
            locker.close()
        control.flush(timeout=60)
        deliveries = [d for d in control.deliveries() if d.get("event") == "dsync.user.created"]
        assert deliveries
        assert {d["status"] for d in deliveries} == {"delivered"}
        wait_applied(app)  # by the replacement worker's applier
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT event_id, status, attempts FROM webhook_events "
                                 "WHERE event_type = 'dsync.user.created'")).all()
        users = conn.execute(text("SELECT count(*) FROM directory_users WHERE email = 'newhire@acme.test'")
                             ).scalar_one()
    engine.dispose()
    assert len(rows) == 1, rows
    assert rows[0][1] in ("applied", "ignored"), rows
    assert users == 1
    audit = audit_by_event(app)
    assert max(audit.values()) == 1, audit
