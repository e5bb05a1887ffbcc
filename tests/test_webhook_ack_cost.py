"""What acknowledging a webhook costs the database (issue #14): one statement, and on PostgreSQL no transaction
around it (the statement commits itself: no BEGIN and COMMIT round trips), whatever the event."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, event, select, text

from hatidata_auth import inbox_runtime
from hatidata_auth.causes import Actor, Cause
from hatidata_auth.extensions import db
from hatidata_auth.models import WebhookEvent
from hatidata_auth.models.inbox import INBOX_CHANNEL, REVOKING_NOTE
from hatidata_auth.services import inbox, inbox_worker
from hatidata_auth.services.applier_pool import ApplierPool
from tests.support.dsync import mirror_organizations, post_event
from tests.support.wakes import Wakes, inbox_listener
from tests.test_inbox_deprovision_now import REVOKING
from tests.test_inbox_deprovision_now import _minimal as minimal_event
from tests.test_webhooks import user_event

EVENTS = {
    "a new user": lambda n: user_event(f"event_ACK{n}"),
    "a known failed event's redelivery": lambda n: user_event(f"event_ACK{n}"),
    "an event type no handler takes": lambda n: {"id": f"event_ACK{n}", "event": "brand_new.thing_happened",
                                                 "created_at": "2030-01-01T00:00:01.000Z", "data": {"id": "x"}},
}


def _acknowledge(client: FlaskClient, app: Flask, payload: dict[str, Any]) -> tuple[Any, Counter[str]]:
    """POST *payload* (appliers not run) counting what SQLAlchemy sends: statements by verb, commits, rollbacks."""
    sent: Counter[str] = Counter()

    def statement(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
        sent[sql.split(None, 1)[0].upper()] += 1

    def commit(conn: Any) -> None:
        sent["commit"] += 1

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", statement)
    event.listen(engine, "commit", commit)
    try:
        response = post_event(client, app, payload, drain=False)
    finally:
        event.remove(engine, "before_cursor_execute", statement)
        event.remove(engine, "commit", commit)
    return response, sent


@pytest.mark.parametrize("case", sorted(EVENTS))
def test_an_acknowledgement_is_one_statement_committing_itself(case: str, client: FlaskClient, app: Flask,
                                                               db_session: Any, workos_client: Any,
                                                               app_config: dict[str, Any]) -> None:
    mirror_organizations(db_session, workos_client)
    db_session.commit()
    payload = EVENTS[case](len(case))
    if case.startswith("a known failed"):
        post_event(client, app, payload, drain=False)
        db_session.execute(WebhookEvent.__table__.update().where(WebhookEvent.event_id == payload["id"])
                           .values(status="failed"))
        db_session.commit()
    response, sent = _acknowledge(client, app, payload)
    assert response.status_code == 200, response.json
    assert response.json == {"event_id": payload["id"], "status": "received"}
    dialect = db_session.get_bind().dialect.name
    statements = {verb: n for verb, n in sent.items() if verb not in ("commit",)}
    assert sum(statements.values()) == 1, sent
    # PostgreSQL: the statement is its own transaction (no COMMIT sent); SQLite: the session's one commit.
    assert sent["commit"] == (0 if dialect == "postgresql" else 1), sent
    # Committed when the answer leaves: another connection sees the row as the appliers will.
    other = create_engine(app_config["SQLALCHEMY_DATABASE_URI"])
    try:
        with other.connect() as conn:
            status = conn.scalar(select(WebhookEvent.status).where(WebhookEvent.event_id == payload["id"]))
            assert status == ("ignored" if "no handler" in case else "received")
            if dialect == "postgresql":
                assert conn.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction'"
                                        " AND datname = current_database()")) == 0
    finally:
        other.dispose()


def test_a_duplicate_is_one_statement_and_changes_nothing(client: FlaskClient, app: Flask, db_session: Any,
                                                          workos_client: Any) -> None:
    mirror_organizations(db_session, workos_client)
    db_session.commit()
    payload = user_event("event_ACKDUP")
    post_event(client, app, payload)
    before = db_session.execute(select(WebhookEvent.status, WebhookEvent.attempts, WebhookEvent.updated_at)
                                .where(WebhookEvent.event_id == payload["id"])).one()
    db_session.commit()
    response, sent = _acknowledge(client, app, payload)
    assert response.json == {"event_id": payload["id"], "status": "duplicate"}
    assert sum(n for verb, n in sent.items() if verb != "commit") == 1, sent
    after = db_session.execute(select(WebhookEvent.status, WebhookEvent.attempts, WebhookEvent.updated_at)
                               .where(WebhookEvent.event_id == payload["id"])).one()
    assert after == before


@pytest.mark.postgres
def test_a_webhook_notifies_other_processes_only_when_its_own_has_no_appliers(
        client: FlaskClient, app: Flask, db_session: Any, workos_client: Any, app_config: dict[str, Any]) -> None:
    """A process running appliers wakes them itself; a NOTIFY per event would wake every listening process and cost
    the database a signal to each. A process without (``HATIDATA_INBOX_APPLIERS=0`` beside ``inbox work``)
    notifies, or the separate appliers would wait for their poll. A person's deactivation is applied by the request
    that acknowledges it: with appliers of its own, nobody needs waking."""
    mirror_organizations(db_session, workos_client)
    db_session.commit()
    with inbox_listener(app) as listener:
        heard = []
        cases = ((False, "active"), (True, "active"), (False, "active"), (True, "inactive"), (False, "inactive"))
        for n, (own_appliers, state) in enumerate(cases):
            if own_appliers:  # a pool of its own each time: a stopped pool does not start again
                pool = ApplierPool(lambda revoking_only: 0, threads=1, poll_interval=30)
                app.extensions[inbox_runtime.EXTENSION] = pool
                pool.start()
            try:
                response = post_event(client, app, user_event(f"event_NOTIFY{n}", state=state), drain=False)
            finally:
                if own_appliers:
                    pool.stop()
                    del app.extensions[inbox_runtime.EXTENSION]
            assert response.json["status"] == "received"
            heard.append([note.payload for note in listener.notifies(timeout=0.5)])
    # A person's deactivation is applied by its request: announced to nobody's deprovisioning thread either way.
    assert heard == [[""], [], [""], [], [""]]


@pytest.mark.postgres
@pytest.mark.parametrize("event_type", REVOKING)
def test_an_event_taking_access_away_from_many_is_announced_to_every_process_and_one_persons_is_not(
        app: Flask, db_session: Any, workos_client: Any, event_type: str) -> None:
    """Every process's deprovisioning thread wakes for a group's, directory's, connection's or organization's
    (the appliers apply those); a person's is applied by the acknowledging request, which wakes its own process's
    thread when it could not settle it (``tests/test_inbox_deprovision_now.py``)."""
    mirror_organizations(db_session, workos_client)
    db_session.commit()
    payload = minimal_event(event_type)
    with inbox_listener(app) as listener:
        with app.app_context():
            assert inbox.store(db.session(), payload, notify=False) == "received"
            db.session.remove()
        heard = [note.payload for note in listener.notifies(timeout=0.5)]
    assert heard == ([] if inbox.about_one_person(inbox.entity_key(payload)) else [REVOKING_NOTE])


@pytest.mark.postgres
def test_the_acknowledgements_connection_goes_back_to_the_pool_transactional(
        client: FlaskClient, app: Flask, db_session: Any, workos_client: Any) -> None:
    """The autocommit the insert runs in ends with it: every connection the pool hands out after an acknowledgement
    is transactional, so the next request's writes are atomic."""
    mirror_organizations(db_session, workos_client)
    db_session.commit()
    returned: list[bool] = []  # each checkout: whether the connection came in autocommit

    def checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        returned.append(bool(dbapi_connection.autocommit))

    with app.app_context():
        engine = db.engine
    event.listen(engine, "checkout", checkout)
    try:
        for n in range(3):
            assert post_event(client, app, user_event(f"event_POOL{n}"), drain=False).json["status"] == "received"
    finally:
        event.remove(engine, "checkout", checkout)
    assert returned
    assert not any(returned), returned


