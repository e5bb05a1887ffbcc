"""Break-it review (issue #10 rule 1): a key's permissions are its scopes within its owner's *current* role,
at each use; every state change is audited.

A member whose WorkOS role changes signs in again: the callback writes the role the access token claims
straight onto the membership (``sessions._upsert_membership``). That path neither evicts the cached status of
the member's API keys (which carries the old role) nor audits the role change, unlike every other role change
(``provisioning.set_access``).
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select
from workos.organization_membership import RoleSingle

from hatidata_auth.extensions import db
from hatidata_auth.models import AuditEvent, User
from tests.auth_support import ACME, login, sync_organizations
from tests.credential_support import bearer, member_role, new_key

EMAIL = "consultant@partners.test"


def _demote_at_workos(app: Flask, role: str) -> None:
    client = app.extensions["hatidata_workos"].client
    users = client.user_management.list_users(email=EMAIL).data
    memberships = client.organization_membership.list_organization_memberships(user_id=users[0].id,
                                                                               organization_id=ACME).data
    client.organization_membership.update_organization_membership(memberships[0].id, role=RoleSingle(role_slug=role))


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    # Production shape: the shared cache and the revocation bus on Redis (a missing Redis fails, never skips).
    app_config.setdefault("REDIS_URL", os.environ.get("TEST_REDIS_URL") or "redis://127.0.0.1:6379/0")
    return app_config


@pytest.fixture
def signed_in(app: Flask) -> dict[str, Any]:
    orgs = sync_organizations(app)
    assert login(app.test_client(), EMAIL, organization_id=ACME).status_code == 302
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == EMAIL))
        assert user is not None
        out = {"org": orgs[ACME], "user": user.id}
        db.session.remove()
    assert member_role(app, out["org"], out["user"]) == "developer"
    return out


def test_a_role_lowered_at_sign_in_bounds_the_members_keys_at_once(app: Flask, signed_in: dict[str, Any]) -> None:
    _, secret = new_key(app, signed_in["org"], signed_in["user"], ["data:read", "data:write"])
    before = app.test_client().get("/api/v1/me", headers=bearer(secret)).get_json()
    assert "data:write" in before["permissions"]
    _demote_at_workos(app, "viewer")
    assert login(app.test_client(), EMAIL, organization_id=ACME).status_code == 302
    assert member_role(app, signed_in["org"], signed_in["user"]) == "viewer"
    after = app.test_client().get("/api/v1/me", headers=bearer(secret)).get_json()
    assert after["role"] == "viewer", after
    assert "data:write" not in after["permissions"], after


@pytest.mark.parametrize("role", ["viewer", "admin"])
def test_a_role_changed_at_sign_in_is_audited(app: Flask, signed_in: dict[str, Any], role: str) -> None:
    _demote_at_workos(app, role)
    assert login(app.test_client(), EMAIL, organization_id=ACME).status_code == 302
    assert member_role(app, signed_in["org"], signed_in["user"]) == role
    with app.app_context():
        events = db.session.execute(select(AuditEvent.action, AuditEvent.details).where(
            AuditEvent.organization_id == signed_in["org"])).all()
        db.session.remove()
    # Like every other role change (provisioning.set_access): an event naming the old and the new role.
    changes = [action for action, details in events
               if (details or {}).get("from") == "developer" and (details or {}).get("to") == role]
    assert changes, sorted({action for action, _ in events})
