"""Break-it review (issue #10 rule 1): a key's scopes bound every operation, and ``workos_session_id`` is
visible only to who may revoke the session.

Real sign-ins through the emulator (real SDK over HTTP); API keys made with the key service as their owner would.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from hatidata_auth.extensions import db
from hatidata_auth.models import AuthSession, Organization, User
from tests.auth_support import GLOBEX, login, sync_organizations
from tests.credential_support import bearer, new_key


@pytest.fixture
def orgs(app: Flask) -> dict[str, str]:
    return sync_organizations(app)


def _signed_in(app: Flask, client: FlaskClient, email: str) -> tuple[str, str, str]:
    """Sign *email* in; returns (our organization id, user id, WorkOS session id) of the new session."""
    response = login(client, email)
    assert response.status_code == 302, response.get_data(as_text=True)
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == email))
        assert user is not None
        record = db.session.scalar(select(AuthSession).where(AuthSession.user_id == user.id)
                                   .order_by(AuthSession.created_at.desc()))
        assert record is not None
        out = (record.organization_id, user.id, record.workos_session_id)
        db.session.remove()
    return out


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


@pytest.mark.parametrize("scope", ["audit:read"])
def test_a_key_that_may_not_revoke_sessions_never_sees_a_workos_session_id(
        app: Flask, client: FlaskClient, orgs: dict[str, str], scope: str) -> None:
    # A viewer signs in: their session's WorkOS id lets whoever knows it end it (WorkOS's logout URL).
    org_id, _, viewer_sid = _signed_in(app, client, "viewer@globex.test")
    other = app.test_client()
    _, admin_id, _ = _signed_in(app, other, "admin@globex.test")
    _, secret = new_key(app, org_id, admin_id, [scope])
    headers = bearer(secret)
    sessions = app.test_client().get("/api/v1/sessions", headers=headers)
    assert sessions.status_code == 403  # the key may neither list nor revoke sessions
    seen: list[str] = []
    for path in ("/api/v1/audit-events?limit=200", "/api/v1/audit-events/export"):
        response = app.test_client().get(path, headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)[:200]
        seen.append(response.get_data(as_text=True))
    leaked = [text for text in seen if viewer_sid in text]
    assert not leaked, f"{viewer_sid} readable with only {scope}"


def test_a_key_of_one_organization_does_not_reveal_its_owners_other_organizations(
        app: Flask, client: FlaskClient, orgs: dict[str, str]) -> None:
    # consultant@partners.test belongs to Acme and Globex; a data:read key made in Acme speaks for Acme only.
    org_id, user_id, _ = _signed_in(app, client, "consultant@partners.test")
    with app.app_context():
        globex = db.session.scalar(select(Organization).where(Organization.workos_organization_id == GLOBEX))
        assert globex is not None
        other_ids = {globex.id, GLOBEX} - {org_id}
        db.session.remove()
    _, secret = new_key(app, org_id, user_id, ["data:read"])
    response = app.test_client().get("/auth/organizations", headers=bearer(secret))
    body = response.get_json(silent=True)
    assert response.status_code == 403 or not (set(_strings(body)) & other_ids), body
