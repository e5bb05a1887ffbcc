"""``bench.auth``'s warm-up listener (``bench/auth_warm.py``): every request sent to a worker's private port runs
once through that worker's app, its status reported as the app answered it, and the worker's caches then hold the
session by cookie and by token (the counts the bench checks after its measure)."""

from __future__ import annotations

import gc
import threading
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from bench.auth_setup import raw
from bench.auth_warm import gc_clocks, listen, live_counts, live_entries, stop, warm_workers, worker_ports
from tests.auth_support import access_token, cookie_value, login, sync_organizations, use_file_cache


@pytest.fixture
def app_config(app_config: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """``make run``'s cache profile, the one with in-process caches and no Redis."""
    return use_file_cache(app_config, tmp_path / "shared-cache")


def test_each_request_runs_once_in_the_worker_and_its_caches_then_hold_the_session(
        app: Flask, client: FlaskClient, tmp_path: Path) -> None:
    sync_organizations(app)
    assert login(client, "dev@acme.test").status_code == 302
    cookie, token = cookie_value(client), access_token(app, client)
    assert cookie
    assert client.get("/api/v1/me").status_code == 200  # this process's first look at its revocation log
    app.extensions["hatidata_auth"].bus.clear()  # no session status nor unsealed cookie in memory
    folder = tmp_path / "warm"
    folder.mkdir()
    listen(app, str(folder))
    [thread] = [t for t in threading.enumerate() if t.name == "bench-warm"]
    ports = worker_ports(folder, 1)
    try:
        assert live_entries(app)["status"] == live_entries(app)["unsealed"] == 0
        statuses, cpus = warm_workers(ports, [raw("/api/v1/me", cookie=cookie), raw("/api/v1/me", bearer=token),
                                              raw("/healthz"), raw("/api/v1/me", bearer="not-a-token")])
        assert dict(statuses) == {200: 3, 401: 1}
        assert len(cpus) == 1
        assert cpus[0] > 0
        [after] = live_counts(ports)
        assert after == live_entries(app)
        assert after == {"status": 1, "unsealed": 1, "verified": 1, "identities": 2}  # the cookie and the token
        [clock] = gc_clocks(ports)
        gc.collect()
        [later] = gc_clocks(ports)
        assert later["collections"][2] >= clock["collections"][2] + 1  # the full collection (another may run too)
        assert later["seconds"][2] > clock["seconds"][2]
    finally:
        stop(ports[0])
    thread.join(5)
    assert not thread.is_alive()


def test_a_worker_missing_or_one_too_many_is_refused(tmp_path: Path) -> None:
    (tmp_path / "1.port").write_text("1")
    with pytest.raises(RuntimeError, match="1 of 2 workers"):
        worker_ports(tmp_path, 2, timeout=0.2)
    (tmp_path / "2.port").write_text("2")
    (tmp_path / "3.port").write_text("3")
    with pytest.raises(RuntimeError, match="3 warm-up ports for 2 workers"):
        worker_ports(tmp_path, 2)
