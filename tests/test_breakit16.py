"""Breaking issue #16 (access policy): each fault found is one strict xfail test, minimal."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, select

from hatidata_auth.causes import Actor, Cause
from hatidata_auth.extensions import db
from hatidata_auth.idp import get_registry
from hatidata_auth.models import AuditEvent, AuthSession, Membership, Organization, User, utcnow
from hatidata_auth.services import auth_policy, last_admin, sso_enforcement, sso_setup, tenant_admin
from tests.api_support import headers_for, make_tenant
from tests.auth_support import ACME, access_token, callback_path, csrf_headers, login, start_login, sync_organizations
from tests.test_last_admin import _directory_admin, _second_admin
from tests.test_sso_wizard_recovery import OKTA_URL, _connections_at_workos, _to_metadata
from tests.test_step_up import _sign_in_on_page


def test_replacing_the_connection_of_an_enforcing_org_needs_a_new_proof(app: Flask, client: FlaskClient,
                                                                        emulator: Any) -> None:
    orgs = sync_organizations(app)
    wizard = _to_metadata(client)
    before = _connections_at_workos(emulator, ACME)
    assert wizard.post("metadata", {"source": "url", "metadata_url": OKTA_URL,
                                    "connection_choice": "new"}).status_code == 302
    (new,) = _connections_at_workos(emulator, ACME) - before
    with app.app_context():
        org = db.session.get(Organization, orgs[ACME])
        assert org is not None
        assert org.connection_id != new
        org.sso_enforced = True  # enforced through the old connection (proved back then)
        db.session.commit()
        plugin = get_registry(app).get("okta")
        assert plugin is not None
        # tested=True: a test sign-in through the new connection passed, but by nobody who is an admin
        with pytest.raises(sso_enforcement.EnforcementUnverified):
            sso_setup.activate(db.session(), app.extensions["hatidata_workos"].client, org, plugin, new,
                               True, True, Cause.system("test"))
        db.session.rollback()
        db.session.remove()


def test_a_mapping_edit_and_a_concurrent_demotion_cannot_remove_the_last_two_admins(app: Flask,
                                                                                   client: FlaskClient) -> None:
    tenant = make_tenant(app, "Mixrace")
    _directory_admin(app, tenant, "Mixrace")  # the admin is an admin through the mapped group
    _second_admin(app, tenant)  # the developer is a manual admin
    fired: list[str] = []

    def demote_developer() -> None:
        with app.app_context():
            try:
                tenant_admin.change_member_role(db.session, None, organization_id=tenant.id,  # type: ignore[arg-type]
                                                membership_id=tenant.members["developer"], role="viewer",
                                                cause=Cause.by(Actor.system("test")))
                db.session.commit()
                fired.append("ok")
            except Exception as exc:  # noqa: BLE001 - the outcome is the assertion
                db.session.rollback()
                fired.append(getattr(exc, "code", type(exc).__name__))
            finally:
                db.session.remove()

    def before_lock(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        # the moment the mapping edit is about to lock the organization's row: the other admin's demotion commits
        if fired or threading.current_thread() is not threading.main_thread():
            return
        if "FOR UPDATE" in statement or statement.startswith("UPDATE organizations SET id"):
            other = threading.Thread(target=demote_developer)
            other.start()
            other.join(10)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", before_lock)
    try:
        edit = client.patch(f"/api/v1/role-mappings/{tenant.ids['mapping']}", headers=headers_for(tenant, "admin"),
                            json={"role": "viewer"})
    finally:
        event.remove(engine, "before_cursor_execute", before_lock)
    assert fired == ["ok"], fired  # the demotion ran first (and rightly succeeded: the mapped admin was left)
    with app.app_context():
        left = last_admin.active_admin_ids(db.session, tenant.id)
        db.session.remove()
    assert edit.status_code == 409 or left, (edit.status_code, edit.get_json(), left)


def test_sso_only_methods_need_the_same_proof_as_sso_enforcement(app: Flask, client: FlaskClient) -> None:
    tenant = make_tenant(app, "Methods")  # nobody has signed in through its SSO connection
    response = client.patch("/api/v1/organization/policy", headers=headers_for(tenant, "admin"),
                            json={"allowed_methods": ["sso"]})
    assert response.status_code == 409, response.get_json()


def test_a_pre_enforcement_session_kept_alive_by_break_glass_is_audited(app: Flask) -> None:
    tenant = make_tenant(app, "Preglass")
    with app.app_context():
        org = db.session.get(Organization, tenant.id)
        assert org is not None
        record = AuthSession(organization_id=org.id, workos_session_id="session_preglass_password",
                             user_id=tenant.users["admin"], auth_method="password",
                             expires_at=utcnow() + timedelta(hours=1))
        db.session.add(record)
        org.break_glass_members = [tenant.members["admin"]]
        org.sso_enforced = True  # turned on after the password sign-in
        db.session.commit()
        auth_policy.check_session(db.session, record, action="refresh")  # accepted through the exemption
        db.session.commit()
        used = list(db.session.scalars(select(AuditEvent).where(AuditEvent.organization_id == org.id,
                                                                AuditEvent.action == "auth.break_glass_used")))
        db.session.remove()
    assert used, "the exemption kept a non-SSO session alive under enforcement without any audit"


def test_a_silent_re_login_does_not_restart_the_absolute_lifetime(app: Flask, client: FlaskClient,
                                                                  emulator: Any) -> None:
    sync_organizations(app)
    with httpx2.Client(timeout=10) as http:
        first = http.get(start_login(client, email="admin@acme.test"), follow_redirects=False)
        assert client.get(callback_path(str(first.headers["location"]))).status_code == 302
        limited = client.patch("/api/v1/organization/policy", json={"absolute_lifetime": 300},
                               headers=csrf_headers(client))
        assert limited.status_code == 200, limited.get_json()
        with emulator.emulator.store.lock:  # the last active authentication was 400 s ago
            for record in emulator.emulator.store.browser_sessions.values():
                record["auth_time"] -= 400
        # no organization named, so nothing bounds the caller's max_age: AuthKit passes the browser through
        again = http.get(start_login(client, max_age=100000), follow_redirects=False)
        assert again.status_code == 302  # straight through: nobody authenticated
        assert client.get(callback_path(str(again.headers["location"]))).status_code == 302
        claims = jwt.decode(access_token(app, client), options={"verify_signature": False})
        assert time.time() - claims["auth_time"] >= 400  # the token says so: no authentication since
        me = client.get("/api/v1/me")
        assert me.status_code == 401, me.get_json()
        assert me.get_json()["error"]["code"] == "session_expired"
        # no sign-in loop: the answer's sign-in asks AuthKit for a fresh authentication, and then the user is in
        login_url = me.get_json()["error"]["details"]["login_url"]
        assert parse_qs(urlsplit(login_url).query)["max_age"] == ["0"]
        page = http.get(start_url(client, login_url), follow_redirects=False)
        assert page.status_code == 200  # the page: the user must sign in
        assert "/idp/" in page.text
        assert client.get(callback_path(_sign_in_on_page(http, page, "admin@acme.test"))).status_code == 302
    assert client.get("/api/v1/me").status_code == 200


def test_a_sign_in_to_an_organization_with_a_lifetime_never_passes_an_older_authentication(
        app: Flask, client: FlaskClient, emulator: Any) -> None:
    """Whatever ``max_age`` the caller asks (none, or larger), AuthKit is asked for one within the lifetime."""
    sync_organizations(app)
    with httpx2.Client(timeout=10) as http:
        first = http.get(start_login(client, email="admin@acme.test"), follow_redirects=False)
        assert client.get(callback_path(str(first.headers["location"]))).status_code == 302
        assert client.patch("/api/v1/organization/policy", json={"absolute_lifetime": 300},
                            headers=csrf_headers(client)).status_code == 200
        with emulator.emulator.store.lock:
            for record in emulator.emulator.store.browser_sessions.values():
                record["auth_time"] -= 400
        for asked in ({}, {"max_age": 100000}, {"max_age": 250}):
            url = start_login(client, email="admin@acme.test", **asked)
            assert int(parse_qs(urlsplit(url).query)["max_age"][0]) == min(300, asked.get("max_age", 300))
            page = http.get(url, follow_redirects=False)
            assert page.status_code == 200, (asked, page.status_code)
            assert "/idp/" in page.text


def start_url(client: FlaskClient, login_url: str) -> str:
    """WorkOS's authorize URL for one of our ``/auth/login?…`` URLs."""
    response = client.get(login_url)
    assert response.status_code == 302, response.get_data(as_text=True)
    return str(response.headers["Location"])


def test_a_break_glass_member_re_authenticates_without_the_connection(app: Flask, client: FlaskClient) -> None:
    orgs = sync_organizations(app)
    assert login(client, "admin@acme.test").status_code == 302
    with app.app_context():
        org = db.session.get(Organization, orgs[ACME])
        assert org is not None
        membership = db.session.scalar(select(Membership).join(User, User.id == Membership.user_id).where(
            Membership.organization_id == org.id, User.email == "admin@acme.test"))
        assert membership is not None
        org.break_glass_members = [membership.id]
        org.sso_enforced = True
        db.session.commit()
        db.session.remove()
    rt = app.extensions["hatidata_auth"]
    saved = rt.introspector.clock
    rt.introspector.clock = lambda: time.time() + 3600  # the sign-in is an hour old
    try:
        refused = client.patch("/api/v1/organization/policy", json={}, headers=csrf_headers(client))
    finally:
        rt.introspector.clock = saved
    assert refused.status_code == 401, refused.get_json()
    url = refused.get_json()["error"]["details"]["reauthenticate_url"]
    authorize = client.get(url)
    assert authorize.status_code == 302
    assert "connection_id=" not in authorize.headers["Location"], authorize.headers["Location"]
