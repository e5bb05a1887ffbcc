"""Property: after any directory history with email, name and attribute changes (its events shuffled,
duplicated, some missed and then repaired by a full resync), each live directory user maps to exactly one
membership whose person mirrors the directory (its names only where the directory speaks for them:
``directory_names.speaks_for_names``), and a deactivated or deleted one holds no access, no live session
and no usable key, including those made before its email changed."""

from __future__ import annotations

import itertools
from typing import Any

from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from hatidata_auth.models import DirectoryUser, Membership, Organization, User
from hatidata_auth.services import reconcile, role_mapping
from tests.conftest import _empty_tables
from tests.support.dsync import post_event
from tests.support.people import (
    NO_ACCESS,
    directory_user,
    give_session_and_key,
    held_access,
    memberships_of,
    person_of,
    prepare,
)
from tests.support.servers import EmulatorControl, http_json

ACME_DIR = "directory_01HTDQ8D100000000000000001"
SHARED_USER = "directory_user_01HTDQ8F100000000000000009"  # consultant@partners.test, also a member of Globex
KINDS = ("create_user", "change_email", "change_email", "rename", "rename_shared", "department", "deactivate",
         "reactivate", "suspend", "delete_user", "add", "remove")
_counter = itertools.count()

ops_strategy = st.lists(st.tuples(st.sampled_from(KINDS), st.integers(0, 1000), st.integers(0, 1000)),
                        min_size=1, max_size=12)


def _users(control: EmulatorControl) -> list[dict[str, Any]]:
    status, body = http_json("GET", f"{control.base_url}/directory_users?directory={ACME_DIR}&limit=100", None,
                             control.headers)
    assert status == 200, body
    return list(body["data"])


def _run_history(control: EmulatorControl, ops: list[tuple[str, int, int]]) -> set[str]:
    """Play the IdP; returns every directory user id the history touched or created."""
    users = [u["id"] for u in _users(control)]
    _, groups_body = http_json("GET", f"{control.base_url}/directory_groups?directory={ACME_DIR}&limit=100", None,
                               control.headers)
    groups = [g["id"] for g in groups_body["data"]]
    seen = set(users)
    for kind, a, b in ops:
        n = next(_counter)
        if kind == "create_user" or not users:
            created = control.ctl("POST", f"/directories/{ACME_DIR}/users",
                                  {"email": f"hire{n}@acme.test", "first_name": "Hire", "last_name": str(n),
                                   "groups": [groups[a % len(groups)]] if b % 2 else []})
            users.append(created["id"])
            seen.add(created["id"])
            continue
        user = SHARED_USER if kind == "rename_shared" and SHARED_USER in users else users[a % len(users)]
        if kind == "change_email":  # a fresh address, on the organization's domain or a shared one
            domain = "acme.test" if b % 3 else "partners.test"
            control.ctl("PATCH", f"/directory_users/{user}", {"email": f"renamed{n}@{domain}"})
        elif kind in ("rename", "rename_shared"):
            control.ctl("PATCH", f"/directory_users/{user}", {"first_name": f"F{b}", "last_name": f"L{n}"})
        elif kind == "department":
            control.ctl("PATCH", f"/directory_users/{user}", {"department": f"D{b}"})
        elif kind in ("deactivate", "reactivate", "suspend"):
            control.ctl("POST", f"/directory_users/{user}/{kind}")
        elif kind == "delete_user":
            control.ctl("DELETE", f"/directory_users/{user}")
            users.remove(user)
        elif kind in ("add", "remove"):
            control.ctl("POST" if kind == "add" else "DELETE", f"/directory_groups/{groups[b % len(groups)]}"
                        f"/members/{user}")
    return seen


