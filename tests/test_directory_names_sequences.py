"""Real-world sequences around the names rule (``directory_names.speaks_for_names``): a membership elsewhere that
was let go (deactivated, deleted, its organization deleted, a WorkOS membership added and removed) no longer holds
the names; directories that agree rename the person whatever order their events or resyncs take; a missed rename
repaired by a resync ends where the delivered one does; resyncs in turn find nothing. Found by a break-it review of
the first version, which counted every membership row elsewhere (rows are kept when deprovisioned)."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from hatidata_auth.models import DirectoryUser, Membership, Organization, User
from hatidata_auth.services import directory_names, inbox, inbox_worker, reconcile
from tests.auth_support import login, password_login
from tests.conftest import _empty_tables
from tests.support.dsync import deliver
from tests.support.people import Replay, person_of, prepare
from tests.support.servers import EmulatorControl, http_json

ACME_DIR = "directory_01HTDQ8D100000000000000001"
GLOBEX_DIR = "directory_01HTDQ8D200000000000000001"
SHARED_IN_ACME = "directory_user_01HTDQ8F100000000000000009"
SHARED_IN_GLOBEX = "directory_user_01HTDQ8F200000000000000009"


@pytest.fixture
def world(app: Flask, emulator: Any) -> Any:
    from hatidata_auth.extensions import db

    with app.app_context():
        emulator.reset()
        _empty_tables(app)
        session = db.session
        workos_client = app.extensions["hatidata_workos"].client
        yield session, workos_client, prepare(session, workos_client), Replay(EmulatorControl(emulator.url), app)
        db.session.rollback()


def _names(session: Any, user_id: str) -> tuple[str | None, str | None]:
    session.expire_all()
    user = session.get(User, user_id)
    return user.first_name, user.last_name


def _status(session: Any, org_id: str, user_id: str) -> str | None:
    session.expire_all()
    return session.scalar(select(Membership.status).where(Membership.organization_id == org_id,
                                                          Membership.user_id == user_id))


# --- A membership elsewhere that was let go holds nothing ------------------------------------------------------

@pytest.mark.parametrize("how_acme_lets_go", ["deactivate", "delete", "acme_deleted"])
def test_once_acme_lets_the_consultant_go_globex_renames_it(how_acme_lets_go: str, world: Any) -> None:
    session, client, orgs, replay = world
    acme, globex = orgs["acme.test"].id, orgs["globex.test"].id
    _, person = person_of(session, globex, SHARED_IN_GLOBEX)
    if how_acme_lets_go == "deactivate":
        replay.ctl("POST", f"/directory_users/{SHARED_IN_ACME}/deactivate")
    elif how_acme_lets_go == "delete":
        replay.ctl("DELETE", f"/directory_users/{SHARED_IN_ACME}")
    else:
        workos_acme = session.get(Organization, acme).workos_organization_id
        replay.ctl("POST", "/events", {"event": "organization.deleted", "organization_id": workos_acme,
                                       "data": client.organizations.get_organization(workos_acme).to_dict()})
    replay.deliver()
    assert _status(session, acme, person.id) != "active"  # Acme no longer gives this person anything

    replay.ctl("PATCH", f"/directory_users/{SHARED_IN_GLOBEX}", {"first_name": "Renamed", "last_name": "ByGlobex"})
    replay.deliver()
    # Globex is now the only organization the person is a member of: its directory speaks for the names.
    assert _names(session, person.id) == ("Renamed", "ByGlobex")


def test_a_resync_keeps_the_rename_of_a_person_let_go_elsewhere(world: Any) -> None:
    """Acme's IdP deletes the consultant (Acme's membership row kept, deprovisioned); Globex renames, its resync
    keeps the rename."""
    session, client, orgs, replay = world
    _acme, globex = orgs["acme.test"].id, orgs["globex.test"].id
    _, person = person_of(session, globex, SHARED_IN_GLOBEX)
    replay.ctl("DELETE", f"/directory_users/{SHARED_IN_ACME}")
    replay.deliver()
    replay.ctl("PATCH", f"/directory_users/{SHARED_IN_GLOBEX}", {"first_name": "New", "last_name": "Name"})
    replay.deliver()
    report = reconcile.full_resync(session, client, organization_id=globex)
    assert _names(session, person.id) == ("New", "Name"), report.examples


# --- Directories that agree rename the person ------------------------------------------------------------------

def test_both_directories_agree_on_a_rename(world: Any) -> None:
    session, client, orgs, replay = world
    acme, globex = orgs["acme.test"].id, orgs["globex.test"].id
    _, person = person_of(session, globex, SHARED_IN_GLOBEX)
    for du in (SHARED_IN_ACME, SHARED_IN_GLOBEX):
        replay.ctl("PATCH", f"/directory_users/{du}", {"first_name": "Casey", "last_name": "Married-Name"})
    replay.deliver()
    for org_id in (acme, globex):
        reconcile.full_resync(session, client, organization_id=org_id)
    # Every organization the person belongs to says the same name; nobody else sees the person.
    assert _names(session, person.id) == ("Casey", "Married-Name")


# --- Sequences: a second resync must find nothing -------------------------------------------------------------

@pytest.mark.parametrize("how", ["webhooks", "resync"])
def test_sole_member_renamed_then_joins_elsewhere_then_renamed(how: str, world: Any) -> None:
    """A person of Acme only (unverified domain) is renamed; then Globex's directory lists it too, with other names;
    then Acme renames again. Nobody speaks for the names while the two disagree; resyncs in turn find nothing."""
    session, client, orgs, replay = world
    acme, globex = orgs["acme.test"].id, orgs["globex.test"].id

    a = replay.ctl("POST", f"/directories/{ACME_DIR}/users", {"email": "imani@partners.test", "first_name": "Imani",
                                                              "last_name": "A0", "groups": ["HatiData Viewers"]})
    replay.apply(how, session, client, acme)
    _, person = person_of(session, acme, a["id"])
    replay.ctl("PATCH", f"/directory_users/{a['id']}", {"last_name": "A1"})
    replay.apply(how, session, client, acme)
    assert _names(session, person.id) == ("Imani", "A1")
    g = replay.ctl("POST", f"/directories/{GLOBEX_DIR}/users", {"email": "imani@partners.test", "first_name": "Imani",
                                                                "last_name": "G0", "groups": ["HatiData Viewers"]})
    replay.apply(how, session, client, globex)
    _, gperson = person_of(session, globex, g["id"])
    assert gperson.id == person.id
    assert _names(session, person.id) == ("Imani", "A1")  # Globex does not speak
    replay.ctl("PATCH", f"/directory_users/{a['id']}", {"last_name": "A2"})
    replay.apply(how, session, client, acme)
    assert _names(session, person.id) == ("Imani", "A1")  # nor Acme, while Globex says G0
    for org_id in (acme, globex, acme, globex):
        report = reconcile.full_resync(session, client, organization_id=org_id)
        assert report.differences == 0, report.examples


def test_a_membership_elsewhere_added_and_removed_at_workos_holds_nothing(world: Any) -> None:
    """Imani is Globex's only (partners.test, verified by nobody). Initech adds her at WorkOS and removes her a
    moment later: Globex's directory still renames her (a let-go membership elsewhere does not count)."""
    session, _client, orgs, replay = world
    globex = orgs["globex.test"].id
    initech = orgs["initech.test"]
    g = replay.ctl("POST", f"/directories/{GLOBEX_DIR}/users", {"email": "imani@partners.test", "first_name": "Imani",
                                                                "last_name": "Okafor", "groups": ["HatiData Viewers"]})
    replay.deliver()
    _, person = person_of(session, globex, g["id"])
    ctl = replay.control

    def api(method: str, path: str, body: Any = None) -> Any:
        return http_json(method, f"{ctl.base_url}/user_management{path}", body, ctl.headers)[1]

    def deliver_all() -> list[tuple[str, str]]:
        return [(e["event"], deliver(replay.client, replay.app, e)) for e in replay.new_events()]

    wuser = api("POST", "/users", {"email": "imani@partners.test"})
    om = api("POST", "/organization_memberships", {"user_id": wuser["id"],
                                                   "organization_id": initech.workos_organization_id})
    assert ("organization_membership.created", "applied") in deliver_all()
    assert _status(session, initech.id, person.id) == "active"
    api("DELETE", f"/organization_memberships/{om['id']}")
    assert ("organization_membership.deleted", "applied") in deliver_all()
    assert _status(session, initech.id, person.id) not in (None, "active")  # Initech gives her nothing

    replay.ctl("PATCH", f"/directory_users/{g['id']}", {"last_name": "Okafor-Reyes"})
    replay.deliver()
    assert _names(session, person.id) == ("Imani", "Okafor-Reyes")


