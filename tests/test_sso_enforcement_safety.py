"""Safe SSO enforcement and break-glass accounts (issue #16, item 3): enforcement needs an admin's SSO sign-in
through the organization's current connection within 24 hours (every path, injectable clock); break-glass members
sign in with a non-SSO method while SSO is enforced, audited and alerted; everyone else is refused."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx2
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from hatidata_auth.causes import Actor, Cause
from hatidata_auth.extensions import db
from hatidata_auth.models import AuditEvent, AuthSession, Membership, Organization, OrganizationAlert, SignInAttempt
from hatidata_auth.services import sso_enforcement, sso_setup
from tests.api_support import Tenant, headers_for, make_tenant, sso_verified
from tests.auth_support import callback_path, csrf_headers, login, password_login, start_login, sync_organizations
from tests.test_auth_methods import HOOLI, MEMBER, OWNER, _action, _magic_login

SETTINGS = "/api/v1/organization/settings"
BREAK_GLASS = "/api/v1/organization/break-glass"
MINUTE = timedelta(minutes=1)


def _audited(app: Flask, org_id: str, action: str) -> list[AuditEvent]:
    with app.app_context():
        rows = list(db.session.scalars(select(AuditEvent).where(AuditEvent.organization_id == org_id,
                                                                AuditEvent.action == action)))
        db.session.expunge_all()
        db.session.remove()
    return rows


def _proof_created_at(app: Flask, session_id: str) -> Any:
    with app.app_context():
        record = db.session.get(AuthSession, session_id)
        assert record is not None
        created = record.created_at
        db.session.remove()
    return created


def _can_enforce(app: Flask, tenant: Tenant, now: Any) -> str | None:
    with app.app_context():
        org = db.session.get(Organization, tenant.id)
        assert org is not None
        try:
            sso_enforcement.ensure_can_enforce(db.session, org, now=now)
        except sso_enforcement.EnforcementUnverified as refused:
            return refused.code
        finally:
            db.session.remove()
    return None


# --- the 24-hour rule -------------------------------------------------------------------------------------------


def test_the_proof_lasts_24_hours_by_the_injected_clock(app: Flask) -> None:
    tenant = make_tenant(app, "Window")
    created = _proof_created_at(app, sso_verified(app, tenant))
    assert _can_enforce(app, tenant, created + timedelta(hours=23, minutes=59)) is None
    assert _can_enforce(app, tenant, created + timedelta(hours=24, minutes=1)) == "sso_enforcement_unverified"
    assert _can_enforce(app, tenant, created - MINUTE) == "sso_enforcement_unverified"  # not yet signed in


@pytest.mark.parametrize(("change", "counts"), [
    ({}, True),
    ({"auth_method": "password"}, False),
    ({"auth_connection_id": "conn_other"}, False),  # another (e.g. the previous) connection
    ({"auth_organization_id": "org_someone_else"}, False),
    ({"user": "developer"}, False),  # not an admin
    ({"admin_status": "inactive"}, False),  # an admin no longer
])
def test_only_an_admins_sso_sign_in_through_the_current_connection_counts(app: Flask, change: dict[str, Any],
                                                                        counts: bool) -> None:
    tenant = make_tenant(app, "Proof")
    session_id = sso_verified(app, tenant)
    with app.app_context():
        record = db.session.get(AuthSession, session_id)
        assert record is not None
        for name in ("auth_method", "auth_connection_id", "auth_organization_id"):
            if name in change:
                setattr(record, name, change[name])
        if "user" in change:
            record.user_id = tenant.users[change["user"]]
        if "admin_status" in change:
            admin = db.session.get(Membership, tenant.members["admin"])
            assert admin is not None
            admin.status = change["admin_status"]
        created = record.created_at
        db.session.commit()
        db.session.remove()
    assert (_can_enforce(app, tenant, created + MINUTE) is None) is counts


def test_the_settings_api_refuses_to_enforce_unverified_sso_and_explains(app: Flask, client: FlaskClient) -> None:
    tenant = make_tenant(app, "Settings")
    refused = client.patch(SETTINGS, headers=headers_for(tenant, "admin"), json={"sso_enforced": True})
    assert refused.status_code == 409, refused.get_json()
    error = refused.get_json()["error"]
    assert error["code"] == "sso_enforcement_unverified"
    assert "Sign in once through SSO" in error["message"]
    assert error["details"]["login_url"] == f"/auth/login?organization_id={tenant.id}"
    assert not _audited(app, tenant.id, "organization.settings_updated")  # nothing changed
    sso_verified(app, tenant, age=timedelta(hours=25))  # too old
    assert client.patch(SETTINGS, headers=headers_for(tenant, "admin"), json={"sso_enforced": True}).status_code == 409
    sso_verified(app, tenant)
    enforced = client.patch(SETTINGS, headers=headers_for(tenant, "admin"), json={"sso_enforced": True})
    assert enforced.status_code == 200, enforced.get_json()
    assert enforced.get_json()["sso_enforced"] is True


def test_turning_enforcement_off_is_always_allowed(app: Flask, client: FlaskClient) -> None:
    tenant = make_tenant(app, "Off")
    with app.app_context():
        org = db.session.get(Organization, tenant.id)
        assert org is not None
        org.sso_enforced = True
        db.session.commit()
        db.session.remove()
    off = client.patch(SETTINGS, headers=headers_for(tenant, "admin"), json={"sso_enforced": False})
    assert off.status_code == 200, off.get_json()
    assert off.get_json()["sso_enforced"] is False


def test_every_path_that_enforces_sso_is_refused_the_same_way(app: Flask, client: FlaskClient,
                                                              workos_client: Any) -> None:
    """The settings API and the SSO setup's activation (the wizard) both call the one rule."""
    tenant = make_tenant(app, "Paths")
    codes = {"settings": client.patch(SETTINGS, headers=headers_for(tenant, "admin"),
                                      json={"sso_enforced": True}).get_json()["error"]["code"]}
    with app.app_context():
        org = db.session.get(Organization, tenant.id)
        assert org is not None
        try:  # refused before the plugin or WorkOS is consulted
            sso_setup.activate(db.session, workos_client, org, None, org.connection_id, True,  # type: ignore[arg-type]
                               True, Cause.by(Actor("user", tenant.users["admin"])))
        except sso_enforcement.EnforcementUnverified as refused:
            codes["sso_setup"] = refused.code
        assert org.sso_enforced is False
        db.session.rollback()
        db.session.remove()
    assert codes == {"settings": "sso_enforcement_unverified", "sso_setup": "sso_enforcement_unverified"}