@pytest.mark.postgres
@pytest.mark.parametrize("notes", [("",), (REVOKING_NOTE,), ("", REVOKING_NOTE), (REVOKING_NOTE, "")])
def test_a_notify_wakes_the_deprovisioning_thread_only_for_work_that_takes_access_away(
        app: Flask, notes: tuple[str, ...]) -> None:
    """Every queued job NOTIFYs (a person's WorkOS revocation after each deprovisioning among them): each woke
    every process's deprovisioning thread for an empty claim. Notes sent in one transaction arrive in one read:
    a revoking one behind a job's is heard too (a fan-out chunk queues both: helper-159)."""
    with app.app_context():
        dsn = inbox_runtime.listen_dsn(app)
    assert dsn is not None
    claims: dict[bool, int] = {True: 0, False: 0}

    def run_batch(revoking_only: bool) -> int:
        claims[revoking_only] += 1
        return 0

    pool = ApplierPool(run_batch, threads=1, poll_interval=30, listen_dsn=dsn)
    pool.start()
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not (claims[True] >= 2 and claims[False] >= 2):
            time.sleep(0.05)  # each thread's claim at start, and the listener's catch-up wake once it listens
        time.sleep(0.3)
        before = dict(claims)
        with psycopg.connect(dsn) as sender:  # one transaction: delivered together at its commit
            for note in notes:
                sender.execute("SELECT pg_notify(%s, %s)", (INBOX_CHANNEL, note))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and claims[False] == before[False]:
            time.sleep(0.02)
        time.sleep(0.3)
    finally:
        pool.stop()
    assert claims[False] > before[False]
    assert (claims[True] > before[True]) == (REVOKING_NOTE in notes), (before, claims)