@pytest.mark.parametrize("acme_rename", ["delivered", "missed_then_resync"])
def test_a_missed_rename_repaired_by_resync_ends_as_the_delivered_one(acme_rename: str, world: Any) -> None:
    """Imani is Acme's only; Acme renames her (t1), then Globex's directory lists her with the new name (t2).
    Delivered, the rename applies (she was Acme's only at t1); missed and repaired by Acme's resync after t2, it
    applies too (Globex agrees)."""
    session, client, orgs, replay = world
    acme = orgs["acme.test"].id
    a = replay.ctl("POST", f"/directories/{ACME_DIR}/users", {"email": "imani@partners.test", "first_name": "Imani",
                                                              "last_name": "Okafor", "groups": ["HatiData Viewers"]})
    replay.deliver()
    _, person = person_of(session, acme, a["id"])
    replay.ctl("PATCH", f"/directory_users/{a['id']}", {"last_name": "Okafor-Reyes"})  # t1
    if acme_rename == "delivered":
        replay.deliver()
    else:
        replay.miss()
    replay.ctl("POST", f"/directories/{GLOBEX_DIR}/users", {"email": "imani@partners.test", "first_name": "Imani",
                                                            "last_name": "Okafor-Reyes",
                                                            "groups": ["HatiData Viewers"]})  # t2
    replay.deliver()
    if acme_rename == "missed_then_resync":
        report = reconcile.full_resync(session, client, organization_id=acme)
        assert report.differences == 1, report.examples  # it saw the missed rename...
    assert _names(session, person.id) == ("Imani", "Okafor-Reyes")  # ...and repaired it