def test_the_wizards_test_sign_in_by_an_admin_counts(app: Flask) -> None:
    tenant = make_tenant(app, "Wizard")
    with app.app_context():
        org = db.session.get(Organization, tenant.id)
        assert org is not None
        attempt = SignInAttempt(organization_id=org.id, kind="test", outcome="success", email="admin@wizard.test",
                                connection_id="conn_new", sources="callback", attributes={})
        db.session.add(attempt)
        db.session.commit()
        at = attempt.occurred_at
        sso_enforcement.ensure_can_enforce(db.session, org, connection_id="conn_new", now=at + MINUTE)
        with pytest.raises(sso_enforcement.EnforcementUnverified):  # another connection
            sso_enforcement.ensure_can_enforce(db.session, org, connection_id="conn_other", now=at + MINUTE)
        with pytest.raises(sso_enforcement.EnforcementUnverified):
            sso_enforcement.ensure_can_enforce(db.session, org, connection_id="conn_new",
                                               now=at + timedelta(hours=24, minutes=1))
        attempt.email = "developer@wizard.test"  # not an admin's
        db.session.commit()
        with pytest.raises(sso_enforcement.EnforcementUnverified):
            sso_enforcement.ensure_can_enforce(db.session, org, connection_id="conn_new", now=at + MINUTE)
        db.session.remove()


# --- break-glass: the list -------------------------------------------------------------------------------------


