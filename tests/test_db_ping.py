"""Pooled connections are pinged at checkout only after sitting idle (``hatidata_auth.db_ping``): the rule is
**a connection checked in (or connected) at most ``HATIDATA_DB_PING_IDLE`` seconds ago is used without a ping; one
idle longer is pinged, and replaced when the ping fails** (on PostgreSQL, a backend terminated while idle)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from hatidata_auth import db_ping
from hatidata_auth.config import DEFAULTS

IDLE = 0.15


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    app_config["HATIDATA_DB_PING_IDLE"] = IDLE
    return app_config


def _engine(app: Flask) -> Engine:
    from hatidata_auth.extensions import db

    with app.app_context():
        return db.engine


def _counting(engine: Engine, patch: pytest.MonkeyPatch) -> list[float]:
    """Record each ping of *engine*'s dialect (the app's own engine; nothing of WorkOS's is touched)."""
    pings: list[float] = []
    real = engine.dialect.do_ping

    def ping(dbapi_connection: Any) -> bool:
        pings.append(time.monotonic())
        return bool(real(dbapi_connection))

    patch.setattr(engine.dialect, "do_ping", ping)
    return pings


def _use(engine: Engine) -> None:
    with engine.connect() as connection:
        assert connection.execute(text("SELECT 1")).scalar() == 1


def test_the_default_pings_idle_connections_only() -> None:
    assert DEFAULTS["HATIDATA_DB_PING_IDLE"] == db_ping.DEFAULT_IDLE == 1.0
    assert "pool_pre_ping" not in DEFAULTS["SQLALCHEMY_ENGINE_OPTIONS"]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(gaps=st.lists(st.sampled_from([0.0, 0.01, IDLE * 2]), min_size=1, max_size=5))
def test_a_connection_is_pinged_exactly_when_it_sat_idle(app: Flask, gaps: list[float]) -> None:
    engine = _engine(app)
    engine.dispose()  # a fresh pool: its first checkout is a new connection, which has just answered
    with pytest.MonkeyPatch.context() as patch:
        pings = _counting(engine, patch)
        _use(engine)
        assert pings == []
        for gap in gaps:
            before = len(pings)
            time.sleep(gap)
            _use(engine)
            assert len(pings) == before + (1 if gap > IDLE else 0), gaps


def test_pool_pre_ping_keeps_sqlalchemys_ping(database_url: str) -> None:
    engine = create_engine(database_url, pool_pre_ping=True)
    try:
        db_ping.install(engine, 60.0)
        with pytest.MonkeyPatch.context() as patch:
            pings = _counting(engine, patch)
            for _ in range(3):
                _use(engine)
            assert len(pings) == 2  # SQLAlchemy's own, at every checkout but the new connection's; ours stood aside
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_connection_terminated_while_idle_is_replaced_before_use(app: Flask) -> None:
    engine = _engine(app)
    with engine.connect() as connection:
        pid = connection.execute(text("SELECT pg_backend_pid()")).scalar()
    admin = create_engine(engine.url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            assert connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar() is True
    finally:
        admin.dispose()
    time.sleep(IDLE * 2)
    with engine.connect() as connection:  # the pooled connection fails its ping and is replaced
        assert connection.execute(text("SELECT pg_backend_pid()")).scalar() != pid
