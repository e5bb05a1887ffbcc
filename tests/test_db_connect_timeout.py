"""A new PostgreSQL connection never takes longer than ``HATIDATA_DB_CONNECT_TIMEOUT``.

Nothing bounded it: a server or proxy that accepts the TCP connection and never answers (a hung server, a
half-failed-over proxy) held every request that needed a new connection past gunicorn's 30 s timeout (measured: a
``/readyz`` still waiting after 60 s). Every connection now carries libpq's ``connect_timeout``
(``extensions.engine_options``), and the request answers 503 as with a database that refuses.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from hatidata_auth import create_app, inbox_runtime
from hatidata_auth.config import ConfigError
from hatidata_auth.extensions import engine_options
from tests.support.dsync import sign
from tests.test_webhooks import user_event

PG = "postgresql+psycopg://u@h/d"


def test_the_engine_options_carry_the_connect_timeout_on_postgresql_only() -> None:
    def connect_args(**config: Any) -> Any:
        return engine_options({"SQLALCHEMY_DATABASE_URI": PG, "HATIDATA_DB_LOCK_TIMEOUT": 0, **config}).get(
            "connect_args")

    assert connect_args(HATIDATA_DB_CONNECT_TIMEOUT=5.0) == {"connect_timeout": 5}
    assert connect_args(HATIDATA_DB_CONNECT_TIMEOUT=2.2) == {"connect_timeout": 3}  # whole seconds, rounded up
    assert connect_args(HATIDATA_DB_CONNECT_TIMEOUT=0.5) == {"connect_timeout": 2}  # libpq's least
    assert connect_args(HATIDATA_DB_CONNECT_TIMEOUT=0) is None
    assert connect_args(HATIDATA_DB_CONNECT_TIMEOUT=5, SQLALCHEMY_ENGINE_OPTIONS={
        "connect_args": {"connect_timeout": 30}}) == {"connect_timeout": 30}  # the operator's own is kept
    both = engine_options({"SQLALCHEMY_DATABASE_URI": PG, "HATIDATA_DB_LOCK_TIMEOUT": 1,
                           "HATIDATA_DB_CONNECT_TIMEOUT": 4})
    assert both == {"connect_args": {"options": "-c lock_timeout=1000", "connect_timeout": 4}}
    assert engine_options({"SQLALCHEMY_DATABASE_URI": "sqlite:///x.db", "HATIDATA_DB_CONNECT_TIMEOUT": 5}) == {}
    in_url = engine_options({"SQLALCHEMY_DATABASE_URI": PG + "?connect_timeout=30", "HATIDATA_DB_CONNECT_TIMEOUT": 5})
    assert in_url == {}  # the URL's own is kept: connect_args would override it


@pytest.mark.parametrize("value", ["-1", "inf", "nan", "soon"])
def test_a_connect_timeout_that_is_not_a_number_of_seconds_stops_the_start(
        app_config: dict[str, Any], value: str) -> None:
    with pytest.raises(ConfigError, match="HATIDATA_DB_CONNECT_TIMEOUT must be 0 or a number of seconds"):
        create_app({**app_config, "SQLALCHEMY_DATABASE_URI": PG, "HATIDATA_DB_CONNECT_TIMEOUT": value})


def test_the_appliers_listen_connection_is_bounded_as_the_pools(app_config: dict[str, Any]) -> None:
    app = create_app({**app_config, "SQLALCHEMY_DATABASE_URI": PG, "HATIDATA_DB_CONNECT_TIMEOUT": 3})
    assert inbox_runtime.listen_dsn(app) == "postgresql://u@h/d?connect_timeout=3"
    own = create_app({**app_config, "SQLALCHEMY_DATABASE_URI": PG + "?connect_timeout=9"})
    assert inbox_runtime.listen_dsn(own) == "postgresql://u@h/d?connect_timeout=9"


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose listener accepts connections (the kernel completes them) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener.getsockname()[1]


@pytest.mark.parametrize("request_kind", ["readiness", "webhook", "admin_api"])
def test_a_database_that_accepts_and_never_answers_is_given_up_on_in_time(
        app_config: dict[str, Any], silent_port: int, request_kind: str) -> None:
    app = create_app({**app_config, "SQLALCHEMY_DATABASE_URI": f"postgresql+psycopg://u@127.0.0.1:{silent_port}/d",
                      "HATIDATA_DB_CONNECT_TIMEOUT": 2})
    client = app.test_client()
    answers: list[Any] = []

    def send() -> None:
        if request_kind == "readiness":
            answers.append(client.get("/readyz"))
        elif request_kind == "webhook":
            body = json.dumps(user_event("event_SILENT_DB"), separators=(",", ":"))
            answers.append(client.post("/webhooks/workos", data=body, headers={
                "WorkOS-Signature": sign(app.config["WORKOS_WEBHOOK_SECRET"], body),
                "Content-Type": "application/json"}))
        else:
            answers.append(client.get("/api/v1/members", headers={"Authorization": "Bearer hd_live_" + "a" * 40}))

    started = time.monotonic()
    sender = threading.Thread(target=send, daemon=True)  # without the bound it would wait for ever: fail, not hang
    sender.start()
    sender.join(timeout=20)
    waited = time.monotonic() - started
    assert answers, f"no answer after {waited:.0f} s"
    answer = answers[0]
    assert answer.status_code == 503, answer.get_data(as_text=True)
    if request_kind != "readiness":
        assert answer.headers.get("Retry-After")
    assert waited < 15, waited  # a few connection attempts of 2 s at most, well below gunicorn's 30 s
