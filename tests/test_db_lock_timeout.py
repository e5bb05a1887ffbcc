"""A statement never waits for a PostgreSQL lock longer than ``HATIDATA_DB_LOCK_TIMEOUT``.

Nothing bounded a lock wait (a break-it review's L3): a transaction left holding a lock (a stuck migration, an
operator's open ``psql`` session) held every request that needed the row until gunicorn's timeout killed its worker.
Every connection now carries ``lock_timeout`` (``extensions.engine_options``), and a request that waited too long
answers 503 with ``Retry-After`` (``errors``), without being run again at once.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from hatidata_auth.extensions import db, engine_options
from tests.api_support import headers_for, make_tenant


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    app_config["HATIDATA_DB_LOCK_TIMEOUT"] = 0.5
    return app_config


def test_the_engine_options_carry_the_lock_timeout_on_postgresql_only() -> None:
    pg = "postgresql+psycopg://u@h/d"
    assert engine_options({"SQLALCHEMY_DATABASE_URI": pg, "HATIDATA_DB_LOCK_TIMEOUT": 2.5,
                           "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True}}) == {
        "pool_pre_ping": True, "connect_args": {"options": "-c lock_timeout=2500"}}
    kept = engine_options({"SQLALCHEMY_DATABASE_URI": pg, "HATIDATA_DB_LOCK_TIMEOUT": 1,
                           "SQLALCHEMY_ENGINE_OPTIONS": {"connect_args": {"options": "-c work_mem=8MB"}}})
    assert kept == {"connect_args": {"options": "-c work_mem=8MB -c lock_timeout=1000"}}
    assert engine_options({"SQLALCHEMY_DATABASE_URI": pg, "HATIDATA_DB_LOCK_TIMEOUT": 0}) == {}
    assert engine_options({"SQLALCHEMY_DATABASE_URI": "sqlite:///x.db", "HATIDATA_DB_LOCK_TIMEOUT": 20}) == {}


@pytest.mark.postgres
def test_every_connection_carries_the_lock_timeout(app: Flask) -> None:
    with app.app_context():
        assert db.session.scalar(text("SHOW lock_timeout")) == "500ms"
        db.session.remove()


@pytest.mark.postgres
def test_a_request_behind_a_held_lock_answers_503_without_waiting_for_ever(app: Flask, client: FlaskClient) -> None:
    """An operator's transaction holds the memberships table: the members list gives up after the lock timeout
    (503, ``Retry-After``), and answers once the lock is gone."""
    tenant = make_tenant(app, "LockHeld")
    with app.app_context():
        holder = db.engine.connect()
        holding = holder.begin()
        holder.execute(text("LOCK TABLE memberships IN ACCESS EXCLUSIVE MODE"))
        try:
            started = time.monotonic()
            answer = client.get("/api/v1/members", headers=headers_for(tenant, "admin"))
            waited = time.monotonic() - started
        finally:
            holding.rollback()
            holder.close()
    assert answer.status_code == 503, answer.get_json()
    assert answer.headers.get("Retry-After")
    assert waited < 10, waited
    assert client.get("/api/v1/members", headers=headers_for(tenant, "admin")).status_code == 200


def _holding_audit_chain(app: Flask, organization_id: str) -> tuple[Any, Any]:
    """Another transaction holds the organization's audit chain head (the lock every audited change takes)."""
    from hatidata_auth.causes import Actor, Cause
    from hatidata_auth.services import audit

    with app.app_context():
        audit.record(db.session(), action="test.seeded", cause=Cause.by(Actor.system("test")),
                     organization_id=organization_id, target_type="organization", target_id=organization_id)
        db.session.commit()
        holder = db.engine.connect()
        holding = holder.begin()
        holder.execute(text("SELECT * FROM audit_chain_heads WHERE chain_key = :k FOR UPDATE"), {"k": organization_id})
        db.session.remove()
    return holder, holding


