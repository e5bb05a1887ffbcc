"""Agent API keys: creation, scopes, revoke, rotate with grace, suspend, last_used_at, rate limits."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from hatidata_auth.causes import Actor, Cause
from hatidata_auth.extensions import db
from hatidata_auth.models import ApiKey, AuditEvent, utcnow
from hatidata_auth.services import api_keys as key_service
from hatidata_auth.services.credentials import token_hash
from tests.auth_support import csrf_headers, login, sync_organizations


@pytest.fixture
def dev(app: Flask, client: FlaskClient) -> FlaskClient:
    sync_organizations(app)
    assert login(client, "dev@acme.test").status_code == 302
    return client


def _create(client: FlaskClient, **body: Any) -> dict[str, Any]:
    response = client.post("/api/v1/api-keys", json={"name": "etl-agent", **body}, headers=csrf_headers(client))
    assert response.status_code == 201, response.get_json()
    assert response.headers["Cache-Control"] == "no-store"
    return dict(response.get_json())


def _me(app: Flask, secret: str) -> Any:
    return app.test_client().get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"})


def test_create_shows_secret_once_and_stores_only_a_hash(app: Flask, dev: FlaskClient) -> None:
    created = _create(dev, scopes=["data:read", "data:write"])
    secret = created["secret"]
    assert secret.startswith("hd_live_")
    assert len(secret) >= len("hd_live_") + 43
    assert created["key"]["prefix"] == secret[:16]
    with app.app_context():
        key = db.session.scalar(select(ApiKey))
        assert key is not None
        assert key.key_hash == token_hash(secret)
        assert secret not in (key.prefix, key.key_hash)
        assert db.session.scalar(select(AuditEvent).where(AuditEvent.action == "api_key.created")) is not None
    listed = dev.get("/api/v1/api-keys").get_json()["data"]
    assert [k["id"] for k in listed] == [created["key"]["id"]]
    assert "secret" not in listed[0]
    assert secret not in str(listed)


def test_api_key_identity_is_scopes_within_owner_role(app: Flask, dev: FlaskClient) -> None:
    secret = _create(dev, scopes=["data:read", "keys:read"])["secret"]
    body = _me(app, secret).get_json()
    assert body["auth_type"] == "api_key"
    assert body["email"] == "dev@acme.test"
    assert body["role"] == "developer"
    assert body["permissions"] == ["data:read", "keys:read"]
    assert body["session_id"] is None
    assert body["api_key_id"].startswith("key_")


def test_scopes_beyond_the_owner_role_are_refused(dev: FlaskClient) -> None:
    response = dev.post("/api/v1/api-keys", json={"name": "x", "scopes": ["members:write"]},
                        headers=csrf_headers(dev))
    assert response.status_code == 422
    assert response.get_json()["error"]["details"]["beyond_role"] == ["members:write"]
    response = dev.post("/api/v1/api-keys", json={"name": "x", "scopes": ["rockets:launch"]},
                        headers=csrf_headers(dev))
    assert response.status_code == 422


def test_viewer_cannot_create_keys(app: Flask, dev: FlaskClient) -> None:
    viewer = app.test_client()
    assert login(viewer, "viewer@acme.test").status_code == 302
    response = viewer.post("/api/v1/api-keys", json={"name": "x"}, headers=csrf_headers(viewer))
    assert response.status_code == 403


def test_key_permissions_shrink_with_the_owner_role(app: Flask, dev: FlaskClient) -> None:
    from hatidata_auth.models import Membership

    created = _create(dev, scopes=["data:read", "data:write"])
    with app.app_context():
        membership = db.session.scalar(select(Membership).where(Membership.role == "developer"))
        assert membership is not None
        membership.role = "viewer"
        db.session.commit()
    app.extensions["hatidata_auth"].introspector.invalidate_api_key(created["key"]["id"])
    assert _me(app, created["secret"]).get_json()["permissions"] == ["data:read"]


@pytest.mark.parametrize("case", ["unknown", "revoked", "expired", "suspended", "malformed"])
def test_bad_keys_get_the_same_401(app: Flask, dev: FlaskClient, case: str) -> None:
    created = _create(dev)
    secret, key_id = created["secret"], created["key"]["id"]
    if case == "unknown":
        secret = secret[:-4] + ("AAAA" if not secret.endswith("AAAA") else "BBBB")
    elif case == "revoked":
        assert dev.post(f"/api/v1/api-keys/{key_id}/revoke", json={}, headers=csrf_headers(dev)).status_code == 200
    elif case == "suspended":
        assert dev.post(f"/api/v1/api-keys/{key_id}/suspend", json={},
                        headers=csrf_headers(dev)).status_code == 200
    elif case == "expired":
        with app.app_context():
            key = db.session.get(ApiKey, key_id)
            assert key is not None
            key.expires_at = utcnow() - timedelta(seconds=1)
            db.session.commit()
        app.extensions["hatidata_auth"].introspector.invalidate_api_key(key_id)
    else:
        secret = "hd_live_short"
    response = _me(app, secret)
    assert response.status_code == 401
    assert response.get_json()["error"]["message"] in ("Invalid API key.", "The token is malformed.")


def test_revoked_key_is_rejected_at_once_after_being_cached(app: Flask, dev: FlaskClient) -> None:
    created = _create(dev)
    assert _me(app, created["secret"]).status_code == 200
    assert dev.post(f"/api/v1/api-keys/{created['key']['id']}/revoke", json={},
                    headers=csrf_headers(dev)).status_code == 200
    assert _me(app, created["secret"]).status_code == 401


def test_rotation_keeps_the_old_key_for_the_grace_period(app: Flask, dev: FlaskClient) -> None:
    created = _create(dev, scopes=["data:read"])
    rotated = dev.post(f"/api/v1/api-keys/{created['key']['id']}/rotate", json={"grace_seconds": 3600},
                       headers=csrf_headers(dev))
    assert rotated.status_code == 201
    new = rotated.get_json()
    assert new["key"]["rotated_from_id"] == created["key"]["id"]
    assert _me(app, created["secret"]).status_code == 200  # within grace
    assert _me(app, new["secret"]).get_json()["api_key_id"] == new["key"]["id"]
    # rotating again is refused; a zero grace revokes the old key at once
    again = dev.post(f"/api/v1/api-keys/{created['key']['id']}/rotate", json={}, headers=csrf_headers(dev))
    assert again.status_code == 409
    now = dev.post(f"/api/v1/api-keys/{new['key']['id']}/rotate", json={"grace_seconds": 0},
                   headers=csrf_headers(dev))
    assert now.status_code == 201
    assert _me(app, new["secret"]).status_code == 401
    with app.app_context():
        old = db.session.get(ApiKey, created["key"]["id"])
        assert old is not None
        old.grace_until = utcnow() - timedelta(seconds=1)
        db.session.commit()

    app.extensions["hatidata_auth"].introspector.invalidate_api_key(created["key"]["id"])
    assert _me(app, created["secret"]).status_code == 401


def test_suspend_user_keys_and_reinstate(app: Flask, dev: FlaskClient) -> None:
    a, b = _create(dev), _create(dev, name="second")
    me = dev.get("/api/v1/me").get_json()
    with app.app_context():
        count = key_service.suspend_user_keys(db.session(), organization_id=me["organization_id"],
                                              user_id=me["user_id"], cause=Cause(Actor.workos(),
                                                                                 source_event_id="evt_1"))
        db.session.commit()
        events = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "api_key.suspended")).all()
        assert {e.source_event_id for e in events} == {"evt_1"}
    assert count == 2
    assert _me(app, a["secret"]).status_code == 401
    assert _me(app, b["secret"]).status_code == 401
    admin = app.test_client()
    assert login(admin, "admin@acme.test").status_code == 302
    assert dev.post(f"/api/v1/api-keys/{a['key']['id']}/reinstate", json={},
                    headers=csrf_headers(dev)).status_code == 403
    response = admin.post(f"/api/v1/api-keys/{a['key']['id']}/reinstate", json={}, headers=csrf_headers(admin))
    assert response.status_code == 200
    assert _me(app, a["secret"]).status_code == 200


def test_last_used_at_is_written_at_most_once_per_interval(app: Flask, dev: FlaskClient) -> None:
    created = _create(dev)
    statements: list[str] = []
    from sqlalchemy import event

    with app.app_context():
        engine = db.engine

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE API_KEYS"):
            statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        for _ in range(5):
            assert _me(app, created["secret"]).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(statements) == 1
    with app.app_context():
        key = db.session.get(ApiKey, created["key"]["id"])
        assert key is not None
        assert key.last_used_at is not None


