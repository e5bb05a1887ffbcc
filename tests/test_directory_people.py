"""A directory user is one person whatever its email does, and every attribute mirrored from the IdP follows its
updates (issue #11): replayed through the emulator's signed webhooks, and through a full resync after missed ones."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from hatidata_auth.causes import Actor, Cause
from hatidata_auth.models import AuditEvent, AuthSession, Membership, User
from hatidata_auth.services import api_keys, reconcile
from hatidata_auth.services.directory_people import MIRRORED_FIELDS
from tests.support.people import (
    NO_ACCESS,
    Replay,
    directory_user,
    give_session_and_key,
    held_access,
    person_of,
    prepare,
)
from tests.support.servers import EmulatorControl

GLOBEX_DIR = "directory_01HTDQ8D200000000000000001"
ACME_DIR = "directory_01HTDQ8D100000000000000001"
SHARED_USER = "directory_user_01HTDQ8F100000000000000009"  # consultant@partners.test, also in Globex
DELIVERIES = ("webhooks", "resync")


@pytest.fixture
def orgs(db_session: Any, workos_client: Any) -> dict[str, Any]:
    """The demo organizations mirrored, resynced, with their demo mappings."""
    return prepare(db_session, workos_client)


@pytest.fixture
def replay(emulator_control: EmulatorControl, app: Flask) -> Replay:
    """The IdP, whose events the test delivers (or misses) itself."""
    return Replay(emulator_control, app)


def _apply(how: str, replay: Replay, db_session: Any, workos_client: Any, org_id: str) -> None:
    """Deliver what happened by webhook, or miss it and run a full resync, which must report it."""
    if how == "webhooks":
        replay.deliver()
    else:
        assert replay.miss() > 0
        report = reconcile.full_resync(db_session, workos_client, organization_id=org_id)
        assert report.differences > 0, report.examples


def _resync_is_clean(db_session: Any, workos_client: Any, org_id: str) -> None:
    report = reconcile.full_resync(db_session, workos_client, organization_id=org_id)
    assert report.differences == 0, report.examples


def _create(replay: Replay, directory: str, email: str, group: str = "HatiData Developers") -> str:
    created = replay.ctl("POST", f"/directories/{directory}/users",
                         {"email": email, "first_name": "Noor", "last_name": "Haddad", "groups": [group]})
    replay.deliver()
    return str(created["id"])


@pytest.mark.parametrize("how", DELIVERIES)
def test_email_change_keeps_one_person_and_deactivation_ends_everything(
        how: str, db_session: Any, workos_client: Any, orgs: dict[str, Any], replay: Replay) -> None:
    globex = orgs["globex.test"].id
    uid = _create(replay, GLOBEX_DIR, "noor.haddad@globex.test")
    membership, person = person_of(db_session, globex, uid)
    assert (membership.status, person.email) == ("active", "noor.haddad@globex.test")
    key_id = give_session_and_key(db_session, globex, person.id, "session_NOORBEFORECHANGE")

    replay.ctl("PATCH", f"/directory_users/{uid}", {"email": "n.haddad@globex.test"})
    _apply(how, replay, db_session, workos_client, globex)
    moved, same_person = person_of(db_session, globex, uid)
    assert (moved.id, same_person.id, same_person.email) == (membership.id, person.id, "n.haddad@globex.test")
    assert moved.status == "active"
    assert db_session.scalar(select(User.id).where(User.email == "noor.haddad@globex.test")) is None
    assert held_access(db_session, globex, person.id) == {"memberships": 1, "sessions": 1, "keys": 1}

    replay.ctl("POST", f"/directory_users/{uid}/deactivate")
    _apply(how, replay, db_session, workos_client, globex)
    final, _ = person_of(db_session, globex, uid)
    assert final.status == "deprovisioned"
    assert held_access(db_session, globex, person.id) == NO_ACCESS  # the session and key made before the change
    assert db_session.scalar(select(AuthSession.revoked_at).where(
        AuthSession.workos_session_id == "session_NOORBEFORECHANGE")) is not None
    assert api_keys.get_key(db_session, organization_id=globex, key_id=key_id).status == "suspended"
    _resync_is_clean(db_session, workos_client, globex)


@pytest.mark.parametrize("how", DELIVERIES)
def test_email_of_another_person_is_refused_until_freed(how: str, db_session: Any, workos_client: Any,
                                                         orgs: dict[str, Any], replay: Replay) -> None:
    acme = orgs["acme.test"].id
    first = _create(replay, ACME_DIR, "quinn.ito@acme.test")
    second = _create(replay, ACME_DIR, "r.ansah@acme.test", group="HatiData Viewers")
    _, quinn = person_of(db_session, acme, first)
    _, ansah = person_of(db_session, acme, second)
    give_session_and_key(db_session, acme, ansah.id, "session_ANSAHBEFORECLASH")

    replay.ctl("PATCH", f"/directory_users/{second}", {"email": "quinn.ito@acme.test"})
    replay.deliver()  # the clash itself always arrives: the refusal is what is tested
    refused, still_ansah = person_of(db_session, acme, second)
    assert (still_ansah.id, still_ansah.email) == (ansah.id, "r.ansah@acme.test")  # never merged
    assert refused.status == "deprovisioned"
    assert held_access(db_session, acme, ansah.id) == NO_ACCESS
    kept, still_quinn = person_of(db_session, acme, first)
    assert (kept.status, still_quinn.id, still_quinn.email) == ("active", quinn.id, "quinn.ito@acme.test")
    assert db_session.scalar(select(AuditEvent).where(
        AuditEvent.action == "directory_user.link_refused", AuditEvent.target_id == second)) is not None

    replay.ctl("PATCH", f"/directory_users/{first}", {"email": "q.ito@acme.test"})
    _apply(how, replay, db_session, workos_client, acme)
    relinked, ansah_now = person_of(db_session, acme, second)
    assert (relinked.status, ansah_now.id, ansah_now.email) == ("active", ansah.id, "quinn.ito@acme.test")
    assert person_of(db_session, acme, first)[1].email == "q.ito@acme.test"
    _resync_is_clean(db_session, workos_client, acme)


@pytest.mark.parametrize("how", DELIVERIES)
def test_person_of_another_organization_is_not_rewritten(how: str, db_session: Any, workos_client: Any,
                                                          orgs: dict[str, Any], replay: Replay) -> None:
    acme, globex = orgs["acme.test"].id, orgs["globex.test"].id
    _, shared = person_of(db_session, acme, SHARED_USER)
    give_session_and_key(db_session, acme, shared.id, "session_SHAREDINACME0")
    give_session_and_key(db_session, globex, shared.id, "session_SHAREDINGLOBEX")

    replay.ctl("PATCH", f"/directory_users/{SHARED_USER}", {"email": "casey.m@partners.test"})
    _apply(how, replay, db_session, workos_client, acme)
    membership, person = person_of(db_session, acme, SHARED_USER)
    assert (person.id != shared.id, person.email, membership.status) == (True, "casey.m@partners.test", "active")
    db_session.expire_all()
    assert db_session.get(User, shared.id).email == "consultant@partners.test"  # what Globex sees
    assert held_access(db_session, acme, shared.id) == NO_ACCESS
    assert held_access(db_session, globex, shared.id) == {"memberships": 1, "sessions": 1, "keys": 1}
    _resync_is_clean(db_session, workos_client, acme)
    _resync_is_clean(db_session, workos_client, globex)


def test_resync_repairs_a_split_person(db_session: Any, workos_client: Any, orgs: dict[str, Any],
                                       replay: Replay) -> None:
    globex = orgs["globex.test"].id
    uid = _create(replay, GLOBEX_DIR, "ola.berg@globex.test")
    original, person = person_of(db_session, globex, uid)
    give_session_and_key(db_session, globex, person.id, "session_OLABERGSPLIT0")
    # The state the old email-keyed linking left behind: a second person and membership for one directory user.
    stray = User(email="ola.b@globex.test")
    db_session.add(stray)
    db_session.flush()
    db_session.add(Membership(organization_id=globex, user_id=stray.id, role="viewer", role_source="default",
                              source="directory", status="active", directory_user_id=uid))
    db_session.commit()
    report = reconcile.full_resync(db_session, workos_client, organization_id=globex)
    assert report.people_repaired == 1, report.examples
    kept, same = person_of(db_session, globex, uid)
    assert (kept.id, same.id, kept.status) == (original.id, person.id, "active")
    assert held_access(db_session, globex, stray.id) == NO_ACCESS
    _resync_is_clean(db_session, workos_client, globex)


# --- every mirrored attribute -------------------------------------------------------------------------------------

CHANGES: dict[str, Callable[[int], tuple[str, str, Any]]] = {
    "email": lambda n: ("PATCH", "", {"email": f"mirror{n}@globex.test"}),
    "first_name": lambda n: ("PATCH", "", {"first_name": f"Ife{n}"}),
    "last_name": lambda n: ("PATCH", "", {"last_name": f"Adeyemi{n}"}),
    "state": lambda n: ("POST", "/suspend" if n == 1 else "/reactivate", None),
    "idp_id": lambda n: ("PATCH", "", {"idp_id": f"00u9mirror{n}"}),
    "attributes": lambda n: ("PATCH", "", {"department": f"Dept {n}", "job_title": f"Title {n}"}),
}


def test_every_mirrored_field_has_a_change() -> None:
    assert set(CHANGES) == set(MIRRORED_FIELDS)


def _mirrored(db_session: Any, org_id: str, uid: str, name: str) -> tuple[Any, Any]:
    """(the directory's value, the value where we hold it) of one mirrored field."""
    db_session.expire_all()
    du = directory_user(db_session, org_id, uid)
    table, column = MIRRORED_FIELDS[name].split(".")
    if table == "users":
        return getattr(du, name), getattr(person_of(db_session, org_id, uid)[1], column)
    if table == "memberships":
        status = person_of(db_session, org_id, uid)[0].status
        return du.state == "active", status == "active"
    return getattr(du, name), getattr(du, column)


@pytest.mark.parametrize("name", sorted(MIRRORED_FIELDS))
def test_every_mirrored_field_follows_the_idp(name: str, db_session: Any, workos_client: Any,
                                              orgs: dict[str, Any], replay: Replay,
                                              api_admin: Callable[..., Any]) -> None:
    globex = orgs["globex.test"].id
    uid = _create(replay, GLOBEX_DIR, "ife.adeyemi@globex.test")
    before = _mirrored(db_session, globex, uid, name)
    for n, how in enumerate(DELIVERIES, start=1):
        method, suffix, body = CHANGES[name](n)
        replay.ctl(method, f"/directory_users/{uid}{suffix}", body)
        _apply(how, replay, db_session, workos_client, globex)
        wanted, held = _mirrored(db_session, globex, uid, name)
        assert wanted == held, (how, wanted, held)
        assert wanted != before[0], (how, wanted)
        remote = workos_client.directory_sync.get_user(uid).to_dict()
        du = directory_user(db_session, globex, uid)
        assert (du.email, du.first_name, du.last_name, du.state, du.idp_id) == (
            remote["email"], remote["first_name"], remote["last_name"], remote["state"], remote["idp_id"])
        assert du.attributes == remote["custom_attributes"]
        membership, person = person_of(db_session, globex, uid)
        shown = api_admin(globex, f"/api/v1/members/{membership.id}")
        assert (shown["email"], shown["first_name"], shown["last_name"]) == (
            person.email, person.first_name, person.last_name)
        if du.state == "active":
            assert (person.email, person.first_name, person.last_name) == (du.email, du.first_name, du.last_name)
        before = (wanted, held)
    _resync_is_clean(db_session, workos_client, globex)


@pytest.fixture
def api_admin(app: Flask, db_session: Any) -> Callable[..., Any]:
    """GET an admin API path as an admin of the organization (a real API key)."""
    client = app.test_client()
    secrets: dict[str, str] = {}

    def get(org_id: str, path: str) -> Any:
        if org_id not in secrets:
            admin = db_session.scalar(select(Membership).where(Membership.organization_id == org_id,
                                                               Membership.role == "admin",
                                                               Membership.status == "active"))
            created = api_keys.create_key(db_session, organization_id=org_id, owner_user_id=admin.user_id,
                                          name="mirror check", scopes=["members:read"],
                                          cause=Cause.by(Actor("user", admin.user_id)))
            db_session.commit()
            secrets[org_id] = created.secret
        response = client.get(path, headers={"Authorization": f"Bearer {secrets[org_id]}"})
        assert response.status_code == 200, response.json
        return response.json

    return get


def test_deactivation_ends_every_membership_hanging_on_the_directory_user(
        db_session: Any, workos_client: Any, orgs: dict[str, Any], replay: Replay) -> None:
    acme = orgs["acme.test"].id
    uid = _create(replay, ACME_DIR, "tomas.lind@acme.test")
    _, person = person_of(db_session, acme, uid)
    # A split left by the old email-keyed linking: the old address's person still holds a membership, a session
    # and a key that carry the same directory user.
    old = User(email="t.lind@acme.test")
    db_session.add(old)
    db_session.flush()
    db_session.add(Membership(organization_id=acme, user_id=old.id, role="developer", role_source="mapping",
                              source="directory", status="active", directory_user_id=uid))
    db_session.commit()
    give_session_and_key(db_session, acme, old.id, "session_TLINDOLDADDR0")
    give_session_and_key(db_session, acme, person.id, "session_TLINDNEWADDR0")
    replay.ctl("POST", f"/directory_users/{uid}/deactivate")
    replay.deliver()
    assert held_access(db_session, acme, old.id) == NO_ACCESS
    assert held_access(db_session, acme, person.id) == NO_ACCESS
    remaining, same = person_of(db_session, acme, uid)  # the split is unlinked: one membership remains
    assert (same.id, remaining.status) == (person.id, "deprovisioned")
    unlinked = db_session.scalar(select(Membership).where(Membership.organization_id == acme,
                                                          Membership.user_id == old.id))
    assert (unlinked.status, unlinked.directory_user_id) == ("deprovisioned", None)
    _resync_is_clean(db_session, workos_client, acme)