def test_break_glass_members_are_set_by_id_or_email_validated_and_audited(app: Flask, client: FlaskClient) -> None:
    tenant, other = make_tenant(app, "Glass"), make_tenant(app, "Other")
    admin = headers_for(tenant, "admin")
    assert client.get(BREAK_GLASS, headers=admin).get_json() == {"organization_id": tenant.id, "max_members": 5,
                                                                 "members": []}
    assert client.get(BREAK_GLASS, headers=headers_for(tenant, "viewer")).status_code == 403
    put = client.put(BREAK_GLASS, headers=admin, json={"members": [tenant.members["admin"], "Developer@glass.test"]})
    assert put.status_code == 200, put.get_json()
    assert [m["id"] for m in put.get_json()["members"]] == [tenant.members["admin"], tenant.members["developer"]]
    [event] = _audited(app, tenant.id, "organization.break_glass_updated")
    assert event.details["from"] == []
    assert event.details["to"] == [tenant.members["admin"], tenant.members["developer"]]
    for bad in ([other.members["admin"]], ["nobody@glass.test"], ["x"] * 6,
                [tenant.members[r] for r in ("admin", "developer", "viewer")] + [
                    tenant.ids["member"], tenant.ids["directory_member"], "admin@other.test"]):
        refused = client.put(BREAK_GLASS, headers=admin, json={"members": bad})
        assert refused.status_code == 422, bad
        assert "members" in refused.get_json()["error"]["details"]["fields"]
    with app.app_context():
        victim = db.session.get(Membership, tenant.ids["member"])
        assert victim is not None
        victim.status = "deprovisioned"
        db.session.commit()
        db.session.remove()
    assert client.put(BREAK_GLASS, headers=admin, json={"members": [tenant.ids["member"]]}).status_code == 422
    assert client.put(BREAK_GLASS, headers=admin, json={"members": []}).get_json()["members"] == []
    assert len(_audited(app, tenant.id, "organization.break_glass_updated")) == 2


# --- break-glass: signing in while SSO is enforced ----------------------------------------------------------------


def _hooli(app: Flask, **values: Any) -> str:
    orgs = sync_organizations(app)
    with app.app_context():
        org = db.session.get(Organization, orgs[HOOLI])
        assert org is not None
        for name, value in values.items():
            setattr(org, name, value)
        db.session.commit()
        db.session.remove()
    return orgs[HOOLI]


def _membership_of(app: Flask, org_id: str, email: str) -> str:
    from hatidata_auth.models import User

    with app.app_context():
        membership_id = db.session.scalar(select(Membership.id).join(User, User.id == Membership.user_id).where(
            Membership.organization_id == org_id, User.email == email))
        db.session.remove()
    assert membership_id
    return str(membership_id)


def _magic_login_as(client: FlaskClient, emulator: Any, *, email: str) -> Any:
    """A magic-code sign-in as *email* from the break-glass sign-in page (``/auth/login?break_glass=1``: the
    organization's own methods, offered to anyone; the callback decides)."""
    browser = httpx2.Client(follow_redirects=False, timeout=10)
    try:
        page = browser.get(start_login(client, email=email, organization_id=HOOLI, break_glass=1))
        assert page.status_code == 200, page.text[:300]
        assert "/magic/" in page.text, page.text[:300]
        sent = browser.post(emulator.url + _action(page.text, "/magic/"), data={"email": email})
        code = httpx2.get(f"{emulator.url}/_emulator/magic_auth", params={"email": email},
                          headers={"Authorization": "Bearer sk_test_emulator"}).json()["data"][0]["code"]
        done = browser.post(emulator.url + _action(sent.text, "/verify"), data={"email": email, "code": code})
    finally:
        browser.close()
    assert done.status_code == 302, done.text[:300]
    return client.get(callback_path(done.headers["location"]))


def _alerts(app: Flask, org_id: str) -> list[OrganizationAlert]:
    with app.app_context():
        rows = list(db.session.scalars(select(OrganizationAlert).where(OrganizationAlert.organization_id == org_id,
                                                                       OrganizationAlert.kind == "break_glass_used")))
        db.session.expunge_all()
        db.session.remove()
    return rows


