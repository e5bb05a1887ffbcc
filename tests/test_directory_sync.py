"""Directory sync against the emulator: it plays the IdP and delivers real signed webhooks to the live app."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask, current_app
from flask.testing import FlaskClient
from sqlalchemy import select
from workos.organization_membership import RoleSingle

from hatidata_auth.causes import Actor, Cause
from hatidata_auth.idp import get_registry
from hatidata_auth.models import (
    ApiKey,
    AuditEvent,
    AuthSession,
    DirectoryUser,
    Membership,
    OrganizationAlert,
    User,
    WebhookEvent,
    utcnow,
)
from hatidata_auth.services import events_poller, mapping_admin, reconcile, role_mapping
from tests.auth_support import login
from tests.support.dsync import drain_inbox, member_roles, mirror_organizations, sign
from tests.support.servers import EmulatorControl, LiveServer, http_json
from workos_emulator.idp import role_for_groups

ACME_DIR = "directory_01HTDQ8D100000000000000001"
ACME_ADMINS = "directory_group_01HTDQ8E100000000000000001"
ACME_DEVS = "directory_group_01HTDQ8E100000000000000002"
ACME_DEV_USER = "directory_user_01HTDQ8F100000000000000002"
ACME_ADMIN_USER = "directory_user_01HTDQ8F100000000000000001"
ACME_CONN = "conn_01HTDQ8C100000000000000001"
ACME_ORG = "org_01HTDQ8A100000000000000001"


@pytest.fixture
def orgs(db_session: Any, workos_client: Any) -> dict[str, Any]:
    """The demo organizations mirrored, their directories resynced and demo mappings installed."""
    found = mirror_organizations(db_session, workos_client)
    for report in reconcile.resync_all(db_session, workos_client):
        reconcile.ensure_demo_mappings(db_session, workos_client, organization_id=report.organization_id,
                                       actor=Actor.system("test"), plugins=get_registry(current_app))
        db_session.commit()
    return found


def test_full_resync_provisions_the_demo_directory(db_session: Any, orgs: dict[str, Any]) -> None:
    roles = member_roles(db_session, orgs["acme.test"].id)
    assert roles == {"admin@acme.test": ("admin", "active"), "dev@acme.test": ("developer", "active"),
                     "viewer@acme.test": ("viewer", "active"), "consultant@partners.test": ("developer", "active")}
    globex = member_roles(db_session, orgs["globex.test"].id)
    assert globex["admin@globex.test"] == ("admin", "active")  # mapped by Entra object-id GUID
    assert globex["consultant@partners.test"] == ("developer", "active")
    # The same person is one User in two organizations.
    assert len(db_session.scalars(select(User).where(User.email == "consultant@partners.test")).all()) == 1


def test_resync_is_idempotent_and_repairs_drift(db_session: Any, workos_client: Any, orgs: dict[str, Any]) -> None:
    acme = orgs["acme.test"]
    again = reconcile.full_resync(db_session, workos_client, organization_id=acme.id)
    assert again.differences == 0, again.examples
    # Drift: someone edits a directory-managed role by hand, and a directory user vanishes locally.
    member = db_session.scalar(select(Membership).where(Membership.organization_id == acme.id,
                                                        Membership.directory_user_id == ACME_DEV_USER))
    member.role, member.role_source = "admin", "manual"
    db_session.delete(db_session.scalar(select(DirectoryUser).where(DirectoryUser.workos_id == ACME_ADMIN_USER)))
    db_session.commit()
    report = reconcile.full_resync(db_session, workos_client, organization_id=acme.id)
    assert report.access_repaired == 1
    assert report.users_created == 1
    assert member_roles(db_session, acme.id)["dev@acme.test"] == ("developer", "active")
    assert reconcile.full_resync(db_session, workos_client, organization_id=acme.id).differences == 0


def _live_session(db_session: Any, org_id: str, email: str, sid: str) -> tuple[str, str]:
    user = db_session.scalar(select(User).where(User.email == email))
    db_session.add(AuthSession(organization_id=org_id, workos_session_id=sid, user_id=user.id,
                               expires_at=utcnow() + timedelta(hours=1)))
    key = ApiKey(organization_id=org_id, name="agent", owner_user_id=user.id, prefix=f"hd_{sid[-8:]}",
                 key_hash=f"hash-{sid}", scopes=["data:read"])
    db_session.add(key)
    db_session.commit()
    return user.id, key.id


def test_deprovision_and_reactivate_by_webhook(db_session: Any, orgs: dict[str, Any],
                                               webhooks: EmulatorControl) -> None:
    acme = orgs["acme.test"]
    _user_id, key_id = _live_session(db_session, acme.id, "dev@acme.test", "session_TESTDEPROV01")
    webhooks.ctl("POST", f"/directory_users/{ACME_DEV_USER}/deactivate")
    webhooks.flush()
    db_session.expire_all()
    assert member_roles(db_session, acme.id)["dev@acme.test"][1] == "deprovisioned"
    session_row = db_session.scalar(select(AuthSession).where(AuthSession.workos_session_id == "session_TESTDEPROV01"))
    assert session_row.revoked_at is not None
    assert db_session.get(ApiKey, key_id).status == "suspended"
    deprov = db_session.scalar(select(AuditEvent).where(AuditEvent.action == "membership.deprovisioned",
                                                        AuditEvent.organization_id == acme.id))
    assert deprov.source_event_id
    assert deprov.source_event_id.startswith("event_")
    db_session.rollback()
    webhooks.ctl("POST", f"/directory_users/{ACME_DEV_USER}/reactivate")
    webhooks.flush()
    assert member_roles(db_session, acme.id)["dev@acme.test"] == ("developer", "active")
    db_session.expire_all()
    assert db_session.get(ApiKey, key_id).status == "suspended"  # an admin must reinstate it


@pytest.mark.parametrize("how", ["suspend", "delete"])
def test_suspension_and_deletion_deprovision(how: str, db_session: Any, orgs: dict[str, Any],
                                             webhooks: EmulatorControl) -> None:
    acme = orgs["acme.test"]
    if how == "suspend":
        webhooks.ctl("POST", f"/directory_users/{ACME_ADMIN_USER}/suspend")
    else:
        webhooks.ctl("DELETE", f"/directory_users/{ACME_ADMIN_USER}")
    webhooks.flush()
    assert member_roles(db_session, acme.id)["admin@acme.test"][1] == "deprovisioned"
    if how == "delete":
        du = db_session.scalar(select(DirectoryUser).where(DirectoryUser.workos_id == ACME_ADMIN_USER))
        assert du.deleted_at is not None


def test_group_changes_and_renames_recompute_roles(db_session: Any, orgs: dict[str, Any],
                                                   webhooks: EmulatorControl) -> None:
    acme = orgs["acme.test"]
    webhooks.ctl("POST", f"/directory_groups/{ACME_ADMINS}/members/{ACME_DEV_USER}")
    webhooks.flush()
    assert member_roles(db_session, acme.id)["dev@acme.test"] == ("admin", "active")  # highest of two groups
    webhooks.ctl("PATCH", f"/directory_groups/{ACME_ADMINS}", {"name": "Former Admins"})
    webhooks.flush()
    roles = member_roles(db_session, acme.id)
    assert roles["dev@acme.test"] == ("developer", "active")
    assert roles["admin@acme.test"] == ("viewer", "active")  # default role: no mapped group any more
    webhooks.ctl("DELETE", f"/directory_groups/{ACME_DEVS}")
    webhooks.flush()
    assert member_roles(db_session, acme.id)["dev@acme.test"] == ("viewer", "active")


def test_new_users_and_groups_from_the_idp(db_session: Any, orgs: dict[str, Any],
                                           webhooks: EmulatorControl) -> None:
    acme = orgs["acme.test"]
    webhooks.ctl("POST", f"/directories/{ACME_DIR}/groups", {"name": "Platform"})
    created = webhooks.ctl("POST", f"/directories/{ACME_DIR}/users",
                           {"email": "New.Hire@Acme.test", "first_name": "New", "last_name": "Hire",
                            "groups": ["HatiData Developers", "Platform"]})
    webhooks.flush()
    assert member_roles(db_session, acme.id)["new.hire@acme.test"] == ("developer", "active")
    webhooks.ctl("PATCH", f"/directory_users/{created['id']}", {"groups": ["Platform"]})
    webhooks.flush()
    assert member_roles(db_session, acme.id)["new.hire@acme.test"] == ("viewer", "active")


def test_directory_deletion_deactivates_everything(db_session: Any, orgs: dict[str, Any],
                                                   webhooks: EmulatorControl) -> None:
    acme = orgs["acme.test"]
    webhooks.ctl("DELETE", f"/directories/{ACME_DIR}")
    webhooks.flush()
    roles = member_roles(db_session, acme.id)
    assert {status for _, status in roles.values()} == {"deprovisioned"}
    db_session.expire_all()
    assert db_session.get(type(acme), acme.id).directory_state == "deleted"
    # Other organizations are untouched.
    assert member_roles(db_session, orgs["globex.test"].id)["consultant@partners.test"] == ("developer", "active")


def test_no_access_default(db_session: Any, workos_client: Any, orgs: dict[str, Any]) -> None:
    acme = orgs["acme.test"]
    result = mapping_admin.set_default_role(db_session, workos_client, organization_id=acme.id, default_role=None,
                                            cause=Cause.by(Actor.system("test")))
    db_session.commit()
    assert result.changes == []  # everyone is in a mapped group
    specs = [s for s in role_mapping.list_mappings(db_session, acme.id) if s.role != "viewer"]
    role_mapping.replace_mappings(db_session, workos_client, organization_id=acme.id, specs=specs,
                                  cause=Cause.by(Actor.system("test")))
    db_session.commit()
    assert member_roles(db_session, acme.id)["viewer@acme.test"] == ("viewer", "inactive")


def test_preview_explain_and_bulk_recompute(db_session: Any, workos_client: Any, orgs: dict[str, Any]) -> None:
    acme = orgs["acme.test"]
    proposal = role_mapping.preset("name", {"admin": "HatiData Developers", "viewer": "HatiData Admins"})
    before = member_roles(db_session, acme.id)
    changes = role_mapping.preview(db_session, organization_id=acme.id, specs=proposal)
    assert {(c.email, c.from_role, c.to_role) for c in changes} == {
        ("admin@acme.test", "admin", "viewer"), ("dev@acme.test", "developer", "admin"),
        ("consultant@partners.test", "developer", "admin")}
    assert member_roles(db_session, acme.id) == before  # a dry run writes nothing
    dev = db_session.scalar(select(User).where(User.email == "dev@acme.test"))
    why = role_mapping.explain(db_session, organization_id=acme.id, user_id=dev.id)
    assert why.role == "developer"
    assert why.decision is not None
    assert why.decision.group is not None
    assert why.decision.group.name == "HatiData Developers"
    assert why.decision.mapping is not None
    assert why.decision.mapping.role == "developer"
    result = role_mapping.replace_mappings(db_session, workos_client, organization_id=acme.id, specs=proposal,
                                           cause=Cause.by(Actor.system("test")))
    db_session.commit()
    assert len(result.changes) == 3
    assert member_roles(db_session, acme.id)["dev@acme.test"] == ("admin", "active")


def test_manual_role_on_directory_member_is_overwritten(db_session: Any, orgs: dict[str, Any],
                                                        webhooks: EmulatorControl) -> None:
    acme = orgs["acme.test"]
    member = db_session.scalar(select(Membership).where(Membership.organization_id == acme.id,
                                                        Membership.directory_user_id == ACME_DEV_USER))
    member.role, member.role_source = "admin", "manual"
    db_session.commit()
    webhooks.ctl("POST", f"/directory_groups/directory_group_01HTDQ8E100000000000000003/members/{ACME_DEV_USER}")
    webhooks.flush()
    assert member_roles(db_session, acme.id)["dev@acme.test"] == ("developer", "active")


def test_sso_login_groups(app: Flask, client: FlaskClient, db_session: Any, workos_client: Any,
                          orgs: dict[str, Any]) -> None:
    # The IdP's groups reach a login as WorkOS's role assignment (the access token's ``role`` claim); the login
    # stores that role through provisioning.set_access, which audits the change.
    initech = orgs["initech.test"]
    user = User(email="sso.only@initech.test")
    db_session.add(user)
    db_session.flush()
    db_session.add(Membership(organization_id=initech.id, user_id=user.id, role="viewer", source="sso"))
    user_id = user.id
    db_session.commit()
    workos_user = workos_client.user_management.create_user(email="sso.only@initech.test")
    workos_client.organization_membership.create_organization_membership(
        user_id=workos_user.id, organization_id=initech.workos_organization_id,
        role=RoleSingle(role_slug=role_for_groups(["HatiData Admins", "Everyone"])))
    assert login(client, "sso.only@initech.test", organization_id=initech.workos_organization_id).status_code == 302
    decision = client.get("/api/v1/me").get_json()
    assert decision["role"] == "admin"
    assert member_roles(db_session, initech.id)["sso.only@initech.test"] == ("admin", "active")
    changed = db_session.scalars(select(AuditEvent).where(AuditEvent.organization_id == initech.id,
                                                          AuditEvent.target_type == "membership")).all()
    assert [(e.action, e.details["reason"], e.details["to"], e.details["role_source"]) for e in changed
            if e.details.get("user_id") == user_id] == [("membership.role_changed", "login", "admin", "idp")]


def test_connection_certificate_and_organization_events(db_session: Any, orgs: dict[str, Any],
                                                        webhooks: EmulatorControl) -> None:
    acme = orgs["acme.test"]
    webhooks.ctl("POST", f"/connections/{ACME_CONN}/deactivate")
    webhooks.ctl("POST", f"/connections/{ACME_CONN}/certificate", {"kind": "renewal_required",
                                                                  "days_until_expiry": 14})
    webhooks.flush()
    db_session.expire_all()
    org = db_session.get(type(acme), acme.id)
    assert org.connection_state == "inactive"
    alerts = db_session.scalars(select(OrganizationAlert).where(OrganizationAlert.organization_id == acme.id)
                                .order_by(OrganizationAlert.kind)).all()
    assert [(a.kind, a.resolved_at) for a in alerts] == [("connection_inactive", None),
                                                         ("saml_certificate_renewal", None)]
    assert "14 days" in alerts[1].message
    db_session.rollback()
    webhooks.ctl("POST", f"/connections/{ACME_CONN}/certificate", {"kind": "renewed"})
    webhooks.ctl("POST", f"/connections/{ACME_CONN}/activate")
    webhooks.ctl("PATCH", f"/organizations/{ACME_ORG}", {"name": "Acme Corporation"})
    webhooks.flush()
    db_session.expire_all()
    org = db_session.get(type(acme), acme.id)
    assert org.connection_state == "active"
    assert org.name == "Acme Corporation"
    alerts = db_session.scalars(select(OrganizationAlert).where(OrganizationAlert.organization_id == acme.id)).all()
    assert len(alerts) == 2
    assert all(a.resolved_at is not None for a in alerts)
    db_session.rollback()
    webhooks.ctl("DELETE", f"/connections/{ACME_CONN}")
    webhooks.flush()
    db_session.expire_all()
    assert db_session.get(type(acme), acme.id).connection_state == "deleted"


def _signed_post(live: LiveServer, app: Flask, payload: dict[str, Any]) -> tuple[int, Any]:
    body = json.dumps(payload, separators=(",", ":"))
    answer = http_json("POST", f"{live.url}/webhooks/workos", raw=body.encode(),
                       headers={"WorkOS-Signature": sign(app.config["WORKOS_WEBHOOK_SECRET"], body)})
    drain_inbox(app)  # what the applier threads do in a deployment
    return answer


def test_organization_deleted_membership_session_and_authentication_events(
        db_session: Any, orgs: dict[str, Any], live_app: LiveServer, app: Flask) -> None:
    umbrella = orgs["umbrella.test"]
    _user_id, key_id = _live_session(db_session, umbrella.id, "viewer@umbrella.test", "session_TESTREVOKED1")
    status, body = _signed_post(live_app, app, {
        "id": "event_SR1", "event": "session.revoked", "created_at": "2030-01-01T00:00:00.000Z",
        "data": {"object": "session", "id": "session_TESTREVOKED1", "user_id": "user_x",
                 "organization_id": umbrella.workos_organization_id, "status": "revoked", "auth_method": "sso",
                 "ip_address": None, "user_agent": None, "expires_at": "2030-01-02T00:00:00.000Z",
                 "ended_at": None, "created_at": "2030-01-01T00:00:00.000Z",
                 "updated_at": "2030-01-01T00:00:00.000Z"}})
    assert status == 200, body
    db_session.expire_all()
    assert db_session.scalar(select(AuthSession).where(
        AuthSession.workos_session_id == "session_TESTREVOKED1")).revoked_at is not None
    status, body = _signed_post(live_app, app, {
        "id": "event_AU1", "event": "authentication.sso_failed", "created_at": "2030-01-01T00:00:00.000Z",
        "data": {"type": "sso", "status": "failed", "email": "viewer@umbrella.test", "user_id": None,
                 "ip_address": "203.0.113.9", "user_agent": "Mozilla/5.0",
                 "sso": {"organization_id": umbrella.workos_organization_id, "connection_id": "conn_x",
                         "session_id": None},
                 "error": {"code": "invalid_saml_response", "message": "bad"}}})
    assert status == 200, body
    event = db_session.scalar(select(AuditEvent).where(AuditEvent.source_event_id == "event_AU1"))
    assert event.organization_id == umbrella.id
    assert event.action == "authentication.sso_failed"
    assert event.outcome == "failure"
    assert event.details["ip_address"] == "203.0.113.9"
    db_session.rollback()
    status, body = _signed_post(live_app, app, {
        "id": "event_OD1", "event": "organization.deleted", "created_at": "2030-01-01T00:00:00.000Z",
        "data": {"object": "organization", "id": umbrella.workos_organization_id, "name": "Umbrella",
                 "domains": [], "allow_profiles_outside_organization": False, "metadata": {},
                 "external_id": None, "created_at": "2024-01-01T00:00:00.000Z",
                 "updated_at": "2030-01-01T00:00:00.000Z"}})
    assert status == 200, body
    assert {s for _, s in member_roles(db_session, umbrella.id).values()} == {"deprovisioned"}
    assert db_session.get(ApiKey, key_id).status == "suspended"


def test_events_api_poller_is_idempotent_with_webhooks(db_session: Any, workos_client: Any, orgs: dict[str, Any],
                                                       emulator_control: EmulatorControl, live_app: LiveServer,
                                                       app: Flask) -> None:
    acme = orgs["acme.test"]
    emulator_control.ctl("POST", f"/directory_users/{ACME_DEV_USER}/deactivate")
    emulator_control.ctl("POST", f"/directory_groups/{ACME_ADMINS}/members/{ACME_DEV_USER}")
    first = events_poller.poll_events(db_session, workos_client, page_size=2)
    assert first.processed >= 2
    assert first.failed == 0
    assert member_roles(db_session, acme.id)["dev@acme.test"][1] == "deprovisioned"
    assert events_poller.get_cursor(db_session) == first.cursor
    assert events_poller.poll_events(db_session, workos_client).processed == 0
    # The same events arriving by webhook afterwards are duplicates.
    emulator_control.register_webhook(f"{live_app.url}/webhooks/workos", app.config["WORKOS_WEBHOOK_SECRET"])
    emulator_control.ctl("POST", f"/directory_users/{ACME_DEV_USER}/reactivate")
    emulator_control.flush()
    drain_inbox(app)
    assert member_roles(db_session, acme.id)["dev@acme.test"] == ("admin", "active")
    again = events_poller.poll_events(db_session, workos_client)
    assert again.duplicates >= 1
    assert again.applied == 0


@pytest.mark.postgres
def test_concurrent_duplicates_apply_exactly_once(db_session: Any, orgs: dict[str, Any], live_app: LiveServer,
                                                  app: Flask) -> None:
    payloads = []
    for n in range(5):
        payloads.append({
            "id": f"event_CONC{n}", "event": "dsync.user.created", "created_at": "2030-01-01T00:00:00.000Z",
            "data": {"object": "directory_user", "id": f"directory_user_CONC{n}", "directory_id": ACME_DIR,
                     "organization_id": ACME_ORG, "idp_id": f"c{n}", "email": f"conc{n}@acme.test",
                     "first_name": "C", "last_name": str(n), "state": "active", "custom_attributes": {},
                     "created_at": "2030-01-01T00:00:00.000Z", "updated_at": "2030-01-01T00:00:00.000Z"}})
    results: list[tuple[int, Any]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        for payload in payloads:
            out = _signed_post(live_app, app, payload)
            with lock:
                results.append(out)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(status == 200 for status, _ in results), results
    statuses = [body["status"] for _, body in results]
    assert statuses.count("received") == 5
    assert statuses.count("duplicate") == 35
    for n in range(5):
        assert len(db_session.scalars(select(AuditEvent).where(
            AuditEvent.source_event_id == f"event_CONC{n}", AuditEvent.action == "directory_user.created")).all()) == 1
    assert db_session.scalar(select(WebhookEvent).where(WebhookEvent.event_id == "event_CONC0")).attempts == 1


def test_a_deprovisioned_users_session_is_rejected_on_the_next_request(
        client: Any, db_session: Any, orgs: dict[str, Any], webhooks: EmulatorControl) -> None:
    from tests.auth_support import login

    assert login(client, "dev@acme.test").status_code == 302
    me = client.get("/api/v1/me")
    assert me.status_code == 200, me.get_data(as_text=True)
    assert me.get_json()["role"] == "developer"
    webhooks.ctl("POST", f"/directory_users/{ACME_DEV_USER}/deactivate")
    webhooks.flush()
    assert client.get("/api/v1/me").status_code == 401
    db_session.expire_all()
    rows = db_session.scalars(select(AuthSession).where(AuthSession.organization_id == orgs["acme.test"].id)).all()
    assert rows
    assert all(r.revoked_at is not None for r in rows)


def test_a_directory_role_change_is_seen_at_once_by_sessions_and_keys(
        client: Any, app: Flask, db_session: Any, orgs: dict[str, Any], webhooks: EmulatorControl) -> None:
    from hatidata_auth.services import api_keys
    from tests.auth_support import login

    acme = orgs["acme.test"]
    assert login(client, "dev@acme.test").status_code == 302
    assert client.get("/api/v1/me").get_json()["role"] == "developer"  # the session's status is now cached
    user = db_session.scalar(select(User).where(User.email == "dev@acme.test"))
    created = api_keys.create_key(db_session, organization_id=acme.id, owner_user_id=user.id, name="agent",
                                  scopes=["data:read"], cause=Cause.by(Actor.system("test")))
    db_session.commit()
    key_headers = {"Authorization": f"Bearer {created.secret}"}
    assert app.test_client().get("/api/v1/me", headers=key_headers).get_json()["role"] == "developer"  # cached
    webhooks.ctl("POST", f"/directory_groups/{ACME_ADMINS}/members/{ACME_DEV_USER}")
    webhooks.flush()
    assert member_roles(db_session, acme.id)["dev@acme.test"] == ("admin", "active")
    assert client.get("/api/v1/me").get_json()["role"] == "admin"
    assert app.test_client().get("/api/v1/me", headers=key_headers).get_json()["role"] == "admin"


def test_an_older_connection_event_does_not_overwrite_newer_state(client: Any, app: Flask, db_session: Any,
                                                                  orgs: dict[str, Any]) -> None:
    from tests.support.dsync import deliver

    acme = orgs["acme.test"]

    def connection_event(event_id: str, kind: str, state: str, updated_at: str) -> dict[str, Any]:
        return {"id": event_id, "event": f"connection.{kind}", "created_at": updated_at,
                "data": {"object": "connection", "id": ACME_CONN, "organization_id": ACME_ORG, "state": state,
                         "name": "Acme SSO", "connection_type": "OktaSAML", "external_key": "acme-sso",
                         "status": "linked" if state == "active" else "unlinked", "domains": [],
                         "created_at": "2030-01-01T00:00:00.000Z", "updated_at": updated_at}}

    def state() -> str | None:
        db_session.expire_all()
        value = db_session.get(type(acme), acme.id).connection_state
        db_session.rollback()
        return value

    newer = connection_event("event_CONNV2", "deactivated", "inactive", "2030-01-02T00:00:00.000Z")
    older = connection_event("event_CONNV1", "activated", "active", "2030-01-01T12:00:00.000Z")
    assert deliver(client, app, newer) == "applied"
    assert state() == "inactive"
    assert deliver(client, app, older) == "applied"  # acknowledged, but stale
    assert state() == "inactive"
    again = connection_event("event_CONNV3", "activated", "active", "2030-01-03T00:00:00.000Z")
    assert deliver(client, app, again) == "applied"
    assert state() == "active"
    actions = db_session.scalars(select(AuditEvent.action).where(AuditEvent.organization_id == acme.id,
                                                                 AuditEvent.target_type == "connection")).all()
    assert actions.count("connection.activated") == 1  # the stale event changed (and audited) nothing


def test_a_repeated_resync_writes_nothing(db_session: Any, workos_client: Any, orgs: dict[str, Any]) -> None:
    from sqlalchemy import func

    acme = orgs["acme.test"]

    def counts() -> tuple[int, int, int]:
        out = (db_session.scalar(select(func.count()).select_from(User)),
               db_session.scalar(select(func.count()).select_from(Membership)),
               db_session.scalar(select(func.count()).select_from(AuditEvent).where(
                   AuditEvent.organization_id == acme.id, AuditEvent.action != "directory.resynced")))
        db_session.rollback()
        return out

    before = counts()
    assert reconcile.full_resync(db_session, workos_client, organization_id=acme.id, page_size=2).differences == 0
    assert counts() == before


def test_a_resync_reads_every_page_of_groups(db_session: Any, workos_client: Any, orgs: dict[str, Any]) -> None:
    acme = orgs["acme.test"]
    report = reconcile.full_resync(db_session, workos_client, organization_id=acme.id, page_size=1)
    assert report.groups_seen == 3  # HatiData Admins, Developers and Viewers, one WorkOS page each
    assert report.groups_deleted == 0
    assert report.differences == 0


def test_demo_mappings_key_groups_by_what_the_plugin_says_sso_groups_carry(app: Flask,
                                                                          orgs: dict[str, Any]) -> None:
    from hatidata_auth.services.demo_mappings import group_identifier_kind

    plugins = get_registry(app)
    assert group_identifier_kind(plugins, "azure scim v2.0") == "object_id"  # the Entra plugin declares it
    assert group_identifier_kind(plugins, "okta scim v2.0") == "name"
    assert group_identifier_kind(plugins, None) == "name"
    assert group_identifier_kind((), "azure scim v2.0") == "name"  # no plugin serves it: names
    with app.app_context():
        from hatidata_auth.extensions import db

        kinds = {m.identifier_kind for m in role_mapping.list_mappings(db.session, orgs["globex.test"].id)}
        assert kinds == {"object_id"}
