"""Member listings show the membership status apart from the role held (issue #11, item 7).

Whatever the directory does to its users (deactivate, suspend, delete, reactivate, played on the emulator and
delivered as signed webhooks) and whatever an admin removes, every member listing (list pages, one member,
the role explanation, the role filter) shows ``role`` only for active members and keeps the last role in
``last_role``.
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from hatidata_auth.causes import Actor, Cause
from hatidata_auth.extensions import db
from hatidata_auth.idp import get_registry
from hatidata_auth.models import Membership
from hatidata_auth.roles import ROLE_ORDER, permissions_for
from hatidata_auth.services import api_keys as key_service
from hatidata_auth.services import reconcile, tenant_admin
from tests.conftest import _empty_tables
from tests.support.dsync import mirror_organizations, post_event
from tests.support.servers import EmulatorControl, http_json

UMBRELLA_DIR = "directory_01HTDQ8D400000000000000001"
ACTIONS = ("deactivate", "suspend", "reactivate", "delete")


def _setup(app: Flask, emulator: Any, domain: str = "umbrella.test", also: tuple[str, ...] = ()) -> dict[str, str]:
    """*domain*'s organization (Umbrella) mirrored and resynced with the demo mappings, and an API key of a manual
    admin; the CLI's admin grant also given to each email of *also*."""
    emulator.reset()
    _empty_tables(app)
    with app.app_context():
        session, client = db.session, app.extensions["hatidata_workos"].client
        org = mirror_organizations(session, client)[domain]
        reconcile.full_resync(session, client, organization_id=org.id)
        reconcile.ensure_demo_mappings(session, client, organization_id=org.id, actor=Actor.system("test"),
                                       plugins=get_registry(app))
        caller = tenant_admin.grant_admin(session, organization_id=org.id, email=f"it-ops@{domain}",
                                          actor=Actor.system("test"))
        for email in also:
            tenant_admin.grant_admin(session, organization_id=org.id, email=email, actor=Actor.system("test"))
        key = key_service.create_key(session, organization_id=org.id, owner_user_id=caller.user_id, name="ops",
                                     scopes=sorted(permissions_for("admin")), cause=Cause.by(Actor.system("test")))
        session.commit()
        out = {"org": org.id, "secret": key.secret, "caller": caller.id}
        session.remove()
    return out


def _all_members(client: FlaskClient, headers: dict[str, str], query: str = "") -> list[dict[str, Any]]:
    items, cursor = [], None
    while True:
        url = f"/api/v1/members?limit=2{query}" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(url, headers=headers)
        assert page.status_code == 200, page.get_json()
        items += page.get_json()["data"]
        cursor = page.get_json()["next_cursor"]
        if cursor is None:
            return items


def _check_every_listing(app: Flask, client: FlaskClient, ctx: dict[str, str]) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {ctx['secret']}"}
    listed = _all_members(client, headers)
    with app.app_context():
        stored = {m.id: (m.role, m.status) for m in db.session.scalars(
            select(Membership).where(Membership.organization_id == ctx["org"]))}
        db.session.remove()
    assert {m["id"] for m in listed} == set(stored)
    for member in listed:
        last_role, status = stored[member["id"]]
        assert member["status"] == status
        assert member["last_role"] == last_role
        assert member["role"] == (last_role if status == "active" else None), member
        assert client.get(f"/api/v1/members/{member['id']}", headers=headers).get_json() == member
        explained = client.get(f"/api/v1/members/{member['id']}/role-explanation", headers=headers).get_json()
        assert (explained["role"], explained["status"]) == (member["role"], status)
    for role in ROLE_ORDER:
        holders = {m["id"] for m in _all_members(client, headers, f"&role={role}")}
        assert holders == {m["id"] for m in listed if m["role"] == role}
    return listed


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(ops=st.lists(st.tuples(st.integers(0, 20), st.sampled_from(ACTIONS)), min_size=1, max_size=6),
       removals=st.lists(st.integers(0, 20), max_size=2))
def test_every_listing_shows_status_apart_from_the_role_held(ops: list[tuple[int, str]], removals: list[int],
                                                             app: Flask, emulator: Any) -> None:
    ctx = _setup(app, emulator)
    control = EmulatorControl(emulator.url)
    status, body = http_json("GET", f"{control.base_url}/directory_users?directory={UMBRELLA_DIR}&limit=100",
                             None, control.headers)
    assert status == 200
    users = [u["id"] for u in body["data"]]
    start = len(control.events())
    for index, action in ops:
        if not users:
            break
        user = users[index % len(users)]
        if action == "delete":
            control.ctl("DELETE", f"/directory_users/{user}")
            users.remove(user)
        else:
            control.ctl("POST", f"/directory_users/{user}/{action}")
    client = app.test_client()
    for event in control.events()[start:]:
        assert post_event(client, app, event).status_code == 200
    headers = {"Authorization": f"Bearer {ctx['secret']}"}
    others = [m for m in _all_members(client, headers) if m["id"] != ctx["caller"]]
    for index in removals:
        target = others[index % len(others)]
        removed = client.delete(f"/api/v1/members/{target['id']}", headers=headers)
        db.session.remove()  # pytest-flask's context, which the requests share: a real request's teardown removes it
        if target["source"] == "directory":  # the directory decides: refused, nothing changed
            assert removed.status_code == 409
            assert removed.get_json()["error"]["code"] == "managed_by_directory"
            continue
        assert removed.status_code == 200
        assert removed.get_json()["role"] is None
        assert removed.get_json()["status"] == "deprovisioned"
    _check_every_listing(app, client, ctx)


def test_a_deprovisioned_admin_keeps_only_a_last_role(app: Flask, emulator: Any) -> None:
    ctx = _setup(app, emulator)
    control = EmulatorControl(emulator.url)
    admin_user = next(u for u in http_json("GET", f"{control.base_url}/directory_users?directory={UMBRELLA_DIR}"
                                                  "&limit=100", None, control.headers)[1]["data"]
                      if u["email"] == "admin@umbrella.test")
    start = len(control.events())
    control.ctl("POST", f"/directory_users/{admin_user['id']}/deactivate")
    client = app.test_client()
    for event in control.events()[start:]:
        assert post_event(client, app, event).status_code == 200
    listed = _check_every_listing(app, client, ctx)
    former = next(m for m in listed if m["email"] == "admin@umbrella.test")
    assert (former["role"], former["last_role"], former["status"]) == (None, "admin", "deprovisioned")
    document = client.get("/api/openapi.json").get_json()
    member = document["components"]["schemas"]["Member"]["properties"]
    assert {"role", "last_role", "status"} <= set(member)
    assert "null unless" in member["role"]["description"]