@pytest.mark.usefixtures("emulator")
def test_a_break_glass_member_signs_in_without_sso_audited_and_alerted(app: Flask, client: FlaskClient,
                                                                      emulator: Any) -> None:
    org_id = _hooli(app)
    assert password_login(client, emulator.url, OWNER).status_code == 302  # the owner's membership exists now
    assert _magic_login(app.test_client(), emulator).status_code == 302
    owner = _membership_of(app, org_id, OWNER)
    _hooli(app, sso_enforced=True, auth_methods=["sso"], connection_id="conn_hooli_enforced",
           break_glass_members=[owner])
    # The email hint alone never reveals who is break-glass: every email goes to the connection.
    for hint in (OWNER, MEMBER, "nobody@hooli.test"):
        assert "connection_id=conn_hooli_enforced" in start_login(app.test_client(), email=hint)
    # A member who is not break-glass, on the break-glass sign-in page (offered to anyone), is refused at the
    # callback like any non-SSO sign-in.
    refused = _magic_login_as(app.test_client(), emulator, email=MEMBER)
    assert refused.status_code in (302, 409)
    assert [e.details["reason"] for e in _audited(app, org_id, "auth.policy_refused")] == ["sso_enforced"]
    # The break-glass owner signs in with a password: accepted, audited, alerted.
    glass = app.test_client()
    accepted = password_login(glass, emulator.url, OWNER, organization_id=HOOLI, break_glass=1)
    assert accepted.status_code == 302, accepted.get_data(as_text=True)
    assert glass.get("/api/v1/me").status_code == 200
    [used] = _audited(app, org_id, "auth.break_glass_used")
    assert used.details["auth_method"] == "password"
    assert used.details["membership_id"] == owner
    [alert] = _alerts(app, org_id)
    assert alert.resolved_at is None
    assert alert.target_id == owner
    assert OWNER in alert.message
    # Taken off the list: their non-SSO sessions end at once.
    from hatidata_auth.services import break_glass

    with app.app_context():
        org = db.session.get(Organization, org_id)
        assert org is not None
        break_glass.set_members(db.session, None, org, [], cause=Cause.by(Actor.system("test")))
        db.session.commit()
        live = list(db.session.scalars(select(AuthSession).where(AuthSession.organization_id == org_id,
                                                                 AuthSession.revoked_at.is_(None),
                                                                 AuthSession.auth_method == "password")))
        db.session.remove()
    assert live == []
    [updated] = _audited(app, org_id, "organization.break_glass_updated")
    assert updated.details["sessions_revoked"] >= 1
    assert glass.get("/api/v1/me").status_code == 401
    # Their sign-in now goes to the connection, and a magic code reaching the callback anyway is refused.
    assert "connection_id=conn_hooli_enforced" in start_login(app.test_client(), email=OWNER)
    _hooli(app, break_glass_members=[_membership_of(app, org_id, MEMBER)])
    again = _magic_login_as(app.test_client(), emulator, email=OWNER)
    assert again.status_code in (302, 409)
    assert len(_audited(app, org_id, "auth.policy_refused")) == 2
    assert len(_audited(app, org_id, "auth.break_glass_used")) == 1


def test_a_break_glass_alert_is_resolved_by_an_admin_and_others_are_not(app: Flask, client: FlaskClient) -> None:
    from hatidata_auth.services import alerts

    tenant = make_tenant(app, "Resolve")
    with app.app_context():
        raised = alerts.raise_alert(db.session, organization_id=tenant.id, kind=alerts.BREAK_GLASS_USED,
                                    target_type="membership", target_id=tenant.members["admin"], message="used",
                                    details={}, cause=Cause.by(Actor.system("test")))
        db.session.commit()
        db.session.remove()
    admin = headers_for(tenant, "admin")
    listed = client.get("/api/v1/organization/alerts", headers=admin).get_json()["data"]
    assert raised.id in [a["id"] for a in listed]
    other = make_tenant(app, "Stranger")
    assert client.post(f"/api/v1/organization/alerts/{raised.id}/resolve",
                       headers=headers_for(other, "admin")).status_code == 404
    done = client.post(f"/api/v1/organization/alerts/{raised.id}/resolve", headers=admin)
    assert done.status_code == 200, done.get_json()
    assert done.get_json()["status"] == "resolved"
    assert [e.details["kind"] for e in _audited(app, tenant.id, "organization_alert.resolved")] == ["break_glass_used"]
    certificate = client.post(f"/api/v1/organization/alerts/{tenant.ids['alert']}/resolve", headers=admin)
    assert certificate.status_code == 409
    assert certificate.get_json()["error"]["code"] == "alert_not_resolvable"



def test_the_policy_page_lists_the_break_glass_members(app: Flask, client: FlaskClient) -> None:
    sync_organizations(app)
    assert login(client, "admin@acme.test").status_code == 302
    assert "Break-glass accounts" in client.get("/admin/policy").get_data(as_text=True)
    put = client.put(BREAK_GLASS, json={"members": ["admin@acme.test"]}, headers=csrf_headers(client))
    assert put.status_code == 200, put.get_json()
    assert "<li>admin@acme.test</li>" in client.get("/admin/policy").get_data(as_text=True)
    assert client.put(BREAK_GLASS, json={"members": []}).status_code == 400  # a cookie write needs its CSRF token
