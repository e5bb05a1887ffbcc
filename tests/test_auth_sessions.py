"""Introspection, bad credentials, refresh, revocation, logout and organization switch."""

from __future__ import annotations

import time
from typing import Any

import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from workos.session import seal_data, unseal_data

from hatidata_auth.causes import Actor, Cause
from hatidata_auth.extensions import db
from hatidata_auth.models import AuditEvent, AuthSession, Membership, Organization
from hatidata_auth.services import sessions as session_service
from hatidata_auth.services import tenant_admin
from hatidata_auth.services.credentials import Unauthenticated
from hatidata_auth.services.token_verifier import JwksCache
from tests.auth_support import (
    ACME,
    GLOBEX,
    access_token,
    add_fault,
    cookie_value,
    csrf_headers,
    forge_token,
    login,
    sync_organizations,
    workos_membership,
)

EMULATOR_AUTH = {"Authorization": "Bearer sk_test_emulator"}


@pytest.fixture
def orgs(app: Flask) -> dict[str, str]:
    return sync_organizations(app)


@pytest.fixture
def signed_in(app: Flask, client: FlaskClient, orgs: dict[str, str]) -> FlaskClient:
    assert login(client, "admin@acme.test").status_code == 302
    return client


def _cleared(response: Any) -> bool:
    return any(h.startswith("hatidata_session=;") for h in response.headers.getlist("Set-Cookie"))


def _claims(app: Flask, client: FlaskClient) -> dict[str, Any]:
    return jwt.decode(access_token(app, client), options={"verify_signature": False})


def _with_expired_access_token(app: Flask, client: FlaskClient, emulator: Any) -> None:
    """Replace the cookie's access token by an expired one of the same session (the refresh token stays)."""
    data = unseal_data(cookie_value(client) or "", app.config["HATIDATA_COOKIE_KEY"])
    claims = jwt.decode(data["access_token"], options={"verify_signature": False})
    now = int(time.time())
    data["access_token"] = forge_token(emulator, **{**claims, "iat": now - 600, "exp": now - 300})
    client.set_cookie("hatidata_session", seal_data(data, app.config["HATIDATA_COOKIE_KEY"]))


# --- bearer JWTs and cookies --------------------------------------------------------------------------------


def test_bearer_jwt_resolves_to_the_same_identity(app: Flask, signed_in: FlaskClient) -> None:
    token = access_token(app, signed_in)
    other = app.test_client()
    body = other.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).get_json()
    assert body == signed_in.get("/api/v1/me").get_json()
    assert body["role"] == "admin"
    assert "sso:manage" in body["permissions"]


def test_tampered_cookie_is_401_and_cleared(client: FlaskClient) -> None:
    client.set_cookie("hatidata_session", "gAAAAAB-not-a-real-fernet-token")
    response = client.get("/api/v1/me")
    assert response.status_code == 401
    assert _cleared(response)


def test_cookie_sealed_with_a_foreign_key_is_401(app: Flask, signed_in: FlaskClient) -> None:
    from cryptography.fernet import Fernet

    data = unseal_data(cookie_value(signed_in) or "", app.config["HATIDATA_COOKIE_KEY"])
    signed_in.set_cookie("hatidata_session", seal_data(data, Fernet.generate_key().decode()))
    response = signed_in.get("/api/v1/me")
    assert response.status_code == 401
    assert _cleared(response)


def _public_pem(emulator: Any) -> bytes:
    return emulator.emulator.keys.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.mark.parametrize("case", ["expired", "none", "hs256_public_key", "unknown_kid", "foreign_audience",
                                  "foreign_issuer", "foreign_client_id", "garbage", "no_sid"])