def _check(session: Any, org_id: str, control: EmulatorControl, touched: set[str],
           people_before: dict[str, str], names_before: dict[str, tuple[str | None, str | None]]) -> None:
    """The property, against the emulator's directory now."""
    session.expire_all()
    org = session.get(Organization, org_id)
    mappings = role_mapping.list_mappings(session, org_id)
    live = {u["id"]: u for u in _users(control)}
    for uid, remote in live.items():
        du = directory_user(session, org_id, uid)
        assert (du.email, du.first_name, du.last_name, du.state) == (
            remote["email"], remote["first_name"], remote["last_name"], remote["state"])
        assert du.attributes == remote["custom_attributes"]
        if remote["state"] == "active":
            membership, person = person_of(session, org_id, uid)
            want = role_mapping.resolve_role([role_mapping.GroupRef(name=g["name"]) for g in remote["groups"]],
                                             mappings, org.default_role).role
            assert (membership.role, membership.status) == (want, "active"), remote["email"]
            assert person.email == remote["email"]
            elsewhere = session.scalar(select(Membership.id).where(Membership.user_id == person.id,
                                                                   Membership.organization_id != org_id).limit(1))
            if elsewhere is None or remote["email"].endswith("@acme.test"):  # Acme's directory speaks for them
                assert (person.first_name, person.last_name) == (remote["first_name"], remote["last_name"])
            else:  # a member of another organization, on a domain Acme did not verify: its names are kept
                assert (person.first_name, person.last_name) == names_before[person.id], remote["email"]
            others = session.scalars(select(DirectoryUser.workos_id).where(
                DirectoryUser.organization_id == org_id, DirectoryUser.user_id == person.id,
                DirectoryUser.deleted_at.is_(None))).all()
            assert others == [uid]  # one person, one directory user
    for uid in touched | set(people_before):
        if uid in live and live[uid]["state"] == "active":
            continue
        held = memberships_of(session, org_id, uid)
        assert len(held) <= 1
        assert all(m.status != "active" for m in held), uid
        if uid in people_before:
            assert held_access(session, org_id, people_before[uid]) == NO_ACCESS, uid
    session.rollback()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(ops=ops_strategy, data=st.data())
def test_people_follow_any_history(ops: list[tuple[str, int, int]], data: st.DataObject, app: Flask,
                                   emulator: Any) -> None:
    from hatidata_auth.extensions import db

    emulator.reset()
    _empty_tables(app)
    control = EmulatorControl(emulator.url)
    with app.app_context():
        session = db.session
        workos_client = app.extensions["hatidata_workos"].client
        org_id = prepare(session, workos_client)["acme.test"].id
        people_before: dict[str, str] = {}
        for du in session.scalars(select(DirectoryUser).where(DirectoryUser.organization_id == org_id,
                                                              DirectoryUser.state == "active")).all():
            people_before[du.workos_id] = person_of(session, org_id, du.workos_id)[1].id
        for n, (uid, user_id) in enumerate(sorted(people_before.items())):
            give_session_and_key(session, org_id, user_id, f"session_PROP{n:04d}{uid[-12:]}")
        names_before = {u.id: (u.first_name, u.last_name) for u in session.scalars(select(User))}
        start = len(control.events())
        touched = _run_history(control, ops)
        events = control.events()[start:]
        n = len(events)
        duplicates = data.draw(st.lists(st.integers(0, max(n - 1, 0)), max_size=n // 2 + 1)) if n else []
        order = data.draw(st.permutations(list(range(n)) + duplicates))
        missed = data.draw(st.sets(st.integers(0, max(n - 1, 0)), max_size=n // 3)) if n else set()
        client = app.test_client()
        for index in order:
            if index in missed:
                continue
            response = post_event(client, app, events[index])
            assert response.status_code == 200, response.json
        if not missed:
            _check(session, org_id, control, touched, people_before, names_before)
        reconcile.full_resync(session, workos_client, organization_id=org_id)
        _check(session, org_id, control, touched, people_before, names_before)
        again = reconcile.full_resync(session, workos_client, organization_id=org_id)
        assert again.differences == 0, again.examples
        session.rollback()
