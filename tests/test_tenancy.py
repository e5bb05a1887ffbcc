"""Issue #10: an organization's identity sources speak only for it; SSO policy is checked where sessions are made.

Initech and Umbrella (demo seed, each with a verified domain, an SSO connection and a directory) play A and B.
"""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx2
import jwt
import pytest
from flask import Flask, current_app
from flask.testing import FlaskClient
from sqlalchemy import select

from hatidata_auth.causes import Actor
from hatidata_auth.extensions import db
from hatidata_auth.idp import get_registry
from hatidata_auth.models import AuditEvent, AuthSession, DirectoryUser, Membership, Organization
from hatidata_auth.services import reconcile
from tests.auth_support import INITECH, authorize, callback_path, cookie_value, csrf_headers, forge_token, start_login
from tests.support.dsync import mirror_organizations
from tests.support.servers import EmulatorControl

UMBRELLA = "org_01HTDQ8A400000000000000001"
INITECH_DIR = "directory_01HTDQ8D300000000000000001"
UMBRELLA_DIR = "directory_01HTDQ8D400000000000000001"
UMBRELLA_DOMAIN = "org_domain_01HTDQ8B400000000000000001"


@pytest.fixture
def orgs(db_session: Any, workos_client: Any) -> dict[str, str]:
    """The demo organizations mirrored and their directories resynced: WorkOS id -> our id."""
    mirror_organizations(db_session, workos_client)
    for report in reconcile.resync_all(db_session, workos_client):
        reconcile.ensure_demo_mappings(db_session, workos_client, organization_id=report.organization_id,
                                       actor=Actor.system("test"), plugins=get_registry(current_app))
        db_session.commit()
    found = {str(o.workos_organization_id): o.id for o in db_session.scalars(select(Organization))}
    db_session.commit()
    return found


def set_org(app: Flask, org_id: str, **fields: Any) -> None:
    org = db.session.get(Organization, org_id)
    for key, value in fields.items():
        setattr(org, key, value)
    db.session.commit()


def sign_in(client: FlaskClient, email: str, organization: str, control: EmulatorControl | None = None) -> Any:
    """Sign in through *organization*'s own login (its IdP, simulated by the emulator). With *control*, webhook
    deliveries wait until the callback is done (SQLite serializes no concurrent audit-chain appends)."""
    if control is not None:
        control.webhook_settings(paused=True)
    try:
        return client.get(callback_path(authorize(start_login(client, email=email, organization_id=organization))))
    finally:
        if control is not None:
            control.webhook_settings(paused=False)
            control.flush()


def switch(client: FlaskClient, organization: str) -> Any:
    return client.post("/auth/switch-organization", json={"organization_id": organization},
                       headers=csrf_headers(client))


def new_person(control: EmulatorControl, directory: str, email: str) -> str:
    return str(control.ctl("POST", f"/directories/{directory}/users",
                           {"email": email, "first_name": "Pat", "last_name": "Doe",
                            "groups": ["HatiData Admins"]})["id"])


def test_domain_verification_states_are_mirrored(app: Flask, db_session: Any, workos_client: Any,
                                                 orgs: dict[str, str], webhooks: EmulatorControl) -> None:
    umbrella = db_session.get(Organization, orgs[UMBRELLA])
    assert umbrella.domain_states["umbrella.test"]["state"] == "verified"
    link = workos_client.admin_portal.generate_link(organization=UMBRELLA, intent="domain_verification")
    assert "/portal/" in link.link
    extra = workos_client.organization_domains.create_organization_domain(domain="umbrella-labs.test",
                                                                          organization_id=UMBRELLA)
    for state in ("pending", "failed", "verified"):
        webhooks.ctl("POST", f"/organization_domains/{extra.id}/state", {"state": state})
        webhooks.flush()
        db_session.expire_all()
        assert db_session.get(Organization, orgs[UMBRELLA]).domain_states["umbrella-labs.test"]["state"] == state
        db_session.rollback()


def test_sso_through_another_organization_for_a_verified_domain_is_refused(
        app: Flask, client: FlaskClient, db_session: Any, orgs: dict[str, str],
        emulator_control: EmulatorControl) -> None:
    new_person(emulator_control, INITECH_DIR, "Admin@Umbrella.Test")
    response = sign_in(client, "admin@umbrella.test", INITECH)
    assert response.status_code == 409, response.get_data(as_text=True)
    body = response.get_json()["error"]
    assert body["code"] == "sso_required"
    assert body["details"]["reason"] == "foreign_domain"
    assert cookie_value(client) is None
    assert db_session.scalar(select(AuthSession)) is None
    refused = db_session.scalar(select(AuditEvent).where(AuditEvent.action == "auth.policy_refused"))
    assert refused is not None
    assert refused.organization_id == orgs[INITECH]