def test_bad_bearer_tokens_are_401(app: Flask, client: FlaskClient, emulator: Any, signed_in: FlaskClient,
                                   case: str) -> None:
    claims = _claims(app, signed_in)
    now = int(time.time())
    kid = emulator.emulator.keys.kid
    if case == "expired":
        token = forge_token(emulator, **{**claims, "iat": now - 600, "exp": now - 300})
    elif case == "none":
        token = jwt.encode(claims, None, algorithm="none", headers={"kid": kid})
    elif case == "hs256_public_key":
        header = jwt.utils.base64url_encode(
            b'{"alg":"HS256","typ":"JWT","kid":"' + kid.encode() + b'"}').decode()
        import hashlib
        import hmac
        import json

        payload = jwt.utils.base64url_encode(json.dumps(claims).encode()).decode()
        signature = hmac.new(_public_pem(emulator), f"{header}.{payload}".encode(), hashlib.sha256).digest()
        token = f"{header}.{payload}.{jwt.utils.base64url_encode(signature).decode()}"
    elif case == "unknown_kid":
        from cryptography.hazmat.primitives.asymmetric import rsa

        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        token = jwt.encode(claims, other, algorithm="RS256", headers={"kid": "key_unknown"})
    elif case == "foreign_audience":
        token = forge_token(emulator, **{**claims, "aud": "client_someone_else"})
    elif case == "foreign_issuer":
        token = forge_token(emulator, **{**claims, "iss": "https://api.workos.com/user_management/client_other"})
    elif case == "foreign_client_id":
        token = forge_token(emulator, **{**claims, "client_id": "client_other"})
    elif case == "no_sid":
        token = forge_token(emulator, **{**claims, "sid": None})
    else:
        token = "not.a.jwt"
    response = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401, response.get_json()
    assert response.get_json()["error"]["code"] == "unauthenticated"


def test_expired_token_in_cookie_is_refreshed_and_rotated(app: Flask, signed_in: FlaskClient,
                                                          emulator: Any) -> None:
    old = unseal_data(cookie_value(signed_in) or "", app.config["HATIDATA_COOKIE_KEY"])
    _with_expired_access_token(app, signed_in, emulator)
    response = signed_in.get("/api/v1/me")
    assert response.status_code == 200, response.get_json()
    new = unseal_data(cookie_value(signed_in) or "", app.config["HATIDATA_COOKIE_KEY"])
    assert new["refresh_token"] != old["refresh_token"]
    assert "HttpOnly" in response.headers["Set-Cookie"]
    with app.app_context():
        assert db.session.scalar(select(AuditEvent).where(AuditEvent.action == "session.refreshed")) is not None


def test_refresh_during_workos_outage_is_503_and_keeps_the_session(app: Flask, signed_in: FlaskClient,
                                                                    emulator: Any) -> None:
    _with_expired_access_token(app, signed_in, emulator)
    add_fault(emulator, "POST", "/user_management/authenticate", 502, count=1)
    response = signed_in.get("/api/v1/me")
    assert response.status_code == 503
    assert not _cleared(response)
    assert signed_in.get("/api/v1/me").status_code == 200  # retried: the session survived


def test_refresh_rejected_by_workos_is_terminal(app: Flask, signed_in: FlaskClient, emulator: Any) -> None:
    sid = _claims(app, signed_in)["sid"]
    httpx2.post(f"{emulator.url}/_emulator/sessions/{sid}/revoke", headers=EMULATOR_AUTH, timeout=10)
    _with_expired_access_token(app, signed_in, emulator)
    response = signed_in.get("/api/v1/me")
    assert response.status_code == 401
    assert _cleared(response)
    with app.app_context():
        record = db.session.scalar(select(AuthSession).where(AuthSession.workos_session_id == sid))
        assert record is not None
        assert record.revoked_at is not None
        assert record.revoked_by == "workos"


