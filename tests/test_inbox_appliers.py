"""The inbox appliers (issue #14): per-entity order under any delivery order, one failing event in a batch, two
appliers sharing the inbox with ``SKIP LOCKED``, an applier process killed mid-batch, and applier threads in
gunicorn workers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx2
import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, select, text

from hatidata_auth import inbox_runtime
from hatidata_auth.extensions import db
from hatidata_auth.models import Organization, WebhookEvent
from hatidata_auth.services import inbox, inbox_worker
from tests.support.dsync import audit_by_event, forget_events, member_roles, mirror_all, sign, wait_applied
from tests.support.processes import ROOT, AppProcess, app_settings

ACME_DIR = "directory_01HTDQ8D100000000000000001"
ACME_ORG = "org_01HTDQ8A100000000000000001"
GLOBEX_DIR = "directory_01HTDQ8D200000000000000001"
GLOBEX_ORG = "org_01HTDQ8A200000000000000001"


def user_event(user: str, n: int, *, directory: str = ACME_DIR, organization: str = ACME_ORG,
               domain: str = "acme.test", state: str = "active", event_id: str | None = None) -> dict[str, Any]:
    """The *n*-th ``dsync.user.updated`` of directory user *user* (event and object time grow with *n*)."""
    stamp = f"2030-01-01T00:{n // 60:02d}:{n % 60:02d}.000Z"
    return {
        "id": event_id or f"event_{uuid.uuid4().hex[:24].upper()}", "event": "dsync.user.updated",
        "created_at": stamp,
        "data": {"object": "directory_user", "id": f"directory_user_{user}", "directory_id": directory,
                 "organization_id": organization, "idp_id": user, "email": f"{user.lower()}@{domain}",
                 "first_name": "Step", "last_name": str(n), "state": state, "custom_attributes": {},
                 "raw_attributes": {}, "created_at": "2030-01-01T00:00:00.000Z", "updated_at": stamp},
    }


@pytest.fixture
def synced(app: Flask) -> dict[str, str]:
    """Our organization ids by domain."""
    return mirror_all(app)


def _store(app: Flask, events: list[dict[str, Any]]) -> list[str]:
    with app.app_context():
        answers = [inbox.store(db.session(), payload) for payload in events]
        db.session.remove()
    return answers


def _rows(app: Flask, event_ids: list[str]) -> dict[str, WebhookEvent]:
    with app.app_context():
        rows = {r.event_id: r for r in db.session.scalars(select(WebhookEvent)
                                                          .where(WebhookEvent.event_id.in_(event_ids)))}
        db.session.expunge_all()
        db.session.remove()
    return rows


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_events_of_one_entity_apply_in_event_order_whatever_the_delivery_order(
        app: Flask, synced: dict[str, str], data: st.DataObject) -> None:
    users = [f"P{uuid.uuid4().hex[:10].upper()}" for _ in range(data.draw(st.integers(1, 3)))]
    history = [user_event(user, n) for user in users for n in range(data.draw(st.integers(1, 4)))]
    duplicates = data.draw(st.lists(st.sampled_from(history), max_size=3))
    delivery = data.draw(st.permutations(history + duplicates))
    # Every draw before the first write: a draw may end the example (Hypothesis's StopTest), which must leave no
    # pending event behind for the next one.
    limit = data.draw(st.integers(1, 4))
    first = {e["id"] for e in delivery if e in history}
    applied: list[str] = []
    try:
        answers = _store(app, delivery)
        assert answers.count("received") == len(first)
        assert answers.count("duplicate") == len(duplicates)
        _apply_all(app, history, limit, applied)
        assert sorted(applied) == sorted(first)  # each exactly once
    except BaseException:
        forget_events(app, [e["id"] for e in history])  # a failed example leaves no pending event to the next one
        raise
    for user in users:
        expected = [e["id"] for e in history if e["data"]["id"] == f"directory_user_{user}"]  # event order
        assert [i for i in applied if i in expected] == expected
    assert {r.attempts for r in _rows(app, applied).values()} == {1}


def _apply_all(app: Flask, history: list[dict[str, Any]], limit: int, applied: list[str]) -> None:
    """Apply batches of at most *limit* events until none is claimed, checking each batch, into *applied*."""
    ours = {e["id"]: e for e in history}
    with app.app_context():
        client = app.extensions["hatidata_workos"].client
        # Each event in turn: the claim's own order (runs of snapshots applied as their newest are
        # tests/test_inbox_coalesce.py's).
        while (report := inbox_worker.apply_batch(db.session(), client, limit=limit, coalesce=False)).claimed:
            # Only this example's events are pending (a foreign one, left by an earlier example or test, is named).
            foreign = [(r.event_id, r.event_type, r.status, r.note) for r in report.results if r.event_id not in ours]
            assert not foreign, f"claimed events this example did not store: {foreign}"
            keys = [inbox.entity_key(ours[r.event_id]) for r in report.results]
            assert len(keys) == len(set(keys)), "two events of one entity in one batch"
            assert {r.status for r in report.results} == {"applied"}, report.results
            applied += [r.event_id for r in report.results]
        db.session.remove()


def test_events_that_revoke_access_are_claimed_before_a_backlog_but_never_before_their_entitys_older_events(
        app: Flask, synced: dict[str, str]) -> None:
    backlog = [user_event(f"L{i}{uuid.uuid4().hex[:6].upper()}", i) for i in range(4)]
    waiting = f"W{uuid.uuid4().hex[:8].upper()}"
    older_of_waiting = user_event(waiting, 5)
    deactivations = [user_event(f"D{uuid.uuid4().hex[:8].upper()}", 10, state="inactive"),
                     user_event(waiting, 11, state="suspended")]
    _store(app, [*backlog, older_of_waiting, *deactivations])
    with app.app_context():
        session = db.session()
        first = inbox_worker.claim(session, limit=1)
        session.rollback()
        order = [e.event_id for e in inbox_worker.claim(session, limit=10)]
        session.rollback()
        db.session.remove()
    assert [e.event_id for e in first] == [deactivations[0]["id"]]
    assert order[0] == deactivations[0]["id"]  # and applied first in its batch
    assert deactivations[1]["id"] not in order  # behind its own older event
    assert older_of_waiting["id"] in order
    with app.app_context():
        session = db.session()
        urgent = [e.event_id for e in inbox_worker.claim(session, limit=10, revoking_only=True)]
        session.rollback()
        db.session.remove()
    # The deprovisioning thread's claim: the deactivation, and the older event the suspension waits behind (its
    # key's head: the suspension comes next, without waiting for the batch appliers to reach it).
    assert urgent == [deactivations[0]["id"], older_of_waiting["id"]]


def test_a_failing_event_is_rolled_back_alone_and_the_batch_commits(
        app: Flask, synced: dict[str, str]) -> None:
    with app.app_context():
        acme = db.session.get(Organization, synced["acme.test"])
        acme.default_role = "superuser"  # not a role: provisioning an acme user fails
        db.session.commit()
    events = [user_event("GOOD1", 1, directory=GLOBEX_DIR, organization=GLOBEX_ORG, domain="globex.test"),
              user_event("BAD1", 2),
              user_event("GOOD2", 3, directory=GLOBEX_DIR, organization=GLOBEX_ORG, domain="globex.test")]
    _store(app, events)
    with app.app_context():
        report = inbox_worker.apply_batch(db.session(), app.extensions["hatidata_workos"].client, limit=10)
        db.session.remove()
    assert report.claimed == 3
    assert [(r.event_id, r.status) for r in report.results] == [
        (events[0]["id"], "applied"), (events[1]["id"], "failed"), (events[2]["id"], "applied")]
    rows = _rows(app, [e["id"] for e in events])
    assert rows[events[1]["id"]].status == "failed"
    assert (rows[events[1]["id"]].last_error or "").startswith("ValueError: ")
    assert "superuser" in (rows[events[1]["id"]].last_error or "")
    audited = {event_id for event_id, _, _ in audit_by_event(app)}
    assert events[1]["id"] not in audited  # its audit events were rolled back with it
    assert {events[0]["id"], events[2]["id"]} <= audited
    with app.app_context():
        assert "bad1@acme.test" not in member_roles(db.session, synced["acme.test"])
        assert set(member_roles(db.session, synced["globex.test"])) >= {"good1@globex.test", "good2@globex.test"}


@pytest.mark.postgres
@pytest.mark.parametrize("coalesce", [False, True], ids=["each", "runs"])
def test_two_appliers_share_the_inbox_and_apply_each_event_once_in_order(
        app: Flask, synced: dict[str, str], coalesce: bool) -> None:
    """Each event settled by one applier, in its entity's order; with *coalesce*, a run of a user's snapshots is
    recorded with its newest, in one transaction (their ``applied_at`` in order, not necessarily distinct)."""
    users = [f"C{i}{uuid.uuid4().hex[:6].upper()}" for i in range(8)]
    history = [user_event(user, n) for n in range(5) for user in users]
    _store(app, list(reversed(history)))
    seen: list[list[str]] = [[], []]
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def applier(index: int) -> None:
        try:
            barrier.wait()
            with app.app_context():
                client = app.extensions["hatidata_workos"].client
                while True:
                    report = inbox_worker.apply_batch(db.session(), client, limit=3, coalesce=coalesce)
                    seen[index] += [r.event_id for r in report.results]
                    if not report.claimed and not inbox_worker.pending(db.session()):
                        break
        except Exception as exc:  # noqa: BLE001 - handed to the main thread, which fails the test with it
            errors.append(exc)

    threads = [threading.Thread(target=applier, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    everything = seen[0] + seen[1]
    assert sorted(everything) == sorted(e["id"] for e in history)  # each event by exactly one applier
    assert seen[0], "SKIP LOCKED should let both appliers work"
    assert seen[1], "SKIP LOCKED should let both appliers work"
    rows = _rows(app, everything)
    assert {r.status for r in rows.values()} == {"applied"}
    for user in users:
        ordered = [rows[e["id"]].applied_at for e in history if e["data"]["id"] == f"directory_user_{user}"]
        assert ordered == sorted(ordered)
        assert coalesce or len(set(ordered)) == len(ordered)
    assert max(audit_by_event(app).values()) == 1


# --- an applier process killed mid-batch ----------------------------------------------------------------------


def _inbox_work(settings_file: Path, instance: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "HATIDATA_ENV": "testing", "HATIDATA_SETTINGS": str(settings_file),
           "HATIDATA_INSTANCE_PATH": str(instance), "PYTHONPATH": str(ROOT)}
    with log.open("ab") as out:
        return subprocess.Popen(  # our own interpreter and arguments
            [sys.executable, "-m", "flask", "--app", "wsgi", "hatidata", "inbox", "work", "--threads", "1"],
            env=env, cwd=str(ROOT), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _wait(check: Any, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


@pytest.fixture
def applier_settings(app_config: dict[str, Any], tmp_path: Path) -> Path:
    path = tmp_path / "applier-settings.py"
    values = app_settings(app_config, HATIDATA_INBOX_BATCH=100, HATIDATA_INBOX_POLL_INTERVAL=0.2)
    path.write_text("".join(f"{k} = {v!r}\n" for k, v in values.items()))
    return path


@pytest.mark.postgres
@pytest.mark.slow
def test_an_applier_killed_mid_batch_loses_nothing_and_applies_nothing_twice(
        app: Flask, app_config: dict[str, Any], synced: dict[str, str], applier_settings: Path,
        tmp_path: Path) -> None:
    blocked_user = f"K{uuid.uuid4().hex[:8].upper()}"
    _store(app, [user_event(blocked_user, 0)])
    with app.app_context():
        inbox_worker.drain(db.session(), app.extensions["hatidata_workos"].client)
        db.session.remove()
    # A batch: five new users, then an update of the blocked user (its row is held below), then five more.
    batch = [user_event(f"B{i}{uuid.uuid4().hex[:6].upper()}", i + 1) for i in range(5)]
    batch += [user_event(blocked_user, 6)]
    batch += [user_event(f"A{i}{uuid.uuid4().hex[:6].upper()}", i + 7) for i in range(5)]
    engine = create_engine(str(app_config["SQLALCHEMY_DATABASE_URI"]))
    locker = engine.connect()
    transaction = locker.begin()
    log = tmp_path / "applier.log"
    first = second = None
    try:
        locker.execute(text("SELECT 1 FROM directory_users WHERE workos_id = :id FOR UPDATE"),
                       {"id": f"directory_user_{blocked_user}"})
        _store(app, batch)
        first = _inbox_work(applier_settings, tmp_path / "instance", log)

        def applier_waits_on_the_row() -> bool:
            with engine.connect() as conn:
                return bool(conn.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database() AND query ILIKE '%directory_users%'")).scalar_one())

        _wait(applier_waits_on_the_row, 30, f"the applier never blocked: {log.read_text(errors='replace')[-2000:]}")
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
    finally:
        transaction.rollback()
        locker.close()
    ids = [e["id"] for e in batch]
    rows = _rows(app, ids)
    assert {r.status for r in rows.values()} == {"received"}, "the killed batch's work must have rolled back"
    assert {r.attempts for r in rows.values()} == {0}
    second = _inbox_work(applier_settings, tmp_path / "instance", log)
    try:
        _wait(lambda: {r.status for r in _rows(app, ids).values()} == {"applied"}, 60,
              f"the restarted applier did not apply the batch: {log.read_text(errors='replace')[-2000:]}")
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(15)
    engine.dispose()
    assert second.returncode == 0
    assert {r.attempts for r in _rows(app, ids).values()} == {1}
    audit = audit_by_event(app)
    assert max(audit.values()) == 1, audit
    assert set(ids) <= {event_id for event_id, _, _ in audit}
    with app.app_context():
        roles = member_roles(db.session, synced["acme.test"])
    assert all(e["data"]["email"] in roles for e in batch)


# --- applier threads in gunicorn workers ----------------------------------------------------------------------


@pytest.mark.slow
def test_gunicorn_workers_acknowledge_and_their_applier_threads_apply(
        app: Flask, app_config: dict[str, Any], synced: dict[str, str], tmp_path: Path) -> None:
    settings_ = app_settings(app_config, HATIDATA_INBOX_APPLIERS=1, HATIDATA_INBOX_POLL_INTERVAL=30)
    secret = app.config["WORKOS_WEBHOOK_SECRET"]
    users = [f"G{i}{uuid.uuid4().hex[:6].upper()}" for i in range(6)]
    with AppProcess(settings_, tmp_path / "gunicorn", workers=2, name="appliers") as server:
        for n, user in enumerate(users):
            body = json.dumps(user_event(user, n), separators=(",", ":"))
            response = httpx2.post(f"{server.url}/webhooks/workos", content=body, timeout=30,
                                   headers={"WorkOS-Signature": sign(secret, body), "Content-Type": "application/json"})
            assert response.status_code == 200, response.text
            assert response.json() == {"event_id": json.loads(body)["id"], "status": "received"}
        # A long poll interval: only the wake-up (NOTIFY, or the receiving worker's own) applies them promptly.
        wait_applied(app, timeout=10)
    with app.app_context():
        roles = member_roles(db.session, synced["acme.test"])
    assert {f"{u.lower()}@acme.test" for u in users} <= set(roles)


def test_the_app_runs_no_appliers_under_testing_unless_asked(app_config: dict[str, Any]) -> None:
    from hatidata_auth import create_app

    assert inbox_runtime.EXTENSION not in create_app(app_config).extensions
    pool = create_app({**app_config, "HATIDATA_INBOX_APPLIERS": 2}).extensions[inbox_runtime.EXTENSION]
    assert not pool.running  # started by the first request or gunicorn's post_worker_init, never by the factory
