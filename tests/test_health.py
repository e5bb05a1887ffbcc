"""Liveness and readiness."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from flask import Flask

from hatidata_auth import create_app


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_healthz_answers_while_the_process_is_up(client: Any) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok", "service": "hatidata-auth"}
    assert response.headers["X-Request-ID"]


def test_readyz_checks_database_cache_and_workos(client: Any) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200, response.json
    assert response.json["status"] == "ready"
    assert set(response.json["checks"]) == {"database", "cache", "workos"}


@pytest.mark.parametrize(
    ("setting", "value", "part"),
    [
        ("WORKOS_BASE_URL", "http://127.0.0.1:{port}", "workos"),
        ("SQLALCHEMY_DATABASE_URI", "sqlite:////nonexistent-dir/{port}/db.sqlite3", "database"),
        ("REDIS_URL", "redis://127.0.0.1:{port}/0", "cache"),
    ],
)
def test_readyz_answers_503_naming_the_part_that_failed(
    app_config: dict[str, Any], setting: str, value: str, part: str
) -> None:
    config = {**app_config, setting: value.format(port=_closed_port())}
    application: Flask = create_app(config)
    response = application.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json["failed"] == [part]
    assert part in response.json["error"]["message"]
    application.extensions["hatidata_workos"].close()


def test_unknown_route_answers_json_error_with_request_id(client: Any) -> None:
    response = client.get("/api/v1/nothing-here", headers={"X-Request-ID": "req-12345678"})
    assert response.status_code == 404
    assert response.json["error"]["code"] == "not_found"
    assert response.json["error"]["request_id"] == "req-12345678"
    assert response.headers["X-Request-ID"] == "req-12345678"


def test_unsafe_request_id_is_replaced(client: Any) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": "bad id <script>"})
    assert response.headers["X-Request-ID"] != "bad id <script>"
    assert len(response.headers["X-Request-ID"]) == 32


def test_a_cached_check_names_only_the_failures_it_expects() -> None:
    from flask_caching.backends import SimpleCache

    from hatidata_auth.health import CachedCheck
    from hatidata_auth.workos import WorkOSUnavailable

    def unavailable() -> None:
        raise WorkOSUnavailable("down", reason="connection")

    def bug() -> None:
        raise KeyError("a bug, not a part that is down")

    assert CachedCheck(unavailable, interval=0, key="readyz:t1").outcome(SimpleCache()) == "WorkOSUnavailable"
    with pytest.raises(KeyError):
        CachedCheck(bug, interval=0, key="readyz:t2").outcome(SimpleCache())
