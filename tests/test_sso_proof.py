"""The proof that SSO works (safe SSO enforcement, breakit17 faults 10 and 11): an admin's *authentication* (the
token's ``auth_time``, not the session row's creation) through a connection that is active *now*, within 24 hours;
tested as a property over states and times, over every writer, and end to end through a real sign-in."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import hypothesis.strategies as st
import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from sqlalchemy import select

from hatidata_auth.extensions import db
from hatidata_auth.models import AuthSession, Organization, utcnow
from hatidata_auth.services import sso_enforcement
from tests.api_support import Tenant, headers_for, make_tenant, sso_verified

STATES = ("active", "inactive", "deleted", "validating", None)
WRITES = (("/api/v1/organization/settings", {"sso_enforced": True}),
          ("/api/v1/organization/settings", {"auth_methods": ["sso"]}),
          ("/api/v1/organization/policy", {"allowed_methods": ["sso"]}))


def _tenant(app: Flask) -> tuple[Tenant, str]:
    """One tenant per app for the property's examples, and its admin's SSO session (the proof under test)."""
    made: dict[str, tuple[Tenant, str]] = app.config.setdefault("TEST_SSO_PROOF_TENANTS", {})
    if "proof" not in made:
        tenant = make_tenant(app, "Proof Time")
        made["proof"] = (tenant, sso_verified(app, tenant))
    return made["proof"]


@settings(max_examples=80, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(state=st.sampled_from(STATES), created_minutes=st.integers(min_value=-60, max_value=48 * 60),
       authenticated_minutes=st.none() | st.integers(min_value=-60, max_value=48 * 60))
def test_a_proof_counts_only_from_its_authentication_through_an_active_connection(
        app: Flask, state: str | None, created_minutes: int, authenticated_minutes: int | None) -> None:
    tenant, proof_id = _tenant(app)
    now = utcnow()
    window = sso_enforcement.WINDOW

    def fresh(minutes: int) -> bool:
        return now - window < now - timedelta(minutes=minutes) <= now

    with app.app_context():
        org = db.session.get(Organization, tenant.id)
        assert org is not None
        org.connection_state = state
        assert list(db.session.scalars(select(AuthSession.id).where(  # the only session through the connection
            AuthSession.organization_id == tenant.id, AuthSession.auth_connection_id.is_not(None)))) == [proof_id]
        proof = db.session.get(AuthSession, proof_id)
        assert proof is not None
        proof.created_at = now - timedelta(minutes=created_minutes)
        proof.authenticated_at = (None if authenticated_minutes is None
                                  else now - timedelta(minutes=authenticated_minutes))
        db.session.flush()
        try:
            sso_enforcement.ensure_can_change(db.session, org, {"sso_enforced": True}, now=now)
            allowed = True
        except sso_enforcement.EnforcementUnverified:
            allowed = False
        db.session.rollback()
        db.session.remove()
    expected = (state == "active" and authenticated_minutes is not None and fresh(authenticated_minutes)
                and fresh(created_minutes))
    assert allowed is expected, (state, created_minutes, authenticated_minutes)


@pytest.mark.parametrize("state", ["inactive", "deleted"])
@pytest.mark.parametrize(("path", "body"), WRITES)
def test_every_writer_refuses_sso_only_through_a_connection_that_no_longer_works(
        app: Flask, state: str, path: str, body: dict[str, Any]) -> None:
    tenant = make_tenant(app, "Gone")
    sso_verified(app, tenant)  # a fresh proof, through the connection since deactivated or deleted
    with app.app_context():
        org = db.session.get(Organization, tenant.id)
        assert org is not None
        org.connection_state = state
        db.session.commit()
        db.session.remove()
    answer = app.test_client().patch(path, headers=headers_for(tenant, "admin"), json=body)
    assert answer.status_code == 409, answer.get_json()
    error = answer.get_json()["error"]
    assert error["code"] == "sso_enforcement_unverified"
    assert error["details"]["reason"] == "connection_not_active"


def test_a_sign_in_records_when_the_user_authenticated(app: Flask, emulator: Any) -> None:
    import httpx2

    from tests.auth_support import callback_path, start_login

    client = app.test_client()
    with httpx2.Client(timeout=10) as http:
        first = http.get(start_login(client, email="admin@acme.test"), follow_redirects=False)
        assert client.get(callback_path(str(first.headers["location"]))).status_code == 302
        with emulator.emulator.store.lock:
            auth_times = [int(r["auth_time"]) for r in emulator.emulator.store.browser_sessions.values()]
    with app.app_context():
        rows = list(db.session.scalars(select(AuthSession)))
        db.session.remove()
    assert len(rows) == 1
    assert rows[0].authenticated_at is not None
    assert int(rows[0].authenticated_at.timestamp()) in auth_times
    assert isinstance(rows[0].authenticated_at, datetime)