def test_jwks_unreachable_is_503(app_config: dict[str, Any], emulator: Any, monkeypatch: pytest.MonkeyPatch,
                                 tmp_path: Any) -> None:
    from hatidata_auth import create_app

    monkeypatch.setenv("HATIDATA_INSTANCE_PATH", str(tmp_path / "other"))
    fresh = create_app(app_config)  # a new process-like app: cold key set
    token = forge_token(emulator)
    add_fault(emulator, "GET", "/sso/jwks/*", 503)
    response = fresh.test_client().get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 503
    assert "JWKS" in response.get_json()["error"]["message"]
    with fresh.app_context():
        db.session.remove()
    fresh.extensions["hatidata_workos"].close()


def test_unknown_kid_refetches_once() -> None:
    calls: list[int] = []
    documents = [{"keys": []}, {"keys": []}]

    def fetch() -> dict[str, Any]:
        calls.append(1)
        return documents[min(len(calls) - 1, 1)]

    cache = JwksCache(fetch, refetch_cooldown=60)
    with pytest.raises(Unauthenticated):
        cache.get("kid_a")
    with pytest.raises(Unauthenticated):
        cache.get("kid_b")  # within the cooldown: no second fetch
    assert len(calls) == 1


# --- sliding expiry ---------------------------------------------------------------------------------------------


def test_last_seen_is_not_written_on_every_request(app: Flask, signed_in: FlaskClient) -> None:
    with app.app_context():
        before = db.session.scalar(select(AuthSession.last_seen_at))
    for _ in range(5):
        assert signed_in.get("/api/v1/me").status_code == 200
    with app.app_context():
        assert db.session.scalar(select(AuthSession.last_seen_at)) == before


def test_expired_session_is_rejected(app: Flask, signed_in: FlaskClient) -> None:
    from datetime import timedelta

    from hatidata_auth.models import utcnow

    with app.app_context():
        record = db.session.scalar(select(AuthSession))
        assert record is not None
        record.expires_at = utcnow() - timedelta(seconds=1)
        sid = record.workos_session_id
        db.session.commit()
    app.extensions["hatidata_auth"].introspector.invalidate_session(sid)
    assert signed_in.get("/api/v1/me").status_code == 401


# --- revocation -----------------------------------------------------------------------------------------------


def _workos_status(app: Flask, user_workos_id: str, sid: str) -> str:
    client = app.extensions["hatidata_workos"].client
    for item in client.user_management.list_sessions(user_workos_id).data:
        if item.id == sid:
            return str(getattr(item.status, "value", item.status))
    raise AssertionError("session not at WorkOS")


def test_revoke_one_session_through_the_api(app: Flask, signed_in: FlaskClient) -> None:
    claims = _claims(app, signed_in)
    victim = app.test_client()
    assert login(victim, "dev@acme.test").status_code == 302
    victim_sid = _claims(app, victim)["sid"]
    with app.app_context():
        record = db.session.scalar(select(AuthSession).where(AuthSession.workos_session_id == victim_sid))
        assert record is not None
        victim_id = record.id
    assert victim.get("/api/v1/me").status_code == 200
    response = signed_in.post(f"/api/v1/sessions/{victim_id}/revoke", json={"reason": "lost laptop"},
                              headers=csrf_headers(signed_in))
    assert response.status_code == 200
    assert response.get_json()["revoked"] is True
    denied = victim.get("/api/v1/me")
    assert denied.status_code == 401
    assert _cleared(denied)
    with app.app_context():
        record = db.session.get(AuthSession, victim_id)
        assert record is not None
        assert record.revoked_reason == "lost laptop"
        assert record.revoked_by == "admin@acme.test"
        event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "session.revoked"))
        assert event is not None
        assert event.actor_id is not None
        assert event.details["workos"] == "revoked"
        user_workos_id = db.session.scalar(select(AuthSession).where(AuthSession.id == victim_id)).user_id
        from hatidata_auth.models import User

        workos_user = db.session.get(User, user_workos_id)
        assert workos_user is not None
        assert _workos_status(app, str(workos_user.workos_user_id), victim_sid) == "revoked"
    assert claims["sid"] != victim_sid


