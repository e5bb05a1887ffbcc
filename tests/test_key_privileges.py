"""Least privilege for credentials: who may act on which key, what a rotation or reinstatement may yield, and
how key scopes bound session operations (issue #10, rule 1). Real requests, real stored state."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from hatidata_auth.causes import Actor, Cause
from hatidata_auth.extensions import db
from hatidata_auth.roles import key_permissions, permissions_for
from hatidata_auth.services import api_keys as key_service
from tests.api_support import Tenant, make_tenant
from tests.credential_support import bearer, key_row, new_key, new_session

KEY_OPERATIONS = ("revoke", "rotate", "suspend", "reinstate")


@pytest.fixture
def kestrel(app: Flask) -> Tenant:
    return make_tenant(app, "Kestrel")


def _suspend(app: Flask, tenant: Tenant, key_id: str) -> None:
    with app.app_context():
        key_service.suspend_key(db.session, organization_id=tenant.id, key_id=key_id, cause=Cause.by(Actor.system()))
        db.session.commit()
        db.session.remove()


def _act(client: FlaskClient, credential: str, key_id: str, operation: str) -> Any:
    body = {"grace_seconds": 0} if operation == "rotate" else {}
    return client.post(f"/api/v1/api-keys/{key_id}/{operation}", json=body, headers=bearer(credential))


def test_key_operations_are_the_documented_ones(client: FlaskClient) -> None:
    document = client.get("/api/openapi.json").get_json()
    found = {path.rsplit("/", 1)[-1] for path, item in document["paths"].items()
             if path.startswith("/api/v1/api-keys/{key_id}/") and "post" in item}
    assert found == set(KEY_OPERATIONS)


@pytest.mark.parametrize("credential", ["session", "api_key"])
@pytest.mark.parametrize("operation", KEY_OPERATIONS)
def test_another_members_key_needs_keys_manage(app: Flask, client: FlaskClient, emulator: Any, kestrel: Tenant,
                                               operation: str, credential: str) -> None:
    dev = kestrel.users["developer"]
    if credential == "session":
        token = new_session(app, emulator, kestrel.id, dev)[1]
    else:
        token = new_key(app, kestrel.id, dev, ["keys:read", "keys:write", "data:read"])[1]
    for owner, scopes in (("admin", ["members:read", "members:write", "data:read"]), ("viewer", ["data:read"])):
        key_id, _ = new_key(app, kestrel.id, kestrel.users[owner], scopes)
        if operation == "reinstate":
            _suspend(app, kestrel, key_id)
        before = key_row(app, key_id)
        response = _act(client, token, key_id, operation)
        assert response.status_code == 403, response.get_json()
        assert response.get_json()["error"]["details"]["missing_permissions"] == ["keys:manage"]
        assert key_row(app, key_id) == before
    # An admin (keys:manage) may act on the developer's key.
    key_id, _ = new_key(app, kestrel.id, dev, ["data:read", "data:write"])
    if operation == "reinstate":
        _suspend(app, kestrel, key_id)
    admin_token = new_session(app, emulator, kestrel.id, kestrel.users["admin"])[1]
    assert _act(client, admin_token, key_id, operation).status_code in (200, 201)


@pytest.mark.parametrize("operation", ["revoke", "rotate", "suspend"])
def test_own_key_needs_keys_write_and_a_key_may_act_on_its_owners_keys(
        app: Flask, client: FlaskClient, kestrel: Tenant, operation: str) -> None:
    dev = kestrel.users["developer"]
    target, _ = new_key(app, kestrel.id, dev, ["data:read"])
    _, without_write = new_key(app, kestrel.id, dev, ["keys:read", "data:read"])
    response = _act(client, without_write, target, operation)
    assert response.status_code == 403
    assert response.get_json()["error"]["details"]["missing_permissions"] == ["keys:write"]
    _, with_write = new_key(app, kestrel.id, dev, ["keys:write", "data:read"])
    assert _act(client, with_write, target, operation).status_code in (200, 201)


def test_the_owner_cannot_lift_a_suspension(app: Flask, client: FlaskClient, emulator: Any,
                                            kestrel: Tenant) -> None:
    dev = kestrel.users["developer"]
    key_id, secret = new_key(app, kestrel.id, dev, ["data:read"])
    _suspend(app, kestrel, key_id)
    token = new_session(app, emulator, kestrel.id, dev)[1]
    response = _act(client, token, key_id, "reinstate")
    assert response.status_code == 403
    assert client.get("/api/v1/me", headers=bearer(secret)).status_code == 401


@pytest.mark.parametrize("operation", ["rotate", "reinstate"])
def test_the_resulting_key_never_exceeds_the_caller(app: Flask, client: FlaskClient, kestrel: Tenant,
                                                    operation: str) -> None:
    admin, dev = kestrel.users["admin"], kestrel.users["developer"]
    # The admin's narrow key may manage keys but holds neither the members nor the data scopes of the targets.
    _, narrow = new_key(app, kestrel.id, admin, ["keys:read", "keys:write", "keys:manage"])
    for owner, scopes in ((admin, ["members:write", "audit:read"]), (dev, ["data:write"])):
        key_id, _ = new_key(app, kestrel.id, owner, scopes)
        if operation == "reinstate":
            _suspend(app, kestrel, key_id)
        before = key_row(app, key_id)
        response = _act(client, narrow, key_id, operation)
        assert response.status_code == 403, response.get_json()
        assert response.get_json()["error"]["details"]["missing_permissions"] == sorted(scopes)
        assert key_row(app, key_id) == before
    if operation == "rotate":
        # A key rotating itself yields a key with its own permissions, no more.
        _, agent = new_key(app, kestrel.id, dev, ["keys:write", "data:read"])
        me = client.get("/api/v1/me", headers=bearer(agent)).get_json()
        rotated = client.post(f"/api/v1/api-keys/{me['api_key_id']}/rotate", json={"grace_seconds": 0},
                              headers=bearer(agent))
        assert rotated.status_code == 201
        fresh = client.get("/api/v1/me", headers=bearer(rotated.get_json()["secret"])).get_json()
        assert set(fresh["permissions"]) <= set(me["permissions"])


def test_a_key_shrinks_at_once_with_its_owner(app: Flask, client: FlaskClient, kestrel: Tenant) -> None:
    dev = kestrel.users["developer"]
    scopes = ["data:read", "data:write", "keys:read", "sessions:read"]
    _, secret = new_key(app, kestrel.id, dev, scopes)
    admin = bearer(kestrel.keys["admin"])
    for _ in range(3):  # cached in every layer
        assert client.get("/api/v1/me", headers=bearer(secret)).get_json()["permissions"] == sorted(scopes)
    member = kestrel.members["developer"]
    assert client.patch(f"/api/v1/members/{member}", json={"role": "viewer"}, headers=admin).status_code == 200
    body = client.get("/api/v1/me", headers=bearer(secret)).get_json()
    assert body["permissions"] == sorted(key_permissions(scopes, "viewer"))
    assert client.get("/api/v1/api-keys", headers=bearer(secret)).status_code == 403
    assert client.patch(f"/api/v1/members/{member}", json={"role": "developer"}, headers=admin).status_code == 200
    assert client.get("/api/v1/me", headers=bearer(secret)).get_json()["permissions"] == sorted(scopes)
    assert client.delete(f"/api/v1/members/{member}", headers=admin).status_code == 200
    assert client.get("/api/v1/me", headers=bearer(secret)).status_code == 401


# --- sessions ---------------------------------------------------------------------------------------------------


def _sessions(client: FlaskClient, credential: str, **query: str) -> Any:
    return client.get("/api/v1/sessions", query_string={"include_ended": "1", **query}, headers=bearer(credential))


def test_key_scopes_bound_the_owners_own_sessions(app: Flask, client: FlaskClient, emulator: Any,
                                                  kestrel: Tenant) -> None:
    admin = kestrel.users["admin"]
    own_session, _ = new_session(app, emulator, kestrel.id, admin)
    _, no_sessions = new_key(app, kestrel.id, admin, ["data:read", "members:read"])
    response = _sessions(client, no_sessions, user_id=admin)
    assert response.status_code == 403
    assert response.get_json()["error"]["details"]["missing_permissions"] == ["sessions:read"]
    _, read_only = new_key(app, kestrel.id, admin, ["sessions:read"])
    for key in (no_sessions, read_only):
        response = client.post(f"/api/v1/sessions/{own_session}/revoke", json={}, headers=bearer(key))
        assert response.status_code == 403
        assert response.get_json()["error"]["details"]["missing_permissions"] == ["sessions:write"]
    listed = _sessions(client, read_only, user_id=admin).get_json()["data"]
    assert [s["id"] for s in listed] == [own_session]
    assert listed[0]["workos_session_id"] is None  # a key that may not revoke it does not see WorkOS's id
    _, writer = new_key(app, kestrel.id, admin, ["sessions:read", "sessions:write"])
    listed = _sessions(client, writer, user_id=admin).get_json()["data"]
    assert listed[0]["workos_session_id"]
    assert client.post(f"/api/v1/sessions/{own_session}/revoke", json={},
                       headers=bearer(writer)).get_json()["revoked"] is True


@pytest.mark.parametrize("role", ["admin", "developer", "viewer"])
def test_workos_session_ids_only_for_those_who_may_revoke(app: Flask, client: FlaskClient, emulator: Any,
                                                          kestrel: Tenant, role: str) -> None:
    sessions = {r: new_session(app, emulator, kestrel.id, kestrel.users[r]) for r in ("admin", "developer", "viewer")}
    token = sessions[role][1]
    may_write = "sessions:write" in permissions_for(role)
    seen: dict[str, Any] = {}
    for other in ("admin", "developer", "viewer"):
        for row in _sessions(client, token, user_id=kestrel.users[other]).get_json()["data"]:
            seen[row["id"]] = row
    assert sessions[role][0] in seen
    for row in seen.values():
        own = row["user_id"] == kestrel.users[role]
        assert (row["workos_session_id"] is not None) == (own or may_write), (role, row)
    # Revoking follows the same rule: another member's session needs sessions:write, one's own never does.
    other_role = "viewer" if role != "viewer" else "developer"
    response = client.post(f"/api/v1/sessions/{sessions[other_role][0]}/revoke", json={}, headers=bearer(token))
    assert response.status_code == (200 if may_write else 403)
    response = client.post(f"/api/v1/sessions/{sessions[role][0]}/revoke", json={}, headers=bearer(token))
    assert response.status_code == 200


def test_the_session_schema_allows_a_hidden_workos_session_id(client: FlaskClient) -> None:
    schema = client.get("/api/openapi.json").get_json()["components"]["schemas"]["Session"]
    assert schema["properties"]["workos_session_id"].get("nullable") is True
