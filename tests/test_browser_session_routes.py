"""An API key is bound to its organization, and a bearer token to its session's: the browser-session routes
(``/auth/*`` and the pages), which speak for the person across all their organizations, refuse both.

Over every non-API route of ``app.url_map``: called with a key made in one organization, or with the session's
access token as a bearer, no answer names another organization of the key's owner, and the session-only routes
answer 403 ``browser_session_required``.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from hatidata_auth.extensions import db
from hatidata_auth.models import Membership, Organization, User
from hatidata_auth.roles import permissions_for
from tests.auth_support import access_token, login, sync_organizations
from tests.credential_support import bearer, new_key

SESSION_ONLY = {("GET", "/auth/organizations"), ("POST", "/auth/switch-organization")}
NOT_BROWSER = ("/api/", "/webhooks/", "/healthz", "/readyz", "/metrics")


def _routes(app: Flask) -> list[tuple[str, str]]:
    out = set()
    for rule in app.url_map.iter_rules():
        if rule.arguments or rule.rule.startswith(NOT_BROWSER) or "static" in rule.endpoint:
            continue
        for method in rule.methods or ():
            if method in ("GET", "POST"):
                out.add((method, rule.rule))
    return sorted(out)


def _others(app: Flask, user_id: str, current: str) -> set[str]:
    """Ids and names of the user's organizations other than *current*."""
    with app.app_context():
        rows = db.session.execute(select(Organization).join(Membership, Membership.organization_id == Organization.id)
                                  .where(Membership.user_id == user_id, Organization.id != current)).scalars().all()
        out = {value for org in rows for value in (org.id, org.workos_organization_id, org.name) if value}
        db.session.remove()
    return out


@pytest.mark.parametrize("email", ["consultant@partners.test"])
@pytest.mark.parametrize("credential", ["api_key", "bearer_token"])
def test_browser_session_routes_refuse_keys_and_bearer_tokens(app: Flask, client: FlaskClient, email: str,
                                                              credential: str) -> None:
    sync_organizations(app)
    assert login(client, email).status_code == 302
    me = client.get("/api/v1/me").get_json()
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == email))
        assert user is not None
        user_id = user.id
        db.session.remove()
    others = _others(app, user_id, me["organization_id"])
    assert others, "the user must belong to more than one organization for this test to mean anything"
    if credential == "api_key":
        secret = new_key(app, me["organization_id"], user_id, sorted(permissions_for(me["role"])))[1]  # all it may have
    else:
        secret = access_token(app, client)
    routes = _routes(app)
    assert set(routes) >= SESSION_ONLY
    for method, path in routes:
        caller = app.test_client()  # no cookie: only the bearer credential
        kwargs: dict[str, Any] = {"headers": {**bearer(secret), "Accept": "application/json"}}
        if method == "POST":
            kwargs["json"] = {"organization_id": sorted(others)[0]}
        response = caller.open(path, method=method, **kwargs)
        text = response.get_data(as_text=True)
        assert not {value for value in others if value in text}, (method, path, response.status_code, text[:300])
        if (method, path) in SESSION_ONLY:
            assert response.status_code == 403, (method, path, text[:300])
            assert response.get_json()["error"]["code"] == "browser_session_required"
    # The browser session itself still lists them all.
    listed = {o["id"] for o in client.get("/auth/organizations").get_json()["data"]}
    assert others & listed
