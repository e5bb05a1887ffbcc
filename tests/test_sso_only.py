"""SSO is the only way in (enforcement, or SSO the only allowed method) through connection C only after an admin's
SSO sign-in through C within 24 hours, whichever writer gets it there and whenever C changes; break-glass members
are exempt whenever SSO is the only way in; every use of the exemption is audited, a session kept alive by it
included (breakit16 faults 1, 3, 4)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import hypothesis.strategies as st
import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from sqlalchemy import func, select

from hatidata_auth.causes import Actor, Cause
from hatidata_auth.extensions import db
from hatidata_auth.models import AuditEvent, AuthSession, Organization, OrganizationAlert, utcnow
from hatidata_auth.services import auth_policy, sso_enforcement, sso_setup
from tests.api_support import Tenant, headers_for, make_tenant, sso_verified

METHODS = st.sampled_from([None, ["sso"], ["password"], ["sso", "password"]])
CONNECTIONS = ("conn_property", "conn_other")


def _only(enforced: bool, methods: list[str] | None) -> bool:
    return enforced or methods == ["sso"]


def _tenant(app: Flask, name: str) -> Tenant:
    """One tenant per app for a property's examples (its admin signed in through its connection)."""
    made: dict[str, Tenant] = app.config.setdefault("TEST_SSO_ONLY_TENANTS", {})
    if name not in made:
        made[name] = make_tenant(app, name)
        sso_verified(app, made[name])
    return made[name]


