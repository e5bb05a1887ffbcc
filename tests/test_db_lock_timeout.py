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
