"""Faults found by breaking issue 15 (wizards that recover, sign-in diagnostics, pages) and issue 14's chunked
fan-out. Each test was written ``xfail(strict=True)`` while its fault stood; all seven are fixed, as classes (the
rule of each is named in its test's docstring or in the docs it cites), and the markers are gone."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from hatidata_auth.models import Organization
from tests.auth_support import ACME, sync_organizations
from tests.support.dsync import drain_inbox
from tests.support.servers import EmulatorControl
from tests.test_fanout import app_config, fanco  # noqa: F401 - the fan-out fixtures (chunk of 7, 30 members)
from tests.test_sso_wizard_recovery import ACME_CONNECTION, OKTA_URL, _finish, _org, _progress, _to_metadata


@pytest.fixture
def orgs(app: Flask) -> dict[str, str]:
    return sync_organizations(app)


def test_sync_organizations_keeps_the_connection_the_wizard_activated(app: Flask, client: FlaskClient,
                                                                      emulator: Any, orgs: dict[str, str]) -> None:
    wizard = _to_metadata(client)
    assert wizard.post("metadata", {"source": "url", "metadata_url": OKTA_URL,
                                    "connection_choice": "new"}).status_code == 302
    new = _progress(app, orgs[ACME])["data"]["connection_id"]
    _finish(wizard)  # tested through the new connection, then activated with SSO enforced
    assert (_org(app, orgs[ACME]).connection_id, _org(app, orgs[ACME]).sso_enforced) == (new, True)
    sync_organizations(app)  # what `hatidata-auth sync-organizations` runs
    org = _org(app, orgs[ACME])
    assert org.connection_id == new, f"sign-in (SSO enforced) now goes through {org.connection_id}, not {new}"


def test_reset_then_workos_activation_does_not_adopt_the_untested_connection(
        app: Flask, client: FlaskClient, webhooks: EmulatorControl, orgs: dict[str, str]) -> None:
    wizard = _to_metadata(client)
    assert wizard.post("metadata", {"source": "url", "metadata_url": OKTA_URL,
                                    "connection_choice": "new"}).status_code == 302
    untested = _progress(app, orgs[ACME])["data"]["connection_id"]
    done = client.post("/admin/sso/okta/wizard/reset", data={"csrf_token": wizard.token, "confirm": "yes"})
    assert done.status_code == 302
    webhooks.flush()  # WorkOS's connection.activated for the connection the wizard created, delivered late
    org = _org(app, orgs[ACME])
    assert org.connection_id == ACME_CONNECTION, f"untested {untested} became the sign-in connection"


# --- fan-out: a chunk and a member's own event applied at the same time by two appliers ------------------------

def test_a_chunk_applied_concurrently_with_a_members_group_removal_keeps_the_removal(
        app: Flask, client: FlaskClient, fanco: Any,  # noqa: F811 - the fixture imported above
        monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """Two appliers (gunicorn workers on PostgreSQL): one applies a recompute chunk of a renamed group, the other a
    ``dsync.group.user_removed`` of a member of that chunk (entity ``user:…``, the chunk's is ``fanout:…``, so
    nothing orders them). The chunk reads the members' groups without a lock, the removal commits (the member
    drops to the default role), then the chunk writes the role it computed from its stale read: the member keeps
    the group's role though no longer in it, and no later event corrects it. On SQLite the claim's write lock
    serializes the two appliers (the removal waits and retries), so the end state is right there."""
    import threading

    from hatidata_auth.causes import Actor, Cause
    from hatidata_auth.extensions import db
    from hatidata_auth.services import inbox_worker, role_mapping
    from tests.test_fanout import CHUNK, DIRECTORY, GROUP, _access, _ack, _batch, _consistent, _event, _group, _user

    victim = 3  # in the first chunk (directory_user_fan_000..), written after the chunk's read
    assert victim < CHUNK
    _ack(client, app, _event("dsync.group.updated", _group("Fan Renamed")))
    _batch(app)  # the rename; its members queued as a recompute job
    removed = _event("dsync.group.user_removed", {"directory_id": DIRECTORY, "user": _user(victim, "active"),
                                                  "group": _group("Fan Renamed")})
    original = role_mapping.directory_groups_of_users
    main = threading.get_ident()
    other_done = threading.Event()
    errors: list[BaseException] = []

    def other_applier() -> None:
        import time

        from sqlalchemy.exc import OperationalError

        from tests.support.dsync import post_event

        try:
            # WorkOS delivers the removal; the webhook request applies a revoking event of its entity at once.
            # SQLite: 503 while the first applier holds the write lock, and WorkOS delivers it again.
            for _ in range(80):
                response = post_event(app.test_client(), app, removed, drain=False)
                if response.status_code == 200:
                    break
                assert response.status_code == 503, response.get_json()
                other_done.set()
                time.sleep(0.25)
            for _ in range(80):  # an applier, for the case the request left it to one (SKIP LOCKED)
                try:
                    _batch(app)
                    return
                except OperationalError:
                    other_done.set()
                    time.sleep(0.25)
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)
        finally:
            other_done.set()

    worker: list[threading.Thread] = []

    def read_then_race(*args: Any, **kwargs: Any) -> Any:
        found = original(*args, **kwargs)
        if threading.get_ident() == main and not worker:
            worker.append(threading.Thread(target=other_applier))
            worker[0].start()
            other_done.wait(5)  # PostgreSQL: done now; SQLite: waits for our write lock
        return found

    monkeypatch.setattr(role_mapping, "directory_groups_of_users", read_then_race)
    with app.app_context():
        session = db.session()
        claimed = inbox_worker.claim(session, 20, entity_key=f"fanout:{fanco.id}:group:{GROUP}")
        assert [c.event_type for c in claimed] == ["hatidata.recompute_members"]
        inbox_worker.apply_one(session, app.extensions["hatidata_workos"].client, claimed[0],
                               Cause.by(Actor.workos()), fanout_chunk=CHUNK)
        session.commit()
        db.session.remove()
    worker[0].join(60)
    monkeypatch.setattr(role_mapping, "directory_groups_of_users", original)
    assert not errors, errors
    with app.app_context():
        default = db.session.get(Organization, fanco.id).default_role  # type: ignore[union-attr]
        db.session.remove()
    drain_inbox(app)  # the rename's other chunks (the removed member is in none of them)
    role, _status = _access(app, fanco.id)[f"directory_user_fan_{victim:03d}"]
    assert role == default, f"removed from the group, the member still has {role} (the chunk's stale read won)"
    _consistent(app, fanco.id)


# --- sign-in diagnostics: the API's reveal is a state change on GET ----------------------------------------------

def test_revealing_attribute_values_with_the_cookie_needs_a_csrf_token(app: Flask, client: FlaskClient,
                                                                        orgs: dict[str, str]) -> None:
    from sqlalchemy import func, select

    from hatidata_auth.extensions import db
    from hatidata_auth.models import AuditEvent
    from tests.auth_support import login

    assert login(client, "admin@acme.test").status_code == 302  # an SSO sign-in: an attempt with attributes
    # A link on another site, followed by the admin: no CSRF token, the cookie sent (a top-level GET).
    answer = client.get("/api/v1/organization/sign-in-attempts?reveal_attributes=true",
                        headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"})
    with app.app_context():
        reveals = db.session.scalar(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.action == "sign_in_attempts.attributes_revealed"))
        db.session.remove()
    shown = [a for a in (answer.get_json() or {}).get("data", []) if a.get("attributes_revealed")]
    assert (reveals, shown) == (0, []), f"{reveals} reveal(s) audited in the admin's name; values shown: {shown}"


# --- CLI: a command run before the database is migrated ----------------------------------------------------------

@pytest.mark.parametrize("command", [["list-organizations"], ["sign-ins", "expire"], ["inbox", "list-failed"],
                                     ["audit", "verify"]])
def test_a_command_on_an_unmigrated_database_prints_one_line(command: list[str], tmp_path: Any) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "HATIDATA_ENV": "development",
           "HATIDATA_INSTANCE_PATH": str(tmp_path / "instance"),
           "DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.sqlite3'}", "WORKOS_BASE_URL": "http://127.0.0.1:9"}
    env.pop("TEST_DATABASE_URL", None)
    done = subprocess.run([sys.executable, "-m", "hatidata_auth", *command], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    output = (done.stdout + done.stderr).strip()
    assert "Traceback" not in output, output[-1500:]
    assert (done.returncode, len(output.splitlines())) == (1, 1), output[-1500:]
    assert "db upgrade" in output, output


# --- wizard: two admins (or two tabs) submit the metadata step at once ------------------------------------------

def test_two_metadata_submits_at_once_create_one_connection(app: Flask, emulator: Any, orgs: dict[str, str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import contextlib
    import threading

    from hatidata_auth.services import sso_setup
    from tests.sso_wizard_support import Wizard

    wizards = []
    for _ in range(2):  # two admins' browsers at the same step
        wizard = _to_metadata(app.test_client())
        wizard.get("metadata")
        wizards.append(wizard)
    before = {c["id"] for c in emulator.emulator.store.connections.values() if c["organization_id"] == ACME}
    both_read = threading.Barrier(2)
    original = sso_setup.save_connection

    def together(*args: Any, **kwargs: Any) -> Any:
        # Both requests have read the wizard's progress; a broken barrier: one waits for the other (a lock).
        with contextlib.suppress(threading.BrokenBarrierError):
            both_read.wait(5)
        return original(*args, **kwargs)

    monkeypatch.setattr(sso_setup, "save_connection", together)
    answers: list[int] = []

    def submit(wizard: Wizard) -> None:
        answers.append(wizard.post("metadata", {"source": "url", "metadata_url": OKTA_URL,
                                                "connection_choice": "new"}).status_code)

    threads = [threading.Thread(target=submit, args=(w,)) for w in wizards]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    created = {c["id"] for c in emulator.emulator.store.connections.values()
               if c["organization_id"] == ACME} - before
    held = _progress(app, orgs[ACME])["data"]["connection_id"]
    assert len(created) == 1, f"{len(created)} connections created ({answers}); the wizard holds {held}"


# --- the sign-ins page: its paging parameter is not bounded -----------------------------------------------------

@pytest.mark.parametrize("after", [str(2**63), "9" * 30])
def test_the_sign_ins_pages_after_parameter_never_gives_a_500(after: str, app: Flask, client: FlaskClient,
                                                              orgs: dict[str, str]) -> None:
    from tests.auth_support import login

    assert login(client, "admin@acme.test").status_code == 302
    app.config["PROPAGATE_EXCEPTIONS"] = False  # as in production: the error handlers answer
    answer = client.get(f"/admin/sso/sign-ins/?after={after}", headers={"Accept": "text/html"})
    assert answer.status_code < 500, answer.status_code