# --- A sign-in leaves a listed person's names to the directories -----------------------------------------------

@pytest.mark.parametrize("how", ["webhooks", "resync"])
def test_a_sign_in_does_not_undo_a_directory_rename(how: str, world: Any) -> None:
    """Acme's directory renames a member; the member signs in, and WorkOS's user record still holds the old names.
    Before, the sign-in wrote them back and every resync after a sign-in found the person differing again."""
    session, client, orgs, replay = world
    acme = orgs["acme.test"].id
    uid = session.scalar(select(DirectoryUser.workos_id).where(DirectoryUser.organization_id == acme,
                                                               DirectoryUser.email == "dev@acme.test"))
    person_id = person_of(session, acme, uid)[1].id
    replay.ctl("PATCH", f"/directory_users/{uid}", {"first_name": "Dara", "last_name": "Quill"})
    replay.apply(how, session, client, acme)
    assert _names(session, person_id) == ("Dara", "Quill")
    session.commit()

    assert login(replay.app.test_client(), "dev@acme.test").status_code == 302
    assert _names(session, person_id) == ("Dara", "Quill")
    report = reconcile.full_resync(session, client, organization_id=acme)
    assert report.differences == 0, report.examples


def test_a_sign_in_names_a_person_no_directory_lists(world: Any) -> None:
    """Hooli has no directory: its members' names are WorkOS's user record's, taken at each sign-in."""
    session, _client, _orgs, replay = world
    ctl = replay.control
    assert password_login(replay.app.test_client(), ctl.base_url, "owner@hooli.test").status_code == 302
    person = session.scalar(select(User).where(User.email == "owner@hooli.test"))
    assert person is not None
    status, found = http_json("GET", f"{ctl.base_url}/user_management/users?email=owner@hooli.test", None,
                              ctl.headers)
    assert status == 200, found
    record = found["data"][0]
    assert _names(session, person.id) == (record["first_name"], record["last_name"])


# --- A membership no directory manages keeps the names --------------------------------------------------------

