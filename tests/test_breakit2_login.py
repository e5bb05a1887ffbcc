"""Break-it round 2 (issues #12/#13): the restructured sign-in path and its audit trail.

Each test builds its own organizations and users through the emulator's API (not the demo seed) and signs in
through the real hosted page over HTTP.
"""

from __future__ import annotations

import re
from typing import Any

import httpx2
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from hatidata_auth.extensions import db
from hatidata_auth.models import AuditEvent
from tests.auth_support import callback_path, query, start_login, sync_organizations

API = {"Authorization": "Bearer sk_test_emulator"}
PASSWORD = "Zq8-lantern-orbit"
AGENT = "breakit2-browser/1.0"
REQUEST_ID = "breakit2-req-0001"


def _post(emulator: Any, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx2.post(f"{emulator.url}{path}", json=body, headers=API, timeout=10)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


def _organization(emulator: Any, name: str) -> str:
    return str(_post(emulator, "/organizations", {"name": name})["id"])


def _user(emulator: Any, email: str, *organizations: str) -> str:
    user = _post(emulator, "/user_management/users", {"email": email, "email_verified": True, "password": PASSWORD})
    for org in organizations:
        _post(emulator, "/user_management/organization_memberships",
              {"user_id": user["id"], "organization_id": org, "role_slug": "developer"})
    return str(user["id"])


def _password_sign_in(client: FlaskClient, email: str, organization_id: str) -> Any:
    """Our login pinned to *organization_id* (ours), the hosted page's password form, then our callback."""
    with httpx2.Client(follow_redirects=False, timeout=10) as browser:
        page = browser.get(start_login(client, email=email, organization_id=organization_id))
        assert page.status_code == 200, page.text[:300]
        action = next(a for a in re.findall(r'action="([^"]+)"', page.text) if "/password/" in a)
        done = browser.post(str(page.url.join(action)), data={"email": email, "password": PASSWORD})
    assert done.status_code == 302, done.text[:300]
    return client.get(callback_path(done.headers["location"]),
                      headers={"User-Agent": AGENT, "X-Request-ID": REQUEST_ID})


def _audit(app: Flask, organization_id: str, action: str) -> list[AuditEvent]:
    with app.app_context():
        rows = list(db.session.scalars(select(AuditEvent).where(AuditEvent.organization_id == organization_id,
                                                                AuditEvent.action == action)))
        db.session.expunge_all()
        db.session.remove()
    return rows


def test_memberships_mirrored_at_login_are_audited_with_the_callback_request(
        app: Flask, client: FlaskClient, emulator: Any) -> None:
    zephyr = _organization(emulator, "Zephyr Widgets")
    quokka = _organization(emulator, "Quokka Labs")
    _user(emulator, "riley.okafor@independent-mail.test", zephyr, quokka)
    ours = sync_organizations(app)
    with app.app_context():
        before = set(db.session.scalars(select(AuditEvent.id).where(AuditEvent.organization_id == ours[quokka])))
        db.session.remove()
    response = _password_sign_in(client, "riley.okafor@independent-mail.test", ours[zephyr])
    assert response.status_code == 302, response.get_data(as_text=True)
    [login] = _audit(app, ours[zephyr], "auth.login.succeeded")
    assert (login.user_agent, login.request_id) == (AGENT, REQUEST_ID)  # the login itself is attributed
    mirrored = _audit(app, ours[quokka], "membership.created")
    assert mirrored, "the other membership is mirrored at login"
    for row in mirrored:
        assert (row.actor_type, row.actor_id) == ("user", login.actor_id)
        assert (row.user_agent, row.request_id, row.ip_address) == (AGENT, REQUEST_ID, login.ip_address)
    with app.app_context():  # every row the mirror wrote (membership.created and the access it granted)
        everything = list(db.session.scalars(select(AuditEvent).where(AuditEvent.organization_id == ours[quokka],
                                                                      AuditEvent.id.not_in(before))))
        db.session.remove()
    assert len(everything) > len(mirrored)
    for row in everything:
        assert (row.actor_type, row.actor_id) == ("user", login.actor_id), row.action
        assert (row.user_agent, row.request_id, row.ip_address) == (AGENT, REQUEST_ID, login.ip_address), row.action


def test_home_realm_discovery_ignores_a_domain_nobody_verified(
        app: Flask, client: FlaskClient, emulator: Any) -> None:
    claimer = str(_post(emulator, "/organizations", {
        "name": "Mallory Holdings", "domain_data": [{"domain": "northwind-traders.test", "state": "pending"}],
    })["id"])
    sync_organizations(app)
    url = start_login(client, email="ceo@northwind-traders.test")
    params = query(url)
    assert params.get("organization_id") != claimer, "an unverified claim decides where the CEO signs in"
    assert "connection_id" not in params


def test_a_refused_sign_in_of_a_known_member_names_the_member(
        app: Flask, client: FlaskClient, emulator: Any) -> None:
    from hatidata_auth.causes import Actor, Cause
    from hatidata_auth.services import tenant_admin

    kestrel = _organization(emulator, "Kestrel Optics")
    _user(emulator, "ines.varga@freelance-box.test", kestrel)
    ours = sync_organizations(app)
    assert _password_sign_in(client, "ines.varga@freelance-box.test", ours[kestrel]).status_code == 302
    [first] = _audit(app, ours[kestrel], "auth.login.succeeded")
    with app.app_context():
        tenant_admin.update_settings(db.session(), organization_id=ours[kestrel],
                                     changes={"auth_methods": ["magicauth"]}, cause=Cause.by(Actor.system()))
        db.session.commit()
        db.session.remove()
    refused = _password_sign_in(app.test_client(), "ines.varga@freelance-box.test", ours[kestrel])
    assert refused.status_code == 409, refused.get_data(as_text=True)
    [row] = _audit(app, ours[kestrel], "auth.policy_refused")
    assert (row.user_agent, row.request_id) == (AGENT, REQUEST_ID)
    assert (row.actor_type, row.actor_id, row.actor_email) == ("user", first.actor_id, first.actor_email)


def test_a_denied_sign_in_is_audited_in_its_organization_naming_the_member(
        app: Flask, client: FlaskClient, emulator: Any) -> None:
    from hatidata_auth.causes import Cause
    from hatidata_auth.models import Membership
    from hatidata_auth.services import tenant_admin

    heron = _organization(emulator, "Heron Ledger")
    _user(emulator, "tomas.reyes@heron-ledger.test", heron)
    ours = sync_organizations(app)
    assert _password_sign_in(client, "tomas.reyes@heron-ledger.test", ours[heron]).status_code == 302
    [first] = _audit(app, ours[heron], "auth.login.succeeded")
    with app.app_context():
        membership = db.session.scalar(select(Membership).where(Membership.organization_id == ours[heron]))
        assert membership is not None
        tenant_admin.remove_member(db.session(), app.extensions["hatidata_workos"].client,
                                   organization_id=ours[heron], membership_id=membership.id,
                                   cause=Cause.system("offboarding"))
        db.session.commit()
        db.session.remove()
    denied = _password_sign_in(app.test_client(), "tomas.reyes@heron-ledger.test", ours[heron])
    assert denied.status_code == 403, denied.get_data(as_text=True)
    assert denied.get_json()["error"]["code"] == "login_denied"
    [row] = _audit(app, ours[heron], "auth.login.failed")
    assert (row.actor_id, row.actor_email) == (first.actor_id, first.actor_email)
    assert (row.user_agent, row.request_id) == (AGENT, REQUEST_ID)


@pytest.mark.parametrize(("claims", "routed"), [
    ({"first": "verified"}, "first"),
    ({"first": "legacy_verified"}, "first"),
    ({"first": "pending"}, None),
    ({"first": "failed"}, None),
    ({"first": None}, None),
    ({"first": "verified", "second": "pending"}, "first"),
    ({"first": "pending", "second": "verified"}, "second"),
    ({"first": "verified", "second": "verified"}, None),
])
def test_home_realm_discovery_routes_only_by_a_domain_one_organization_verified(
        db_session: Any, claims: dict[str, str | None], routed: str | None) -> None:
    from hatidata_auth.models import Organization
    from hatidata_auth.services.organizations import find_organization_for_email

    ids = {}
    for name, state in claims.items():
        org = Organization(name=f"Claimant {name}", domains=["copperfield-mills.test"],
                           domain_states={"copperfield-mills.test": {"state": state, "verification_strategy": "dns"}})
        db_session.add(org)
        db_session.flush()
        ids[name] = org.id
    for email in ("ops@copperfield-mills.test", "ops@eu.copperfield-mills.test", "OPS@Copperfield-Mills.TEST"):
        found = find_organization_for_email(db_session, email)
        assert (found and found.id) == (routed and ids[routed]), (claims, email)
