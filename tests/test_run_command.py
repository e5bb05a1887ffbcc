"""`make run`'s launcher, tried as a new user would: both servers up, demo seeded, Ctrl-C stops both."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.support import make_run

DEMO_ORGS = ("org_01HTDQ8A100000000000000001", "org_01HTDQ8A200000000000000001",
             "org_01HTDQ8A300000000000000001", "org_01HTDQ8A400000000000000001", "org_01HTDQ8A500000000000000001")


def _owner_password(emulator_port: int) -> str:
    request = urllib.request.Request(f"http://127.0.0.1:{emulator_port}/_emulator/seed_passwords",
                                     headers={"Authorization": "Bearer sk_test_emulator"})
    with urllib.request.urlopen(request, timeout=10) as response:  # local test server
        return str(json.loads(response.read())["owner@hooli.test"])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:  # local test server
        return response.status, response.read()


@pytest.mark.slow
def test_make_run_brings_up_both_servers_and_ctrl_c_stops_them(tmp_path: Path) -> None:
    app_port, emulator_port = _free_port(), _free_port()
    proc, log = make_run.start(tmp_path, app_port, emulator_port)
    try:
        assert _get(f"http://127.0.0.1:{app_port}/healthz")[0] == 200
        status, body = _get(f"http://127.0.0.1:{app_port}/readyz")
        assert status == 200, body
        assert json.loads(body)["status"] == "ready"
        status, _index = _get(f"http://127.0.0.1:{emulator_port}/")
        assert status == 200
        for org_id in DEMO_ORGS:
            status, page = _get(f"http://127.0.0.1:{emulator_port}/login/{org_id}")
            assert status == 200
            assert b"<form" in page
        output = log.read_text()
        assert f"http://127.0.0.1:{app_port}" in output
        assert "admin@acme.test" in output
        assert "consultant@partners.test" in output
        # What the SSO wizard does: a connection created through the API, whose id the app then holds.
        connection = make_run.emulator_api(emulator_port, "POST", "/connections", {
            "organization_id": DEMO_ORGS[1], "name": "Created before the restart",
            "saml_options": {"idp_metadata_url": "https://idp.example/metadata"}})
        # The app's callbacks and sign-out return are registered: WorkOS sends codes only there.
        application = make_run.emulator_api(emulator_port, "GET", "/_emulator/info", None)["application"]
        assert f"http://127.0.0.1:{app_port}/auth/callback" in application["redirect_uris"]
        assert f"http://127.0.0.1:{app_port}/admin/sso/okta/test-login/callback" in application["redirect_uris"]
        assert f"http://127.0.0.1:{app_port}/" in application["logout_redirect_uris"]
        password = _owner_password(emulator_port)
        assert f"owner@hooli.test           password: {password}" in output
        assert "member@hooli.test" in output
    finally:
        code = make_run.stop(proc)
    assert code == 0, log.read_text()[-3000:]
    for port in (app_port, emulator_port):
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open after Ctrl-C"

    # Running it again on the same instance folder is idempotent: nothing is created twice. The emulator it
    # starts takes its access-token lifetime from the environment.
    proc, log = make_run.start(tmp_path, app_port, emulator_port, WORKOS_EMULATOR_ACCESS_TOKEN_TTL="7")
    try:
        assert "0 organizations created" in log.read_text()
        info = urllib.request.Request(f"http://127.0.0.1:{emulator_port}/_emulator/info",
                                      headers={"Authorization": "Bearer sk_test_emulator"})
        with urllib.request.urlopen(info, timeout=10) as response:  # local test server
            assert json.loads(response.read())["access_token_ttl"] == 7
        assert "live 7 s" in log.read_text()
        # The emulator kept its state in the instance folder: WorkOS never forgets a connection.
        kept = make_run.emulator_api(emulator_port, "GET", f"/connections/{connection['id']}")
        assert kept["name"] == "Created before the restart"
        assert _owner_password(emulator_port) == password  # generated once per data folder
    finally:
        assert make_run.stop(proc) == 0


@pytest.mark.parametrize("taken", ["PORT", "WORKOS_EMULATOR_PORT"])
def test_make_run_on_a_taken_port_says_so_and_starts_nothing(tmp_path: Path, taken: str) -> None:
    """A second `make run` (or anything else listening on one of its ports) is refused before anything starts: the
    readiness checks would be answered by the other servers, and the launcher printed its banner and seeded them."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        ports = {"PORT": str(_free_port()), "WORKOS_EMULATOR_PORT": str(_free_port())}
        ports[taken] = str(other.getsockname()[1])
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TEST_", "HATIDATA_", "WORKOS_"))}
        done = subprocess.run([sys.executable, "scripts/run_dev.py"], cwd=make_run.ROOT, text=True, timeout=60,
                              capture_output=True, env={**env, **ports,
                                                        "HATIDATA_INSTANCE_PATH": str(tmp_path / "instance")})
    assert done.returncode != 0
    assert f"port {ports[taken]} on 127.0.0.1 ({taken}) is in use" in done.stderr
    assert "HatiData Auth is running" not in done.stdout
    assert not (tmp_path / "instance").exists()  # not even migrated
