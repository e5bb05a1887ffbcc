"""Each organization's allowed sign-in methods: the settings API, and the login that a disallowed method makes
(refused like ``sso_required``, audited); sessions record Password / MagicAuth."""

from __future__ import annotations

import re
from typing import Any

import httpx2
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from hatidata_auth.causes import Actor, Cause
from hatidata_auth.extensions import db
from hatidata_auth.models import SIGN_IN_METHODS, AuditEvent, AuthSession
from hatidata_auth.services import tenant_admin
from tests.api_support import Tenant, headers_for, make_tenant, sso_verified
from tests.auth_support import callback_path, cookie_value, password_login, start_login, sync_organizations

HOOLI = "org_01HTDQ8A500000000000000001"
OWNER = "owner@hooli.test"
MEMBER = "member@hooli.test"


def _audited(app: Flask, org_id: str, action: str) -> list[AuditEvent]:
    with app.app_context():
        rows = list(db.session.scalars(select(AuditEvent).where(AuditEvent.organization_id == org_id,
                                                                AuditEvent.action == action)))
        db.session.expunge_all()
        db.session.remove()
    return rows


def test_allowed_methods_are_read_and_changed_with_an_audit_event(app: Flask, client: FlaskClient) -> None:
    tenant: Tenant = make_tenant(app, "Methods")
    url, adm = "/api/v1/organization/settings", headers_for(tenant, "admin")
    assert client.get(url, headers=headers_for(tenant, "viewer")).get_json()["auth_methods"] == list(SIGN_IN_METHODS)
    changed = client.patch(url, headers=adm, json={"auth_methods": ["password", "sso"]})
    assert changed.status_code == 200, changed.get_json()
    assert changed.get_json()["auth_methods"] == ["sso", "password"]
    [event] = _audited(app, tenant.id, "organization.settings_updated")
    assert event.details["changes"]["auth_methods"] == {"from": None, "to": ["sso", "password"]}
    for bad in (["fax"], []):
        refused = client.patch(url, headers=adm, json={"auth_methods": bad})
        assert refused.status_code == 422, bad
    assert client.patch(url, headers=adm, json={"auth_methods": None}).get_json()["auth_methods"] == list(
        SIGN_IN_METHODS)
    sso_verified(app, tenant)  # safe enforcement: an admin signed in through SSO recently
    enforced = client.patch(url, headers=adm, json={"sso_enforced": True}).get_json()
    assert enforced["auth_methods"] == ["sso"]  # SSO-enforcing means SSO only
    conflict = client.patch(url, headers=adm, json={"auth_methods": ["sso", "password"]})
    assert conflict.status_code == 422
    assert conflict.get_json()["error"]["details"]["fields"]["auth_methods"]
    assert client.patch(url, headers=adm, json={"auth_methods": ["sso"]}).status_code == 200


def _hosted_page(client: FlaskClient, email: str, **params: Any) -> tuple[httpx2.Client, str]:
    browser = httpx2.Client(follow_redirects=False, timeout=10)
    page = browser.get(start_login(client, email=email, **params))
    assert page.status_code == 200, page.text[:300]
    assert 'type="password"' in page.text  # Hooli has no SSO: the hosted page offers AuthKit's own methods
    return browser, page.text


def _action(page: str, fragment: str) -> str:
    return next(a for a in re.findall(r'action="([^"]+)"', page) if fragment in a)


def _magic_login(client: FlaskClient, emulator: Any) -> Any:
    browser, page = _hosted_page(client, MEMBER)
    base = emulator.url
    try:
        sent = browser.post(base + _action(page, "/magic/"), data={"email": MEMBER})
        code = httpx2.get(f"{emulator.url}/_emulator/magic_auth", params={"email": MEMBER},
                          headers={"Authorization": "Bearer sk_test_emulator"}).json()["data"][0]["code"]
        done = browser.post(base + _action(sent.text, "/verify"), data={"email": MEMBER, "code": code})
    finally:
        browser.close()
    assert done.status_code == 302, done.text[:300]
    return client.get(callback_path(done.headers["location"]))


def _session_methods(app: Flask) -> list[str]:
    with app.app_context():
        methods = list(db.session.scalars(select(AuthSession.auth_method).order_by(AuthSession.created_at)))
        db.session.remove()
    return methods


@pytest.mark.usefixtures("emulator")
def test_password_and_magic_code_sessions_record_their_method(app: Flask, client: FlaskClient,
                                                              emulator: Any) -> None:
    sync_organizations(app)
    response = password_login(client, emulator.url, OWNER)
    assert response.status_code == 302, response.get_data(as_text=True)
    assert cookie_value(client)
    other = app.test_client()
    assert _magic_login(other, emulator).status_code == 302
    assert _session_methods(app) == ["password", "magicauth"]


@pytest.mark.usefixtures("emulator")
def test_a_method_the_organization_does_not_allow_is_refused(app: Flask, client: FlaskClient,
                                                             emulator: Any) -> None:
    orgs = sync_organizations(app)
    with app.app_context():
        tenant_admin.update_settings(db.session(), organization_id=orgs[HOOLI], changes={"auth_methods": ["magicauth"]},
                              cause=Cause.by(Actor.system()))
        db.session.commit()
        db.session.remove()
    refused = password_login(client, emulator.url, OWNER)
    assert refused.status_code == 409, refused.get_data(as_text=True)
    error = refused.get_json()["error"]
    assert (error["code"], error["details"]["reason"]) == ("sso_required", "method_not_allowed")
    assert error["details"]["allowed_methods"] == ["magicauth"]
    assert cookie_value(client) is None
    [audit] = _audited(app, orgs[HOOLI], "auth.policy_refused")
    assert audit.details["reason"] == "method_not_allowed"
    assert audit.details["auth_method"] == "password"
    assert _magic_login(app.test_client(), emulator).status_code == 302
    assert _session_methods(app) == ["magicauth"]
