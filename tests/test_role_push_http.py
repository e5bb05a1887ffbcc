"""Role changes here and at WorkOS at once, over real HTTP (helper-143's runs, kept): the app under gunicorn with
three workers and its appliers, WorkOS's webhooks delivered by the emulator (in order, or reordered). Admins here
``PATCH`` one member concurrently, while WorkOS's dashboard changes the same membership's role (WorkOS answering role
writes in about 150 ms). Once everything is delivered and applied, the row and WorkOS agree, and no mark is left
on. At e15340f the reordered run ended with the member an admin here and a viewer at WorkOS (the late-word rule
ignored the decision here)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx2
import pytest
from flask import Flask

from hatidata_auth.services import workos_role_push
from tests.support.dsync import wait_applied
from tests.support.membership_word import WorkOS, membership_of, prepared_acme, sign_in
from tests.support.processes import AppProcess, app_settings
from tests.support.servers import EmulatorControl, http_json
from tests.test_role_change_at_workos import _admin_key, _at_workos

ROLES = ["admin", "developer", "viewer"]


@pytest.fixture
def acme(app: Flask, emulator_control: EmulatorControl) -> tuple[Flask, EmulatorControl]:
    return prepared_acme(app, emulator_control, with_admin=True)


def _served(app: Flask, app_config: dict[str, Any], tmp_path: Path, control: EmulatorControl,
            name: str) -> AppProcess:
    settings = app_settings(app_config, HATIDATA_INBOX_APPLIERS=2, HATIDATA_INBOX_POLL_INTERVAL=1)
    server = AppProcess(settings, tmp_path / name, workers=3, threads=4, name=name).start()
    control.register_webhook(f"{server.url}/webhooks/workos", app.config["WORKOS_WEBHOOK_SECRET"])
    return server


def _settle(app: Flask, control: EmulatorControl) -> None:
    """Every webhook delivered and every event and job applied (again, after what applying them emitted)."""
    for _ in range(3):
        control.flush()
        wait_applied(app, timeout=60)
        time.sleep(0.5)


def _agree(app: Flask, person: WorkOS, first: str) -> None:
    after = membership_of(app, person)
    assert after is not None
    assert workos_role_push.pending(after) is None, after.details
    assert (after.status, after.role) == ("active", _at_workos(app, first)), after.details


def _at_once(*calls: Callable[[], None]) -> None:
    """Run *calls* in threads released together."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], None]) -> None:
        barrier.wait()
        call()

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _patch_role(server: AppProcess, member_id: str, role: str, key: dict[str, str],
                statuses: list[int] | None = None) -> None:
    answer = httpx2.patch(f"{server.url}/api/v1/members/{member_id}", json={"role": role}, headers=key, timeout=60)
    if statuses is not None:
        statuses.append(answer.status_code)


def _dashboard(person: WorkOS, workos_membership_id: str, role: str, pause: float) -> None:
    """WorkOS's dashboard sets the membership's role, *pause* seconds later."""
    time.sleep(pause)
    http_json("PUT", f"{person.api}/organization_memberships/{workos_membership_id}", {"role_slug": role},
              person.headers)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("reorder", [False, True], ids=["in_order", "reordered"])
def test_patches_racing_workos_dashboard_end_alike_here_and_at_workos(
        acme: tuple[Flask, EmulatorControl], app_config: dict[str, Any], tmp_path: Path, reorder: bool) -> None:
    app, control = acme
    person = WorkOS(control, app)
    first = person.add("admin")
    m = sign_in(app, person, "admin")
    keys = [_admin_key(app, other_than=m.id) for _ in range(2)]
    server = _served(app, app_config, tmp_path, control, f"dashboard{int(reorder)}")
    if reorder:
        control.webhook_settings(reorder=True)
    http_json("POST", f"{control.base_url}/_emulator/faults",
              {"method": "PUT", "path": f"/user_management/organization_memberships/{first}", "delay_ms": 150},
              control.headers)
    rng = random.Random(7 + int(reorder))
    statuses: list[int] = []
    try:
        for _ in range(12):
            roles, pause = [rng.choice(ROLES) for _ in range(3)], rng.random() * 0.3
            _at_once(partial(_patch_role, server, m.id, roles[0], keys[0], statuses),
                     partial(_patch_role, server, m.id, roles[1], keys[1], statuses),
                     partial(_dashboard, person, first, roles[2], pause))
            _settle(app, control)
            _agree(app, person, first)
        assert set(statuses) == {200}
    finally:
        control.ctl("DELETE", "/faults")
        server.stop()


@pytest.mark.slow
@pytest.mark.postgres
def test_concurrent_patches_of_one_member_end_alike_here_and_at_workos(
        acme: tuple[Flask, EmulatorControl], app_config: dict[str, Any], tmp_path: Path) -> None:
    app, control = acme
    person = WorkOS(control, app)
    first = person.add("admin")
    m = sign_in(app, person, "admin")
    keys = [_admin_key(app, other_than=m.id) for _ in range(3)]
    server = _served(app, app_config, tmp_path, control, "patches")
    rng = random.Random(150)
    statuses: list[int] = []
    try:
        for _ in range(25):
            roles = [rng.choice(ROLES) for _ in range(3)]
            _at_once(*(partial(_patch_role, server, m.id, roles[i], keys[i], statuses) for i in range(3)))
        _settle(app, control)
        assert set(statuses) == {200}
        _agree(app, person, first)
    finally:
        server.stop()