def test_cookie_post_without_csrf_token_is_refused(signed_in: FlaskClient) -> None:
    response = signed_in.post("/api/v1/organization/sessions/revoke", json={})
    assert response.status_code == 400


def test_viewer_cannot_revoke_others(app: Flask, signed_in: FlaskClient) -> None:
    viewer = app.test_client()
    assert login(viewer, "viewer@acme.test").status_code == 302
    with app.app_context():
        admin_session = db.session.scalar(select(AuthSession).where(
            AuthSession.workos_session_id == _claims(app, signed_in)["sid"]))
        assert admin_session is not None
    response = viewer.post(f"/api/v1/sessions/{admin_session.id}/revoke", json={}, headers=csrf_headers(viewer))
    assert response.status_code == 403
    response = viewer.post("/api/v1/organization/sessions/revoke", json={}, headers=csrf_headers(viewer))
    assert response.status_code == 403


def test_revoke_all_sessions_of_a_user_and_of_an_org(app: Flask, signed_in: FlaskClient,
                                                     orgs: dict[str, str]) -> None:
    dev_a, dev_b, viewer = app.test_client(), app.test_client(), app.test_client()
    for c, email in ((dev_a, "dev@acme.test"), (dev_b, "dev@acme.test"), (viewer, "viewer@acme.test")):
        assert login(c, email).status_code == 302
    dev_user_id = dev_a.get("/api/v1/me").get_json()["user_id"]
    response = signed_in.post(f"/api/v1/users/{dev_user_id}/sessions/revoke", json={"reason": "offboarding"},
                              headers=csrf_headers(signed_in))
    assert response.get_json() == {"revoked": 2}
    assert dev_a.get("/api/v1/me").status_code == 401
    assert dev_b.get("/api/v1/me").status_code == 401
    assert viewer.get("/api/v1/me").status_code == 200
    with app.app_context():
        count = session_service.revoke_organization_sessions(
            db.session(), app.extensions["hatidata_workos"].client, organization_id=orgs[ACME],
            cause=Cause(Actor.system(), reason="incident"))
        db.session.commit()
    assert count == 2  # the viewer's and the admin's
    assert viewer.get("/api/v1/me").status_code == 401
    assert signed_in.get("/api/v1/me").status_code == 401


def test_revoke_by_workos_session_id_for_webhooks(app: Flask, signed_in: FlaskClient) -> None:
    sid = _claims(app, signed_in)["sid"]
    with app.app_context():
        assert session_service.revoke_by_workos_session_id(
            db.session(), app.extensions["hatidata_workos"].client, workos_session_id=sid,
            cause=Cause.from_event("event_1", reason="session.revoked webhook"), call_workos=False)
        db.session.commit()
        assert not session_service.revoke_by_workos_session_id(
            db.session(), None, workos_session_id="session_unknown", cause=Cause(Actor.workos(), reason="x"))
        event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "session.revoked"))
        assert event is not None
        assert event.source_event_id == "event_1"
        assert event.details["workos"] == "skipped"
    assert signed_in.get("/api/v1/me").status_code == 401


def test_revocation_survives_workos_outage(app: Flask, signed_in: FlaskClient, emulator: Any) -> None:
    add_fault(emulator, "POST", "/user_management/sessions/revoke", 503)
    me = signed_in.get("/api/v1/me").get_json()
    response = signed_in.post(f"/api/v1/sessions/{me['session_id']}/revoke", json={},
                              headers=csrf_headers(signed_in))
    assert response.status_code == 200
    assert signed_in.get("/api/v1/me").status_code == 401
    with app.app_context():
        event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "session.revoked"))
        assert event is not None
        assert event.details["workos"] == "queued"  # retried by the appliers (tests/test_workos_revocation_jobs.py)


# --- logout -------------------------------------------------------------------------------------------------