@pytest.mark.parametrize("how", ["webhooks", "resync"])
def test_a_directory_without_names_does_not_blank_a_person_another_tenant_added(how: str, world: Any) -> None:
    """Initech has the person by a WorkOS membership (no directory of its own lists it): Globex's IdP dropping the
    names does not "agree" with a membership that has none (found by a break-it review)."""
    session, client, orgs, replay = world
    globex, initech = orgs["globex.test"].id, orgs["initech.test"]
    g = replay.ctl("POST", f"/directories/{GLOBEX_DIR}/users", {"email": "wren.abara@partners.test",
                                                                "first_name": "Wren", "last_name": "Abara",
                                                                "groups": ["HatiData Viewers"]})
    replay.deliver()
    person_id = person_of(session, globex, g["id"])[1].id
    ctl = replay.control
    workos_user = http_json("POST", f"{ctl.base_url}/user_management/users", {"email": "wren.abara@partners.test"},
                            ctl.headers)[1]
    http_json("POST", f"{ctl.base_url}/user_management/organization_memberships",
              {"user_id": workos_user["id"], "organization_id": initech.workos_organization_id}, ctl.headers)
    for event in replay.new_events():
        deliver(replay.client, replay.app, event)
    assert _status(session, initech.id, person_id) == "active"

    replay.ctl("PATCH", f"/directory_users/{g['id']}", {"first_name": None, "last_name": None})
    replay.apply(how, session, client, globex)
    assert _names(session, person_id) == ("Wren", "Abara")


# --- Directories agreeing at once, in two transactions ----------------------------------------------------------

def test_two_directories_agreeing_at_once_rename_the_person(world: Any, app: Flask,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Two appliers apply Acme's and Globex's agreeing renames at once (different entity keys). Each used to read
    the other's old names and neither wrote (PostgreSQL; found by a break-it review): the person's names lock makes
    the second read what the first committed. Each transaction is held after its decision until both decided or 5 s
    passed (the second is then waiting for the lock). On SQLite the two run one after the other."""
    from hatidata_auth.extensions import db

    session, client, orgs, replay = world
    acme = orgs["acme.test"].id
    person_id = person_of(session, orgs["globex.test"].id, SHARED_IN_GLOBEX)[1].id
    concurrent = session.get_bind().dialect.name == "postgresql"  # SQLite's writers take turns: one at a time
    for directory_user_id in (SHARED_IN_ACME, SHARED_IN_GLOBEX):
        replay.ctl("PATCH", f"/directory_users/{directory_user_id}", {"first_name": "Casey", "last_name": "Lindqvist"})
    events = replay.new_events()
    for event in events:
        inbox.store(db.session(), event)
    db.session.remove()

    decided = threading.Barrier(2)
    original = directory_names.speaks_for_names

    def held(ctx: Any, org: Any, du: Any, user: Any) -> bool:
        answer = original(ctx, org, du, user)
        with contextlib.suppress(threading.BrokenBarrierError):
            decided.wait(5)
        return answer

    monkeypatch.setattr(directory_names, "speaks_for_names", held)
    errors: list[BaseException] = []

    def applier(key: str) -> None:
        with app.app_context():
            try:
                assert inbox_worker.apply_batch(db.session(), client, limit=1, entity_key=key).claimed
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=applier, args=(inbox.entity_key(event),)) for event in events]
    for thread in threads:
        thread.start()
        if not concurrent:
            thread.join(30)
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    monkeypatch.setattr(directory_names, "speaks_for_names", original)
    assert _names(session, person_id) == ("Casey", "Lindqvist")
    report = reconcile.full_resync(session, client, organization_id=acme)
    assert report.differences == 0, report.examples


@pytest.mark.parametrize("how", ["deactivate", "delete"])
def test_a_rename_held_back_lands_at_the_next_resync_once_the_other_lets_go(how: str, world: Any) -> None:
    """Acme renames the shared person while Globex lists other names: held back. Globex then lets the person go;
    the let-go itself renames nobody (documented), Acme's next resync does, and the one after finds nothing."""
    session, client, orgs, replay = world
    acme = orgs["acme.test"].id
    person_id = person_of(session, acme, SHARED_IN_ACME)[1].id
    replay.ctl("PATCH", f"/directory_users/{SHARED_IN_ACME}", {"first_name": "Casey", "last_name": "Oyelaran"})
    replay.deliver()
    assert _names(session, person_id) == ("Casey", "Morgan")
    if how == "deactivate":
        replay.ctl("POST", f"/directory_users/{SHARED_IN_GLOBEX}/deactivate")
    else:
        replay.ctl("DELETE", f"/directory_users/{SHARED_IN_GLOBEX}")
    replay.deliver()
    first = reconcile.full_resync(session, client, organization_id=acme)
    assert _names(session, person_id) == ("Casey", "Oyelaran"), first.examples
    again = reconcile.full_resync(session, client, organization_id=acme)
    assert again.differences == 0, again.examples
