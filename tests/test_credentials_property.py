"""Property: no credential ever holds a permission its issuer lacked, nor one its owner's current role lacks.

Random sequences of key operations (create, rotate, revoke, suspend, reinstate on random keys, by random
members' sessions and random keys), role changes and membership deactivation/reactivation, driven through the
HTTP API with real stored state (role changes through the provisioning service, as directory sync does).
After every step each known credential is used (``GET /api/v1/me``) and checked against the stored state.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from hatidata_auth.causes import Actor, Cause
from hatidata_auth.extensions import db
from hatidata_auth.models import ApiKey, Membership
from hatidata_auth.roles import ALL_PERMISSIONS, ROLE_ORDER, key_permissions, permissions_for
from hatidata_auth.services import provisioning
from hatidata_auth.services.credentials import token_hash
from tests.api_support import make_tenant
from tests.credential_support import bearer, member_role, new_session

MEMBERS = ("admin", "developer", "viewer")
KEY_OPERATIONS = ("rotate", "revoke", "suspend", "reinstate")

callers = st.one_of(st.tuples(st.just("session"), st.sampled_from(MEMBERS)),
                    st.tuples(st.just("key"), st.integers(0, 63)))
steps = st.one_of(
    st.tuples(st.just("create"), st.sampled_from(MEMBERS), st.frozensets(st.sampled_from(sorted(ALL_PERMISSIONS)),
                                                                         min_size=1, max_size=4)),
    st.tuples(st.sampled_from(KEY_OPERATIONS), callers, st.integers(0, 63)),
    st.tuples(st.just("role"), st.sampled_from(MEMBERS), st.sampled_from(ROLE_ORDER)),
    st.tuples(st.just("deactivate"), st.sampled_from(MEMBERS)),
    st.tuples(st.just("reactivate"), st.sampled_from(MEMBERS), st.sampled_from(ROLE_ORDER)),
)


@dataclass
class Key:
    id: str
    secret: str
    owner: str  # member name
    issued_under: list[frozenset[str]] = field(default_factory=list)  # the issuer's permissions, per issuance


@dataclass
class World:
    app: Flask
    client: FlaskClient
    emulator: Any
    org: str
    users: dict[str, str]
    sessions: dict[str, str] = field(default_factory=dict)  # member -> access token
    keys: list[Key] = field(default_factory=list)

    def role(self, member: str) -> str | None:
        return member_role(self.app, self.org, self.users[member])

    def stored(self, key: Key) -> tuple[str, list[str]]:
        with self.app.app_context():
            row = db.session.get(ApiKey, key.id)
            assert row is not None
            result = row.status, list(row.scopes or [])
            db.session.remove()
        return result

    def key_permissions_now(self, key: Key) -> frozenset[str]:
        """What the stored state says the key may do now (nothing when it is unusable)."""
        status, scopes = self.stored(key)
        return key_permissions(scopes, self.role(key.owner)) if status == "active" else frozenset()

    def caller(self, spec: tuple[str, Any]) -> tuple[str | None, str | None, frozenset[str]]:
        """(credential, member acted as, permissions now) of a caller spec."""
        kind, which = spec
        if kind == "session":
            role = self.role(which)
            return self.sessions.get(which), which, permissions_for(role) if which in self.sessions else frozenset()
        key = self.keys[which % len(self.keys)]
        return key.secret, key.owner, self.key_permissions_now(key)

    def set_access(self, member: str, role: str | None, active: bool) -> None:
        with self.app.app_context():
            membership = db.session.scalar(select(Membership).where(Membership.organization_id == self.org,
                                                                    Membership.user_id == self.users[member]))
            assert membership is not None
            provisioning.set_access(db.session, self.app.extensions["hatidata_workos"].client, membership,
                                    role=role, role_source="manual", active=active, cause=Cause(Actor.system("test"),
                                                                                                reason="property test"))
            db.session.commit()
            db.session.remove()


def _world(app: Flask, client: FlaskClient, emulator: Any) -> World:
    tenant = make_tenant(app, f"Osprey{uuid.uuid4().hex[:10]}")
    world = World(app, client, emulator, tenant.id, {m: tenant.users[m] for m in MEMBERS})
    with app.app_context():
        for member in MEMBERS:
            secret = tenant.keys[member]
            key_id = db.session.scalar(select(ApiKey.id).where(ApiKey.key_hash == token_hash(secret)))
            assert key_id is not None
            world.keys.append(Key(key_id, secret, member, [permissions_for(member)]))
        db.session.remove()
    for member in MEMBERS:
        world.sessions[member] = new_session(app, emulator, tenant.id, tenant.users[member])[1]
    return world


def _create(world: World, member: str, scopes: frozenset[str]) -> None:
    token = world.sessions.get(member)
    if token is None:
        return
    held = permissions_for(world.role(member))
    response = world.client.post("/api/v1/api-keys", json={"name": "agent", "scopes": sorted(scopes)},
                                 headers=bearer(token))
    allowed = "keys:write" in held and scopes <= held
    assert (response.status_code == 201) == allowed, (member, sorted(scopes), response.get_json())
    if allowed:
        body = response.get_json()
        world.keys.append(Key(body["key"]["id"], body["secret"], member, [held]))


def _key_operation(world: World, operation: str, caller: tuple[str, Any], index: int) -> None:
    credential, acting_as, held = world.caller(caller)
    if credential is None:
        return
    target = world.keys[index % len(world.keys)]
    _, scopes = world.stored(target)
    own = acting_as == target.owner and operation != "reinstate"
    # The routes' rule (their x-permissions): revoke, rotate and suspend need `keys:write`, and `keys:manage` as well
    # for another member's key; reinstate needs `keys:manage`. A key scoped to `keys:manage` alone reinstates only.
    needed = {"keys:manage"} if operation == "reinstate" else {"keys:write"} | (set() if own else {"keys:manage"})
    permitted = needed <= held
    within = set(scopes) <= held if operation in ("rotate", "reinstate") else True
    body = {"grace_seconds": 0} if operation == "rotate" else {}
    response = world.client.post(f"/api/v1/api-keys/{target.id}/{operation}", json=body, headers=bearer(credential))
    status = response.status_code
    if not held:
        assert status in (401, 403), (operation, caller, status)
        return
    if not (permitted and within):
        assert status == 403, (operation, caller, sorted(held), scopes, response.get_json())
        return
    assert status != 403, (operation, caller, sorted(held), scopes, response.get_json())
    if operation == "rotate" and status == 201:
        created = response.get_json()
        world.keys.append(Key(created["key"]["id"], created["secret"], target.owner, [held]))
    elif operation == "reinstate" and status == 200:
        target.issued_under.append(held)


def _apply(world: World, step: tuple[Any, ...]) -> None:
    kind = step[0]
    if kind == "create":
        _create(world, step[1], step[2])
    elif kind in KEY_OPERATIONS:
        _key_operation(world, kind, step[1], step[2])
    elif kind == "role":
        if world.role(step[1]) is not None:
            world.set_access(step[1], step[2], True)
    elif kind == "deactivate":
        world.set_access(step[1], None, False)
        world.sessions.pop(step[1], None)
    else:
        was_active = world.role(step[1]) is not None
        world.set_access(step[1], step[2], True)
        if not was_active:  # signs in again
            world.sessions[step[1]] = new_session(world.app, world.emulator, world.org, world.users[step[1]])[1]


def _check(world: World) -> None:
    for key in world.keys:
        response = world.client.get("/api/v1/me", headers=bearer(key.secret))
        expected = world.key_permissions_now(key)
        owner_role = world.role(key.owner)
        status, _ = world.stored(key)
        if status != "active" or owner_role is None:
            assert response.status_code == 401, (key.owner, status, owner_role, response.get_json())
            continue
        assert response.status_code == 200, response.get_json()
        held = frozenset(response.get_json()["permissions"])
        assert held == expected
        assert held <= permissions_for(owner_role)
        for issuer in key.issued_under:
            assert held <= issuer, (sorted(held), sorted(issuer))
    for member, token in world.sessions.items():
        response = world.client.get("/api/v1/me", headers=bearer(token))
        role = world.role(member)
        assert role is not None
        assert response.status_code == 200
        assert frozenset(response.get_json()["permissions"]) == permissions_for(role)


@pytest.fixture
def unlimited_app(app_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[Flask]:
    """The app with the failed-key limiter out of the way: revoked keys are used again and again on purpose."""
    from hatidata_auth import create_app
    from tests.conftest import _empty_tables

    monkeypatch.setenv("HATIDATA_INSTANCE_PATH", str(tmp_path / "instance"))
    app_config.update(HATIDATA_API_KEY_FAILURE_RATE_LIMIT="100000 per minute",
                      HATIDATA_API_KEY_PREFIX_FAILURE_RATE_LIMIT="100000 per minute")
    application = create_app(app_config)
    _empty_tables(application)
    yield application
    with application.app_context():
        db.session.remove()
        db.engine.dispose()
    application.extensions["hatidata_workos"].close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequence=st.lists(steps, min_size=1, max_size=7))
def test_credentials_never_exceed_their_issuer_or_owner(unlimited_app: Flask, emulator: Any,
                                                        sequence: list[tuple[Any, ...]]) -> None:
    world = _world(unlimited_app, unlimited_app.test_client(), emulator)
    _check(world)
    for step in sequence:
        _apply(world, step)
        _check(world)
