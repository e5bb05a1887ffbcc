"""Property: whatever order, duplication or delay the events of a directory history arrive in, the final
state equals the emulator's directory."""

from __future__ import annotations

import itertools
from typing import Any

from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from hatidata_auth.causes import Actor
from hatidata_auth.idp import get_registry
from hatidata_auth.models import DirectoryGroup, DirectoryGroupMembership, DirectoryUser, Membership, Organization
from hatidata_auth.services import reconcile, role_mapping
from tests.conftest import _empty_tables
from tests.support.dsync import mirror_organizations, post_event
from tests.support.servers import EmulatorControl

ACME_DIR = "directory_01HTDQ8D100000000000000001"
KINDS = ("create_user", "add", "remove", "deactivate", "reactivate", "suspend", "delete_user", "rename",
         "create_group", "delete_group", "update_user")
_counter = itertools.count()

ops_strategy = st.lists(st.tuples(st.sampled_from(KINDS), st.integers(0, 1000), st.integers(0, 1000)),
                        min_size=1, max_size=14)


def _run_history(control: EmulatorControl, ops: list[tuple[str, int, int]]) -> None:
    """Play the IdP: apply each generated operation to whatever objects currently exist."""
    users = [u["id"] for u in _list(control, "directory_users")]
    groups = _list(control, "directory_groups")
    for kind, a, b in ops:
        if kind == "create_user" or not users:
            n = next(_counter)
            created = control.ctl("POST", f"/directories/{ACME_DIR}/users",
                                  {"email": f"p{n}@acme.test", "first_name": "P", "last_name": str(n),
                                   "groups": [groups[a % len(groups)]] if groups and b % 2 else []})
            users.append(created["id"])
            continue
        user = users[a % len(users)]
        if kind in ("add", "remove") and groups:
            group = groups[b % len(groups)]
            verb = "POST" if kind == "add" else "DELETE"
            control.ctl(verb, f"/directory_groups/{group}/members/{user}")
        elif kind in ("deactivate", "reactivate", "suspend"):
            control.ctl("POST", f"/directory_users/{user}/{kind}")
        elif kind == "update_user":
            control.ctl("PATCH", f"/directory_users/{user}", {"last_name": f"L{b}"})
        elif kind == "delete_user":
            control.ctl("DELETE", f"/directory_users/{user}")
            users.remove(user)
        elif kind == "rename" and groups:
            names = ["HatiData Admins", "HatiData Developers", "HatiData Viewers", "Other", "Misc"]
            control.ctl("PATCH", f"/directory_groups/{groups[b % len(groups)]}", {"name": f"{names[a % 5]} {b}"
                        if b % 3 else names[a % 5]})
        elif kind == "create_group":
            created = control.ctl("POST", f"/directories/{ACME_DIR}/groups", {"name": f"G{next(_counter)}"})
            groups.append(created["id"])
        elif kind == "delete_group" and len(groups) > 1:
            group = groups[b % len(groups)]
            control.ctl("DELETE", f"/directory_groups/{group}")
            groups.remove(group)


def _list(control: EmulatorControl, what: str) -> list[Any]:
    from tests.support.servers import http_json

    status, body = http_json("GET", f"{control.base_url}/{what}?directory={ACME_DIR}&limit=100", None,
                             control.headers)
    assert status == 200, body
    return [item["id"] if what == "directory_groups" else item for item in body["data"]]


def _emulator_state(control: EmulatorControl) -> dict[str, Any]:
    users = _list(control, "directory_users")
    from tests.support.servers import http_json

    _, groups_body = http_json("GET", f"{control.base_url}/directory_groups?directory={ACME_DIR}&limit=100", None,
                               control.headers)
    return {
        "users": {u["id"]: (u["email"], u["state"], u.get("last_name")) for u in users},
        "groups": {g["id"]: g["name"] for g in groups_body["data"]},
        "memberships": {(g["id"], u["id"]) for u in users for g in u["groups"]},
        "user_group_names": {u["id"]: [g["name"] for g in u["groups"]] for u in users},
    }


def _our_state(session: Any, org_id: str) -> dict[str, Any]:
    session.expire_all()
    users = {u.workos_id: (u.email, u.state, u.last_name) for u in session.scalars(select(DirectoryUser).where(
        DirectoryUser.organization_id == org_id, DirectoryUser.deleted_at.is_(None)))}
    groups = {g.workos_id: g.name for g in session.scalars(select(DirectoryGroup).where(
        DirectoryGroup.organization_id == org_id, DirectoryGroup.deleted_at.is_(None)))}
    memberships = {(m.group_workos_id, m.user_workos_id) for m in session.scalars(
        select(DirectoryGroupMembership).where(DirectoryGroupMembership.organization_id == org_id,
                                               DirectoryGroupMembership.present.is_(True)))
        if m.group_workos_id in groups and m.user_workos_id in users}
    access = {m.directory_user_id: (m.role, m.status) for m in session.scalars(
        select(Membership).where(Membership.organization_id == org_id, Membership.source == "directory"))}
    session.rollback()
    return {"users": users, "groups": groups, "memberships": memberships, "access": access}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(ops=ops_strategy, data=st.data())
def test_shuffled_duplicated_delayed_histories_converge(ops: list[tuple[str, int, int]], data: st.DataObject,
                                                        app: Flask, emulator: Any) -> None:
    from hatidata_auth.extensions import db

    emulator.reset()
    _empty_tables(app)
    control = EmulatorControl(emulator.url)
    with app.app_context():
        session = db.session
        workos_client = app.extensions["hatidata_workos"].client
        acme = mirror_organizations(session, workos_client)["acme.test"]
        reconcile.full_resync(session, workos_client, organization_id=acme.id)
        reconcile.ensure_demo_mappings(session, workos_client, organization_id=acme.id, actor=Actor.system("t"),
                                       plugins=get_registry(app))
        session.commit()
        org_id = acme.id
        start = len(control.events())
        _run_history(control, ops)
        events = control.events()[start:]
        n = len(events)
        duplicates = data.draw(st.lists(st.integers(0, max(n - 1, 0)), max_size=n // 2 + 1)) if n else []
        order = data.draw(st.permutations(list(range(n)) + duplicates))
        client = app.test_client()
        for index in order:
            response = post_event(client, app, events[index])
            assert response.status_code == 200, response.json
        expected = _emulator_state(control)
        ours = _our_state(session, org_id)
        assert ours["users"] == expected["users"]
        assert ours["groups"] == expected["groups"]
        assert ours["memberships"] == expected["memberships"]
        org = session.get(Organization, org_id)
        mappings = role_mapping.list_mappings(session, org_id)
        for uid, (email, state, _) in expected["users"].items():
            refs = [role_mapping.GroupRef(name=name) for name in expected["user_group_names"][uid]]
            want = role_mapping.resolve_role(refs, mappings, org.default_role).role
            role, status = ours["access"].get(uid, (None, None))
            if state == "active":
                assert (role, status) == (want, "active"), (email, ours["access"].get(uid))
            else:
                assert status != "active", email
        session.rollback()