@pytest.mark.postgres
def test_a_sign_in_whose_mirroring_waits_too_long_still_signs_in(app: Flask, client: FlaskClient) -> None:
    """The sign-in has committed its session when the mirroring of the person's other memberships gives up on a
    held lock (helper-127: the callback answered 503 without the cookie, over a session committed and never
    ended): logged, and the sign-in completes."""
    from tests.auth_support import ACME, GLOBEX, login, sync_organizations

    orgs = sync_organizations(app)
    holder, holding = _holding_audit_chain(app, orgs[GLOBEX])
    try:
        answer = login(client, "consultant@partners.test", organization_id=ACME)
    finally:
        holding.rollback()
        holder.close()
    assert answer.status_code == 302, answer.get_data(as_text=True)[:300]
    assert client.get_cookie(app.config["HATIDATA_COOKIE_NAME"]) is not None


@pytest.mark.postgres
def test_a_replay_whose_outcome_cannot_be_recorded_answers_503(app: Flask, client: FlaskClient,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The replay's handler fails and recording the failure (with the replay's audit) gives up on a held lock:
    503, nothing recorded (helper-127: 200 ``failed``, never audited, the attempt not counted)."""
    from sqlalchemy import func, select

    from hatidata_auth.models import AuditEvent
    from hatidata_auth.services import inbox

    tenant = make_tenant(app, "ReplayLock")

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("handler bug")

    monkeypatch.setattr(inbox, "apply_event", broken)
    holder, holding = _holding_audit_chain(app, tenant.id)
    try:
        answer = client.post(f"/api/v1/webhook-inbox/{tenant.ids['inbox_event']}/replay",
                             headers=headers_for(tenant, "admin"))
    finally:
        holding.rollback()
        holder.close()
    with app.app_context():
        audited = db.session.scalar(select(func.count()).select_from(AuditEvent)
                                    .where(AuditEvent.action == "webhook_event.replayed"))
        db.session.remove()
    assert answer.status_code == 503, answer.get_json()
    assert audited == 0


@pytest.mark.postgres
def test_an_event_behind_a_held_lock_waits_alone_and_the_batch_goes_on(app: Flask, emulator_control: Any) -> None:
    """Two WorkOS role changes in one applier batch; another transaction holds the first member's row. The first
    event gives up on the lock and waits for a later batch (``received``, its error kept); the second is applied
    (helper-127: the lock timeout rolled back the whole batch, and its other events were claimed again with the
    stuck one for as long as the lock was held)."""
    from sqlalchemy import select

    from hatidata_auth.models import WebhookEvent
    from hatidata_auth.services import inbox, inbox_worker
    from tests.support.membership_word import WorkOS, membership_of, sign_in
    from tests.test_inbox_batch_scope import _prepare
    from tests.test_membership_rows_race import _store_and_drain

    _prepare(app)
    held, free = WorkOS(emulator_control, app), WorkOS(emulator_control, app)
    for person in (held, free):
        person.add("viewer")
        sign_in(app, person, "viewer")
        _store_and_drain(app, person.events)
        person.set_role(person.events[0]["data"]["id"], "developer")
    row = membership_of(app, held)
    assert row is not None
    with app.app_context():
        holder = db.engine.connect()
        holding = holder.begin()
        holder.execute(text("SELECT id FROM memberships WHERE id = :id FOR UPDATE"), {"id": row.id})
        try:
            for person in (held, free):
                inbox.store(db.session(), person.events[-1])
            db.session.remove()
            report = inbox_worker.apply_batch(db.session(), app.extensions["hatidata_workos"].client, limit=10)
            db.session.remove()
        finally:
            holding.rollback()
            holder.close()
        stuck = db.session.scalar(select(WebhookEvent).where(WebhookEvent.event_id == held.events[-1]["id"]))
        assert stuck is not None
        assert stuck.status == "received", (stuck.status, stuck.last_error)
        assert "LockNotAvailable" in (stuck.last_error or "") or "lock timeout" in (stuck.last_error or "")
        db.session.remove()
    assert report is not None
    applied = membership_of(app, free)
    waiting = membership_of(app, held)
    assert applied is not None
    assert waiting is not None
    assert (applied.role, waiting.role) == ("developer", "viewer")