def test_logout_revokes_clears_and_redirects_to_workos(app: Flask, signed_in: FlaskClient, emulator: Any) -> None:
    sid = _claims(app, signed_in)["sid"]
    assert signed_in.post("/auth/logout").status_code == 400  # no CSRF token
    response = signed_in.post("/auth/logout", headers=csrf_headers(signed_in))
    assert response.status_code == 303
    assert response.headers["Location"].startswith(f"{emulator.url}/user_management/sessions/logout?session_id={sid}")
    assert _cleared(response)
    with app.app_context():
        record = db.session.scalar(select(AuthSession).where(AuthSession.workos_session_id == sid))
        assert record is not None
        assert record.revoked_reason == "logout"


# --- organizations and switching --------------------------------------------------------------------------------


def test_a_switch_with_a_malformed_body_is_refused_by_name(client: FlaskClient, orgs: dict[str, str]) -> None:
    """``organization_id`` missing or not a non-empty string, or a ``return_to`` that is not one, is a 422 naming
    the field (a list or a number was a 404 "Unknown organization"), and the session stays where it was."""
    assert login(client, "dev@acme.test", organization_id=ACME).status_code == 302
    bodies = [({}, "organization_id"), *(({"organization_id": bad}, "organization_id")
                                         for bad in ("", None, [orgs[GLOBEX]], 7, {"id": orgs[GLOBEX]})),
              ({"organization_id": orgs[GLOBEX], "return_to": ["/"]}, "return_to"),
              ({"organization_id": orgs[GLOBEX], "return_to": 3}, "return_to")]
    for body, field in bodies:
        response = client.post("/auth/switch-organization", json=body, headers=csrf_headers(client))
        error = (response.get_json() or {}).get("error", {})
        assert (response.status_code, error.get("code")) == (422, "validation_error"), (body, response.get_json())
        assert field in error["details"]["fields"], (body, error)
    unknown = client.post("/auth/switch-organization", json={"organization_id": "org_unknown"},
                          headers=csrf_headers(client))
    assert unknown.status_code == 404
    assert client.get("/api/v1/me").get_json()["organization_id"] == orgs[ACME]


@pytest.mark.parametrize(("email", "home"), [("dev@acme.test", ACME), ("viewer@acme.test", ACME)])
def test_organizations_and_switch(app: Flask, client: FlaskClient, orgs: dict[str, str], email: str,
                                  home: str) -> None:
    # Acme verified acme.test: its IdP is the authority for these addresses, in Globex too.
    workos_membership(app, email, GLOBEX, "viewer")
    assert login(client, email, organization_id=home).status_code == 302
    listed = client.get("/auth/organizations").get_json()["data"]
    assert {o["workos_organization_id"] for o in listed} == {ACME, GLOBEX}
    assert [o["current"] for o in listed if o["workos_organization_id"] == ACME] == [True]
    assert not any(o["sign_in_required"] for o in listed), listed
    response = client.post("/auth/switch-organization", json={"organization_id": orgs[GLOBEX]},
                           headers=csrf_headers(client))
    assert response.status_code == 200, response.get_json()
    assert client.get("/api/v1/me").get_json()["organization_id"] == orgs[GLOBEX]
    with app.app_context():
        events = db.session.scalars(select(AuditEvent).where(
            AuditEvent.action == "session.organization_switched")).all()
        assert {e.organization_id for e in events} == {orgs[ACME], orgs[GLOBEX]}
    # Acme, the authority that vouched, removes the member: the session it produced ends, in Globex too.
    user_id = client.get("/api/v1/me").get_json()["user_id"]
    with app.app_context():
        membership = db.session.scalar(select(Membership).where(Membership.organization_id == orgs[ACME],
                                                                Membership.user_id == user_id))
        assert membership is not None
        tenant_admin.remove_member(db.session, app.extensions["hatidata_workos"].client, organization_id=orgs[ACME],
                            membership_id=membership.id, cause=Cause.by(Actor.system("test")))
        db.session.commit()
        db.session.remove()
    assert client.get("/api/v1/me").status_code == 401


