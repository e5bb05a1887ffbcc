"""Emulator state survives a restart of the emulator process (SQLite in its data folder); reset reseeds."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
from workos import WorkOSClient
from workos.sso import CreateProtocolOptionsSAML
from workos.sso.models import CreateConnectionSAMLOptions

from tests.support.processes import ROOT, free_port, wait_for_port
from workos_emulator.persistence import READ_ONLY, STATE_FILE, store_field_names
from workos_emulator.store import Store
from workos_emulator.testing import EmulatorServer

from .conftest import API_KEY, CLIENT_ID, GLOBEX, REDIRECT_URI
from .helpers import code_from, follow_authorize


@contextmanager
def emulator_process(data_dir: Path) -> Iterator[WorkOSClient]:
    """``python -m workos_emulator`` (demo seed) on a free port with ``data_dir``; an SDK client for it."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "workos_emulator", "--port", str(port), "--data-dir", str(data_dir)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port)
        with WorkOSClient(api_key=API_KEY, client_id=CLIENT_ID, base_url=f"http://127.0.0.1:{port}",
                          max_retries=0) as client:
            yield client
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def _saml() -> CreateProtocolOptionsSAML:
    return CreateProtocolOptionsSAML(
        saml_options=CreateConnectionSAMLOptions(idp_metadata_url="https://idp.example/metadata"))


def test_a_restarted_process_keeps_what_the_api_created(tmp_path: Path) -> None:
    data_dir = tmp_path / "emu"
    with emulator_process(data_dir) as workos:
        conn = workos.sso.create_connection(organization_id=GLOBEX, name="Wizard SAML", protocol_options=_saml())
        org = workos.organizations.create_organization(name="Persisted", domains=["persisted.test"])
        url = workos.user_management.get_authorization_url(
            redirect_uri=REDIRECT_URI, provider="authkit", organization_id=GLOBEX, login_hint="admin@globex.test")
        code, _ = code_from(follow_authorize(url).headers["location"])
        auth = workos.user_management.authenticate_with_code(code=code)
        events_before = [e.id for e in workos.events.list_events(events=["organization.created"]).data]
    assert (data_dir / STATE_FILE).is_file()

    with emulator_process(data_dir) as workos:
        assert workos.sso.get_connection(conn.id).name == "Wizard SAML"
        assert workos.organizations.get_organization(org.id).domains[0].domain == "persisted.test"
        assert [e.id for e in workos.events.list_events(events=["organization.created"]).data] == events_before
        refreshed = workos.user_management.authenticate_with_refresh_token(refresh_token=auth.refresh_token)
        assert refreshed.user.id == auth.user.id
        assert workos.user_management.list_sessions(auth.user.id).data[0].status.value == "active"


def test_reset_and_a_fresh_data_folder_start_from_the_seed(tmp_path: Path) -> None:
    data_dir = str(tmp_path / "emu")
    with EmulatorServer(data_dir=data_dir) as first:
        workos = WorkOSClient(api_key=API_KEY, client_id=CLIENT_ID, base_url=first.url, max_retries=0)
        seeded = {o.id for o in workos.organizations.list_organizations(limit=100).data}
        org = workos.organizations.create_organization(name="Gone after reset")
        workos.close()
    with EmulatorServer(data_dir=data_dir) as second:
        workos = WorkOSClient(api_key=API_KEY, client_id=CLIENT_ID, base_url=second.url, max_retries=0)
        assert org.id in {o.id for o in workos.organizations.list_organizations(limit=100).data}
        second.reset()  # the same as POST /_emulator/reset
        assert {o.id for o in workos.organizations.list_organizations(limit=100).data} == seeded
        workos.close()
    with EmulatorServer(data_dir=data_dir) as third:
        assert org.id not in third.emulator.store.organizations
    with EmulatorServer(data_dir=str(tmp_path / "fresh")) as fresh:
        assert set(fresh.emulator.store.organizations) == seeded