@settings(max_examples=80, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(enforced=st.booleans(), methods=METHODS, current=st.sampled_from(CONNECTIONS),
       to_enforced=st.sampled_from([None, True, False]), to_methods=st.sampled_from(["keep", None, ["sso"],
                                                                                      ["password", "sso"]]),
       to_connection=st.sampled_from([None, *CONNECTIONS, "conn_new"]))
def test_sso_becomes_the_only_way_in_through_a_connection_only_with_a_proof_through_it(
        app: Flask, enforced: bool, methods: list[str] | None, current: str, to_enforced: bool | None,
        to_methods: Any, to_connection: str | None) -> None:
    tenant = _tenant(app, "Property")  # its admin signed in through conn_property 5 minutes ago
    with app.app_context():
        org = db.session.get(Organization, tenant.id)
        assert org is not None
        org.sso_enforced, org.auth_methods, org.connection_id = enforced, methods, current
        changes: dict[str, Any] = {}
        if to_enforced is not None:
            changes["sso_enforced"] = to_enforced
        if to_methods != "keep":
            changes["auth_methods"] = to_methods
        if to_connection is not None:
            changes["connection_id"] = to_connection
        after_enforced = changes.get("sso_enforced", enforced)
        after_methods = changes.get("auth_methods", methods)
        after_connection = changes.get("connection_id", current)
        needs_proof = _only(after_enforced, after_methods) and not (
            _only(enforced, methods) and after_connection == current)
        assert sso_enforcement.sso_only(org, changes) is _only(after_enforced, after_methods)
        try:
            sso_enforcement.ensure_can_change(db.session, org, changes)
            refused = False
        except sso_enforcement.EnforcementUnverified:
            refused = True
        db.session.rollback()
        db.session.remove()
    assert refused is (needs_proof and after_connection != "conn_property")


def _activate(app: Flask, tenant: Tenant, **org_values: Any) -> int:
    with app.app_context():
        org = db.session.get(Organization, tenant.id)
        assert org is not None
        for name, value in org_values.items():
            setattr(org, name, value)
        db.session.commit()
        try:  # refused before the plugin or WorkOS is consulted
            sso_setup.activate(db.session, None, org, None, "conn_replacement", True,  # type: ignore[arg-type]
                               False, Cause.by(Actor("user", tenant.users["admin"])))
        except sso_enforcement.EnforcementUnverified:
            return 409
        finally:
            db.session.rollback()
            db.session.remove()
    return 200


WRITERS = {
    "settings": lambda app, client, tenant: client.patch(
        "/api/v1/organization/settings", headers=headers_for(tenant, "admin"),
        json={"auth_methods": ["sso"]}).status_code,
    "policy": lambda app, client, tenant: client.patch(
        "/api/v1/organization/policy", headers=headers_for(tenant, "admin"),
        json={"allowed_methods": ["sso"]}).status_code,
    "sso_setup": lambda app, client, tenant: _activate(app, tenant, auth_methods=["sso"]),
}


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_every_writer_of_sso_only_methods_needs_the_proof(app: Flask, client: FlaskClient, writer: str) -> None:
    tenant = make_tenant(app, f"Writer{writer}")
    assert WRITERS[writer](app, client, tenant) == 409
    with app.app_context():
        org = db.session.get(Organization, tenant.id)
        assert org is not None
        assert org.connection_id != "conn_replacement"  # nothing was written
        assert sso_enforcement.sso_only(org) is (writer == "sso_setup")  # SSO-only already, on the old connection
        db.session.remove()
    if writer != "sso_setup":  # a proof through the connection: allowed (activation needs one through the new one)
        sso_verified(app, tenant)
        assert WRITERS[writer](app, client, tenant) == 200


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(enforced=st.booleans(), methods=METHODS, member=st.booleans(),
       method=st.sampled_from(["password", "magicauth", "googleoauth"]))
def test_break_glass_members_are_exempt_exactly_while_sso_is_the_only_way_in(
        app: Flask, enforced: bool, methods: list[str] | None, member: bool, method: str) -> None:
    tenant = _tenant(app, "Exempt")
    with app.app_context():
        org = db.session.get(Organization, tenant.id)
        assert org is not None
        org.sso_enforced, org.auth_methods = enforced, methods
        org.break_glass_members = [tenant.members["admin"]] if member else None
        reason = auth_policy.refusal(db.session, org, auth_policy.Authentication(method), "admin@exempt.test")
        db.session.rollback()
        db.session.remove()
    if member and _only(enforced, methods):
        assert reason is None
    elif enforced:
        assert reason == "sso_enforced"
    else:
        allowed = methods is None or auth_policy.method_family(method) in methods
        assert reason == (None if allowed else "method_not_allowed")


def _uses(org_id: str) -> tuple[list[AuditEvent], int]:
    events = list(db.session.scalars(select(AuditEvent).where(
        AuditEvent.organization_id == org_id, AuditEvent.action == "auth.break_glass_used").order_by(AuditEvent.seq)))
    alerts = db.session.scalar(select(func.count()).select_from(OrganizationAlert).where(
        OrganizationAlert.organization_id == org_id, OrganizationAlert.kind == "break_glass_used"))
    return events, int(alerts or 0)


@pytest.mark.parametrize("sso_only", [{"sso_enforced": True}, {"auth_methods": ["sso"]}])
def test_each_session_kept_alive_by_the_exemption_is_audited_once(app: Flask, sso_only: dict[str, Any]) -> None:
    tenant = make_tenant(app, "Kept")
    with app.app_context():
        org = db.session.get(Organization, tenant.id)
        assert org is not None
        cause = Cause.by(Actor("user", tenant.users["admin"]))
        older = AuthSession(organization_id=org.id, workos_session_id="session_kept_before",
                            user_id=tenant.users["admin"], auth_method="password",
                            expires_at=utcnow() + timedelta(hours=1))
        db.session.add(older)
        org.break_glass_members = [tenant.members["admin"]]
        for name, value in sso_only.items():
            setattr(org, name, value)
        db.session.commit()
        for _ in range(3):  # the session from before: its first refresh through the exemption, only
            auth_policy.check_session(db.session, older, action="refresh")
            db.session.commit()
        events, alerts = _uses(org.id)
        assert [(e.details["at"], e.details["session_id"]) for e in events] == [("refresh", older.id)]
        assert alerts == 1
        # a sign-in through the exemption is audited at the sign-in (before its session row): not again at refresh
        auth_policy.check(db.session, org, auth_policy.Authentication("password"), email="admin@kept.test",
                          cause=cause, action="login")
        newer = AuthSession(organization_id=org.id, workos_session_id="session_kept_after",
                            user_id=tenant.users["admin"], auth_method="password",
                            expires_at=utcnow() + timedelta(hours=1))
        db.session.add(newer)
        db.session.commit()
        auth_policy.check_session(db.session, newer, action="refresh")
        db.session.commit()
        events, _alerts = _uses(org.id)
        assert [e.details["at"] for e in events] == ["refresh", "login"]
        db.session.remove()
