"""The login flow: /auth/login, /auth/callback, cookies, state and PKCE, /api/v1/me."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from hatidata_auth.extensions import db
from hatidata_auth.models import AuditEvent, AuthSession, Membership, Organization, User
from tests.auth_support import (
    ACME,
    GLOBEX,
    add_fault,
    authorize,
    callback_path,
    login,
    query,
    start_login,
    sync_organizations,
)


@pytest.fixture
def orgs(app: Flask) -> dict[str, str]:
    return sync_organizations(app)


def test_login_redirects_to_authkit_with_pkce_and_signed_state(client: FlaskClient, emulator: Any,
                                                             orgs: dict[str, str]) -> None:
    url = start_login(client, email="dev@acme.test", return_to="/reports?x=1")
    assert url.startswith(emulator.url + "/user_management/authorize")
    params = query(url)
    assert params["code_challenge_method"] == "S256"
    assert len(params["code_challenge"]) == 43
    assert params["organization_id"] == ACME  # home-realm discovery by domain
    assert params["login_hint"] == "dev@acme.test"
    assert params["redirect_uri"] == "http://localhost/auth/callback"
    assert "." in params["state"]  # signed


def test_full_login_sets_sealed_cookie_and_me_works(app: Flask, client: FlaskClient,
                                                    orgs: dict[str, str]) -> None:
    response = login(client, "dev@acme.test", return_to="/reports?x=1")
    assert response.status_code == 302
    assert response.headers["Location"] == "/reports?x=1"
    set_cookie = response.headers["Set-Cookie"]
    assert set_cookie.startswith("hatidata_session=")
    assert "HttpOnly" in set_cookie
    assert "SameSite=Lax" in set_cookie
    assert "Secure" not in set_cookie  # testing profile
    assert "Expires" not in set_cookie  # not remembered: a browser-session cookie
    me = client.get("/api/v1/me")
    assert me.status_code == 200, me.get_json()
    body = me.get_json()
    assert body["auth_type"] == "session"
    assert body["email"] == "dev@acme.test"
    assert body["organization_id"] == orgs[ACME]
    assert body["role"] == "developer"
    assert body["permissions"] == sorted(["keys:read", "keys:write", "data:read", "data:write", "sessions:read"])
    assert body["session_id"].startswith("ses_")
    assert body["api_key_id"] is None
    with app.app_context():
        record = db.session.scalar(select(AuthSession))
        assert record is not None
        assert not record.remembered
        assert record.ip_address == "127.0.0.1"
        assert (record.expires_at - record.created_at).total_seconds() == pytest.approx(24 * 3600, abs=5)
        user = db.session.scalar(select(User).where(User.email == "dev@acme.test"))
        assert user is not None
        assert user.workos_user_id
        membership = db.session.scalar(select(Membership).where(Membership.user_id == user.id))
        assert membership is not None
        assert membership.role == "developer"
        assert membership.source == "sso"
        actions = db.session.scalars(select(AuditEvent.action)).all()
        assert "auth.login.succeeded" in actions


def test_remembered_login_lasts_seven_days_and_org_override(app: Flask, client: FlaskClient,
                                                            orgs: dict[str, str]) -> None:
    with app.app_context():
        org = db.session.get(Organization, orgs[ACME])
        assert org is not None
        org.session_remembered_ttl = 3 * 24 * 3600
        db.session.commit()
    response = login(client, "admin@acme.test", remember="1")
    assert "Expires=" in response.headers["Set-Cookie"]
    with app.app_context():
        record = db.session.scalar(select(AuthSession))
        assert record is not None
        assert record.remembered
        assert (record.expires_at - record.created_at).total_seconds() == pytest.approx(3 * 24 * 3600, abs=5)


def test_login_without_organizations_synced_mirrors_the_org(app: Flask, client: FlaskClient) -> None:
    response = client.get("/auth/login", query_string={"organization_id": ACME})
    # an organization we do not know yet: 400, not a login into an arbitrary organization
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "unknown_organization"
    fresh = app.test_client()
    location = authorize(start_login(fresh, email="viewer@acme.test"))
    done = fresh.get(callback_path(location))
    assert done.status_code == 302
    assert fresh.get("/api/v1/me").get_json()["role"] == "viewer"


@pytest.mark.parametrize("target", ["https://elsewhere.test/x", "//elsewhere.test", "/\\elsewhere.test",
                                    "javascript:alert(1)", "relative"])
def test_return_to_must_be_a_relative_path(client: FlaskClient, orgs: dict[str, str], target: str) -> None:
    response = login(client, "dev@acme.test", return_to=target)
    assert response.status_code == 302
    assert response.headers["Location"] == "/"


def test_state_is_single_use_and_code_replay_is_rejected(client: FlaskClient, orgs: dict[str, str]) -> None:
    location = authorize(start_login(client, email="dev@acme.test"))
    assert client.get(callback_path(location)).status_code == 302
    replay = client.get(callback_path(location))
    assert replay.status_code == 400
    assert replay.get_json()["error"]["code"] == "invalid_state"


def test_replayed_code_with_fresh_state_is_rejected(client: FlaskClient, orgs: dict[str, str]) -> None:
    first = authorize(start_login(client, email="dev@acme.test"))
    assert client.get(callback_path(first)).status_code == 302
    second = authorize(start_login(client, email="dev@acme.test"))
    forged = callback_path(second).replace(f"code={query(second)['code']}", f"code={query(first)['code']}")
    response = client.get(forged)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_code"


@pytest.mark.parametrize("state", [None, "", "garbage", "eyJuIjoieCJ9.forged.sig"])
def test_missing_or_forged_state_is_rejected(client: FlaskClient, orgs: dict[str, str],
                                             state: str | None) -> None:
    location = authorize(start_login(client, email="dev@acme.test"))
    params = query(location)
    qs = {"code": params["code"]}
    if state is not None:
        qs["state"] = state
    response = client.get("/auth/callback", query_string=qs)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_state"


def test_state_from_another_browser_is_rejected(app: Flask, client: FlaskClient, orgs: dict[str, str]) -> None:
    location = authorize(start_login(client, email="dev@acme.test"))
    other = app.test_client()
    response = other.get(callback_path(location))
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_state"


def test_sso_enforced_org_goes_straight_to_its_connection(app: Flask, client: FlaskClient,
                                                          orgs: dict[str, str]) -> None:
    with app.app_context():
        org = db.session.get(Organization, orgs[GLOBEX])
        assert org is not None
        assert org.connection_id
        org.sso_enforced = True
        connection_id = org.connection_id
        db.session.commit()
    params = query(start_login(client, email="dev@globex.test"))
    assert params["connection_id"] == connection_id
    assert "organization_id" not in params


def test_unknown_domain_uses_authkit(client: FlaskClient, orgs: dict[str, str]) -> None:
    params = query(start_login(client, email="someone@nowhere.test"))
    assert params["provider"] == "authkit"


def test_inactive_membership_is_denied_and_audited(app: Flask, client: FlaskClient, orgs: dict[str, str]) -> None:
    assert login(client, "viewer@acme.test").status_code == 302
    with app.app_context():
        membership = db.session.scalar(select(Membership))
        assert membership is not None
        membership.status = "deprovisioned"
        db.session.commit()
    other = app.test_client()
    response = login(other, "viewer@acme.test")
    assert response.status_code == 403
    assert other.get_cookie("hatidata_session") is None
    with app.app_context():
        failed = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "auth.login.failed")).all()
        assert failed
        assert failed[-1].outcome == "failure"


def test_workos_down_during_code_exchange_is_503(client: FlaskClient, emulator: Any, orgs: dict[str, str]) -> None:
    location = authorize(start_login(client, email="dev@acme.test"))
    add_fault(emulator, "POST", "/user_management/authenticate", 503)
    response = client.get(callback_path(location))
    assert response.status_code == 503
    assert "WorkOS" in response.get_json()["error"]["message"]


def test_me_without_credentials_is_401_json_and_browser_redirect(client: FlaskClient) -> None:
    response = client.get("/api/v1/me")
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthenticated"
    response = client.get("/auth/organizations", headers={"Accept": "text/html"})
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/auth/login?return_to=")
