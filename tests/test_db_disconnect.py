"""A connection the database dropped while the pool held it is replaced before a request uses it: the rule
behind ``SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True}`` (every profile's default). A ping only after an
idle spell was tried and dropped: the app's own applier and audit threads keep pooled connections busier than any
such limit, so a connection dropped in a quiet spell reached the next request (503) without a ping."""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy import create_engine, text

from hatidata_auth.config import DEFAULTS


def test_every_profile_pings_pooled_connections_at_checkout() -> None:
    assert DEFAULTS["SQLALCHEMY_ENGINE_OPTIONS"]["pool_pre_ping"] is True


@pytest.mark.postgres
def test_connections_terminated_in_the_pool_are_replaced_before_use(app: Flask) -> None:
    from hatidata_auth.extensions import db

    assert app.config["SQLALCHEMY_ENGINE_OPTIONS"].get("pool_pre_ping") is True
    with app.app_context():
        engine = db.engine
    held = [engine.connect() for _ in range(3)]  # three pooled connections, used a moment ago
    pids = {connection.execute(text("SELECT pg_backend_pid()")).scalar() for connection in held}
    for connection in held:
        connection.close()
    admin = create_engine(engine.url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            for pid in pids:
                assert connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
    finally:
        admin.dispose()
    client = app.test_client()
    for _ in range(len(pids) + 1):  # every request after the drop is answered: no pooled corpse reaches one
        assert client.get("/readyz").status_code == 200