@pytest.mark.postgres
@pytest.mark.parametrize("own_appliers", [False, True])
@pytest.mark.parametrize("held_up", [False, True])
def test_a_persons_deprovisioning_left_pending_is_announced_to_every_process(
        app: Flask, db_session: Any, workos_client: Any, held_up: bool, own_appliers: bool) -> None:
    """Not announced when stored (its request applies it), a person's revoking event the request could not settle
    (here: more older events of the person ahead than it applies) is announced then, so that every process's
    deprovisioning thread wakes for it, as for a group's; one settled is not."""
    mirror_organizations(db_session, workos_client)
    db_session.commit()
    earlier = [user_event(f"event_ANN{int(held_up)}_{n}")
               for n in range(inbox_worker.APPLY_NOW_MAX + 1 if held_up else 0)]
    with app.app_context():
        for payload in earlier:
            inbox.store(db.session(), payload, notify=False)
        db.session.remove()
    wakes = Wakes(running=own_appliers)  # with appliers of its own the store notifies nobody, else with ""
    app.extensions[inbox_runtime.EXTENSION] = wakes
    deactivation = user_event(f"event_ANN{int(held_up)}_X", state="inactive", updated_at="2030-01-02T00:00:00.000Z")
    try:
        with inbox_listener(app) as listener:
            with app.test_request_context("/webhooks/workos", method="POST"):
                assert inbox.store(db.session(), deactivation, notify=not own_appliers) == "received"
                inbox_runtime.acknowledged(app, deactivation, Cause.by(Actor.workos()))
                db.session.remove()
            heard = [note.payload for note in listener.notifies(timeout=0.5)]
    finally:
        del app.extensions[inbox_runtime.EXTENSION]
    assert heard.count(REVOKING_NOTE) == int(held_up), heard  # "" ones: the store's without appliers, jobs'
    assert wakes.calls == [held_up]