def test_rewriting_the_authorize_url_to_authkit_does_not_bypass_enforced_sso(
        app: Flask, client: FlaskClient, db_session: Any, orgs: dict[str, str], emulator: Any) -> None:
    set_org(app, orgs[UMBRELLA], sso_enforced=True)
    url = start_login(client, organization_id=UMBRELLA)
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query))
    assert params.pop("connection_id") == "conn_01HTDQ8C400000000000000001"
    params["provider"] = "authkit"  # same state and PKCE challenge
    page = httpx2.get(urlunsplit(parts._replace(query=urlencode(params))), timeout=10)
    areq = re.search(r"/hosted/(areq_[A-Za-z0-9]+)/email", page.text)
    assert areq is not None, page.text[:300]
    picked = httpx2.post(f"{emulator.url}/hosted/{areq.group(1)}/idp/-", data={"email": "admin@umbrella.test"},
                         timeout=10)
    assert picked.status_code == 302
    response = client.get(callback_path(picked.headers["location"]))
    assert response.status_code == 409, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["details"] == {"reason": "sso_enforced", "organization_id": orgs[UMBRELLA],
                                "login_url": f"/auth/login?organization_id={orgs[UMBRELLA]}"}
    assert db_session.scalar(select(AuthSession)) is None


def _expire_access_token(app: Flask, client: FlaskClient, emulator: Any) -> None:
    from workos.session import seal_data, unseal_data

    data = unseal_data(cookie_value(client) or "", app.config["HATIDATA_COOKIE_KEY"])
    claims = jwt.decode(data["access_token"], options={"verify_signature": False})
    now = int(time.time())
    data["access_token"] = forge_token(emulator, **{**claims, "iat": now - 600, "exp": now - 300})
    client.set_cookie("hatidata_session", seal_data(data, app.config["HATIDATA_COOKIE_KEY"]))


def test_shared_member_switch_refresh_and_deprovisioning(
        app: Flask, client: FlaskClient, db_session: Any, orgs: dict[str, str],
        emulator: Any, webhooks: EmulatorControl) -> None:
    """A contractor on a domain nobody verified, in both directories: neither organization's IdP speaks for them
    in the other (each one's own sign-in is needed there); each organization's policy decides its sessions."""
    email = "pat.contractor@freelance.test"
    initech_du = new_person(webhooks, INITECH_DIR, email)
    new_person(webhooks, UMBRELLA_DIR, email)
    webhooks.flush()
    other = app.test_client()
    assert sign_in(other, email, UMBRELLA, webhooks).status_code == 302  # WorkOS now knows both memberships
    assert sign_in(client, email, INITECH, webhooks).status_code == 302
    initech, umbrella = orgs[INITECH], orgs[UMBRELLA]
    for enforced, reason in ((True, "sso_enforced"), (False, "foreign_identity_source")):
        set_org(app, umbrella, sso_enforced=enforced)
        refused = switch(client, UMBRELLA)
        assert refused.status_code == 409
        details = refused.get_json()["error"]["details"]
        assert details["login_url"] == f"/auth/login?organization_id={umbrella}"
        assert details["reason"] == reason
    assert client.get("/api/v1/me").get_json()["organization_id"] == initech  # the refusal ended nothing
    listed = {o["id"]: o for o in client.get("/auth/organizations").get_json()["data"]}
    assert listed[umbrella]["sign_in_required"] is True  # shown, marked: sign in there
    assert listed[initech]["sign_in_required"] is False
    # Umbrella's own sign-in is accepted there; it does not speak for Initech either.
    assert switch(other, INITECH).status_code == 409
    assert other.get("/api/v1/me").get_json()["organization_id"] == umbrella
    # Initech replaces its connection and enforces SSO: a session the old connection made is refused at refresh.
    set_org(app, initech, sso_enforced=True, connection_id="conn_01HTDQ8C3REPLACED000000001")
    _expire_access_token(app, client, emulator)
    assert client.get("/api/v1/me").status_code == 409
    db_session.expire_all()
    ended = db_session.scalar(select(AuthSession).where(AuthSession.auth_organization_id == initech))
    assert ended.revoked_at is not None
    assert ended.revoked_reason.startswith("policy_refused")
    db_session.rollback()
    set_org(app, initech, sso_enforced=False)
    # A session Initech's sign-in produced ends when Initech deprovisions the person.
    third = app.test_client()
    assert sign_in(third, email, INITECH, webhooks).status_code == 302
    webhooks.ctl("POST", f"/directory_users/{initech_du}/deactivate")
    webhooks.flush()
    assert third.get("/api/v1/me").status_code == 401
    assert other.get("/api/v1/me").status_code == 200  # Umbrella's own session is Umbrella's business
    db_session.expire_all()
    rows = db_session.scalars(select(AuthSession).where(AuthSession.auth_organization_id == initech)).all()
    assert rows
    assert all(r.revoked_at is not None for r in rows)
    assert db_session.scalar(select(DirectoryUser).where(DirectoryUser.workos_id == initech_du)) is not None
    assert db_session.scalar(select(Membership).where(Membership.organization_id == umbrella,
                                                      Membership.status == "active")) is not None