def test_a_changed_seed_keeps_the_saved_state_with_a_notice(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = str(tmp_path / "emu")
    with EmulatorServer(data_dir=data_dir) as demo:
        seeded = set(demo.emulator.store.organizations)
        assert seeded
    assert "seed file changed" not in capsys.readouterr().err
    with EmulatorServer(seed_path="", data_dir=data_dir) as other:
        assert set(other.emulator.store.organizations) == seeded  # WorkOS never forgets: state is the folder's
        assert "seed file changed" in capsys.readouterr().err
        other.reset()  # only a reset (or a fresh folder) applies the new seed
        assert other.emulator.store.organizations == {}
    with EmulatorServer(seed_path="", data_dir=data_dir) as again:
        assert again.emulator.store.organizations == {}
        assert "seed file changed" not in capsys.readouterr().err
    with EmulatorServer(seed_path="", data_dir=str(tmp_path / "fresh")) as empty:
        assert empty.emulator.store.organizations == {}


def test_every_store_field_is_persisted_as_json(tmp_path: Path) -> None:
    assert set(store_field_names()) == set(Store.__dataclass_fields__) - {"lock"}
    data_dir = str(tmp_path / "emu")
    with EmulatorServer(data_dir=data_dir) as emu:
        workos = WorkOSClient(api_key=API_KEY, client_id=CLIENT_ID, base_url=emu.url, max_retries=0)
        workos.organizations.create_organization(name="Any")
        workos.close()
    with closing(sqlite3.connect(Path(data_dir) / STATE_FILE)) as db:
        saved = {name for (name,) in db.execute("SELECT name FROM store_fields")}
    assert saved == set(store_field_names())


def test_a_state_file_of_the_wrong_shape_is_refused_at_start_naming_the_file(tmp_path: Path) -> None:
    from workos_emulator import create_app, demo_seed_path
    from workos_emulator.persistence import StateFileError

    data_dir = tmp_path / "emu"
    with EmulatorServer(data_dir=str(data_dir)):
        pass
    state = data_dir / STATE_FILE
    for statement in ("UPDATE store_fields SET value = '[1, 2]' WHERE name = 'users'",
                      "UPDATE store_fields SET value = '{\"u\": 5}' WHERE name = 'users'",
                      "UPDATE store_fields SET value = 'not json' WHERE name = 'users'",
                      "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema', '99')"):
        with closing(sqlite3.connect(state)) as db, db:
            db.execute("DELETE FROM meta WHERE key = 'schema'")
            db.execute("UPDATE store_fields SET value = '{}' WHERE name = 'users'")
            db.execute(statement)
        with pytest.raises(StateFileError, match=r"state\.sqlite3.*delete .*state\.sqlite3 or start with a fresh"):
            create_app(demo_seed_path(), data_dir=str(data_dir))


def test_every_read_only_view_leaves_the_store_as_it_was(emu: EmulatorServer) -> None:
    """A view marked ``read_only`` skips the save, so it must never change the store: each is called (with every
    filter it takes) and the store's JSON compared before and after."""
    app = emu.app
    marked = {rule.rule for rule in app.url_map.iter_rules()
              if getattr(app.view_functions[rule.endpoint], READ_ONLY, False)}
    assert marked  # the directory reads are marked
    samples = {"<directory_id>": "directory_01HTDQ8D100000000000000001",
               "<user_id>": "directory_user_01HTDQ8F100000000000000001",
               "<group_id>": "directory_group_01HTDQ8E100000000000000001"}
    queries = ["", "?limit=1&order=asc", "?order=desc&after=directory_user_01HTDQ8F100000000000000009",
               "?directory=directory_01HTDQ8D100000000000000001&limit=2",
               "?group=directory_group_01HTDQ8E100000000000000001",
               "?user=directory_user_01HTDQ8F100000000000000001", "?organization_id=nope&before=x"]
    store = emu.emulator.store

    def snapshot() -> dict[str, str]:
        with store.lock:
            return {name: json.dumps(getattr(store, name), sort_keys=True) for name in store_field_names()}

    client = app.test_client()
    for rule in sorted(marked):
        path = rule
        for placeholder, value in samples.items():
            path = path.replace(placeholder, value)
        for query in queries:
            before = snapshot()
            client.get(path + query, headers={"Authorization": "Bearer sk_test_emulator"})
            assert snapshot() == before, path + query
