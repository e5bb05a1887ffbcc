"""Pinging a pooled database connection before use only when it sat idle.

SQLAlchemy's ``pool_pre_ping`` pings at every checkout: a round trip per request, about 5 % of an acknowledged
webhook's CPU (``bench.ack_profile``). A connection checked in moments ago is as alive as it was then; one idle
longer may have been closed by the server, a proxy's idle timeout or a restart. So a connection is pinged at
checkout only when it was checked in (or connected) more than ``HATIDATA_DB_PING_IDLE`` seconds ago (default 1;
``0`` pings at every checkout but the first, as ``pool_pre_ping`` does). One that fails its ping is replaced: the pool
retries the checkout with a new connection (``DisconnectionError``), and the request never sees it.

What is given up: a connection lost while in steady use (a restart under load) fails its statement once, as it
would between the ping and the statement anyway; SQLAlchemy then invalidates the whole pool, so the following
checkouts get new connections. ``SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True}`` keeps SQLAlchemy's ping
at every checkout, and this one stands aside.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy import event, exc
from sqlalchemy.engine import Engine

DEFAULT_IDLE = 1.0
_CHECKED_IN = "hatidata_checked_in"  # key in the connection record's info: time.monotonic() at its last checkin


def install(engine: Engine, idle: float) -> None:
    """Ping *engine*'s connections that sat idle more than *idle* seconds, at checkout (none when the engine's
    pool already pings every checkout)."""
    if getattr(engine.pool, "_pre_ping", False):
        return

    @event.listens_for(engine, "connect")
    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:  # a new connection counts as just used: it has just answered the handshake
            record.info[_CHECKED_IN] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        last = record.info.get(_CHECKED_IN)
        if last is not None and time.monotonic() - last <= idle:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            # The pool discards this connection and checks out another (up to three attempts).
            raise exc.DisconnectionError(f"connection failed its ping after sitting idle: {error}") from error


def init_app(engines: Mapping[Any, Engine], config: Mapping[str, Any]) -> None:
    """Install :func:`install` on every engine of the app, with ``HATIDATA_DB_PING_IDLE`` seconds."""
    idle = float(config.get("HATIDATA_DB_PING_IDLE", DEFAULT_IDLE))
    for engine in engines.values():
        install(engine, idle)