def test_a_member_on_an_unverified_domain_switches_by_signing_in_there(app: Flask, client: FlaskClient,
                                                                       orgs: dict[str, str]) -> None:
    # partners.test is nobody's: Acme's IdP speaks for the consultant in Acme only, Globex's in Globex only.
    email = "consultant@partners.test"
    assert login(client, email, organization_id=ACME).status_code == 302
    listed = {o["id"]: o for o in client.get("/auth/organizations").get_json()["data"]}
    assert set(listed) == {orgs[ACME], orgs[GLOBEX]}  # shown, not hidden
    assert listed[orgs[GLOBEX]]["sign_in_required"] is True
    assert listed[orgs[GLOBEX]]["sign_in_reason"] == "foreign_identity_source"
    assert listed[orgs[ACME]]["sign_in_required"] is False
    refused = client.post("/auth/switch-organization", json={"organization_id": orgs[GLOBEX]},
                          headers=csrf_headers(client))
    assert refused.status_code == 409
    error = refused.get_json()["error"]
    assert (error["code"], error["details"]["reason"]) == ("sso_required", "foreign_identity_source")
    assert client.get("/api/v1/me").get_json()["organization_id"] == orgs[ACME]
    # The answer's login_url: Globex's own sign-in, in the same browser.
    target = error["details"]["login_url"]
    assert target == f"/auth/login?organization_id={orgs[GLOBEX]}"
    assert login(client, email, organization_id=orgs[GLOBEX]).status_code == 302
    me = client.get("/api/v1/me").get_json()
    assert me["organization_id"] == orgs[GLOBEX]
    listed = {o["id"]: o for o in client.get("/auth/organizations").get_json()["data"]}
    assert listed[orgs[GLOBEX]]["current"] is True
    assert listed[orgs[ACME]]["sign_in_required"] is True


def test_switch_into_sso_enforcing_org_needs_fresh_login(app: Flask, client: FlaskClient,
                                                         orgs: dict[str, str]) -> None:
    assert login(client, "consultant@partners.test", organization_id=ACME).status_code == 302
    with app.app_context():
        org = db.session.get(Organization, orgs[GLOBEX])
        assert org is not None
        org.sso_enforced = True
        db.session.commit()
    response = client.post("/auth/switch-organization", json={"organization_id": orgs[GLOBEX]},
                           headers=csrf_headers(client))
    assert response.status_code == 409
    body = response.get_json()["error"]
    assert body["code"] == "sso_required"
    assert body["details"]["login_url"].startswith("/auth/login?organization_id=")


def test_switch_to_a_non_member_org_is_forbidden(client: FlaskClient, orgs: dict[str, str]) -> None:
    from tests.auth_support import INITECH

    assert login(client, "dev@acme.test").status_code == 302
    response = client.post("/auth/switch-organization", json={"organization_id": orgs[INITECH]},
                           headers=csrf_headers(client))
    assert response.status_code == 403


def test_membership_change_revokes_through_the_cache(app: Flask, signed_in: FlaskClient) -> None:
    """A deprovisioned member's sessions go with :func:`revoke_user_sessions` (the directory-sync entry point)."""
    me = signed_in.get("/api/v1/me").get_json()
    with app.app_context():
        membership = db.session.scalar(select(Membership).where(Membership.user_id == me["user_id"],
                                                                Membership.organization_id == me["organization_id"]))
        assert membership is not None
        membership.status = "deprovisioned"
        count = session_service.revoke_user_sessions(
            db.session(), app.extensions["hatidata_workos"].client, organization_id=me["organization_id"],
            user_id=me["user_id"], cause=Cause(Actor.workos(), source_event_id="event_x", reason="deprovisioned"))
        db.session.commit()
    assert count == 1
    assert signed_in.get("/api/v1/me").status_code == 401
