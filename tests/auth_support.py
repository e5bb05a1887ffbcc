"""Helpers for the login, session and API-key tests (real emulator over HTTP, real SDK)."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
from flask import Flask
from flask.testing import FlaskClient

ACME = "org_01HTDQ8A100000000000000001"
GLOBEX = "org_01HTDQ8A200000000000000001"
INITECH = "org_01HTDQ8A300000000000000001"


def use_file_cache(app_config: dict[str, Any], folder: Any) -> dict[str, Any]:
    """*app_config* on ``make run``'s cache profile: the file cache in *folder* (with its revocation log), no Redis."""
    app_config.pop("REDIS_URL", None)
    app_config["CACHE_TYPE"] = "FileSystemCache"
    app_config["CACHE_DIR"] = str(folder)
    return app_config


def sync_organizations(app: Flask) -> dict[str, str]:
    """Mirror the emulator's organizations; returns WorkOS org id -> our org id."""
    from sqlalchemy import select

    from hatidata_auth.causes import Actor
    from hatidata_auth.extensions import db
    from hatidata_auth.models import Organization
    from hatidata_auth.services import organizations

    with app.app_context():
        client = app.extensions["hatidata_workos"].client
        organizations.sync_from_workos(db.session, client, Actor.system())
        db.session.commit()
        rows = db.session.execute(select(Organization.workos_organization_id, Organization.id)).all()
        db.session.remove()
    return {str(w): i for w, i in rows}


def authorize(url: str) -> str:
    """Follow WorkOS's authorize URL one hop (the emulator answers a ``login_hint`` with a 302)."""
    response = httpx2.get(url, follow_redirects=False, timeout=10)
    assert response.status_code == 302, (response.status_code, response.text[:300])
    return str(response.headers["location"])


def start_login(client: FlaskClient, **params: Any) -> str:
    """``GET /auth/login``; returns the WorkOS authorize URL."""
    response = client.get("/auth/login", query_string=params)
    assert response.status_code == 302, response.get_data(as_text=True)
    return str(response.headers["Location"])


def callback_path(url: str) -> str:
    """The path + query of our callback URL."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def login(client: FlaskClient, email: str, **params: Any) -> Any:
    """Run the whole flow; returns the callback's response."""
    location = authorize(start_login(client, email=email, **params))
    return client.get(callback_path(location))


def password_login(client: FlaskClient, emulator_url: str, email: str, **params: Any) -> Any:
    """Sign in with a seeded password on AuthKit's hosted page (an organization without SSO, the demo's Hooli);
    returns the callback's response."""
    import re

    password = httpx2.get(f"{emulator_url}/_emulator/seed_passwords",
                          headers={"Authorization": "Bearer sk_test_emulator"}).json()[email]
    with httpx2.Client(follow_redirects=False, timeout=10) as browser:
        page = browser.get(start_login(client, email=email, **params))
        assert page.status_code == 200, page.text[:300]
        assert 'type="password"' in page.text  # no SSO: the hosted page offers AuthKit's own methods
        action = next(a for a in re.findall(r'action="([^"]+)"', page.text) if "/password/" in a)
        done = browser.post(emulator_url + action, data={"email": email, "password": password})
    assert done.status_code == 302, done.text[:300]
    return client.get(callback_path(done.headers["location"]))


def cookie_value(client: FlaskClient, name: str = "hatidata_session") -> str | None:
    """The value of a cookie in the test client's jar."""
    cookie = client.get_cookie(name)
    return None if cookie is None else cookie.value


def access_token(app: Flask, client: FlaskClient) -> str:
    """The access token inside the client's sealed session cookie."""
    from workos.session import unseal_data

    value = cookie_value(client, app.config["HATIDATA_COOKIE_NAME"])
    assert value
    return str(unseal_data(value, app.config["HATIDATA_COOKIE_KEY"])["access_token"])


def csrf_headers(client: FlaskClient) -> dict[str, str]:
    """Headers carrying a CSRF token for cookie-authenticated POSTs."""
    from flask import g, has_app_context

    if has_app_context():  # pytest-flask keeps one app context (and g) for every client of a test
        g.pop("csrf_token", None)
    token = client.get("/auth/csrf").get_json()["csrf_token"]
    return {"X-CSRFToken": token}


def query(url: str) -> dict[str, str]:
    """The query parameters of a URL (first values)."""
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def forge_token(emulator: Any, **claims: Any) -> str:
    """A JWT signed by the emulator's real key (to test claims our verifier must reject)."""
    now = int(time.time())
    # auth_time: WorkOS's tokens carry it (the last active sign-in); pass auth_time=None to leave it out
    body = {"iss": emulator.url, "sub": "user_x", "sid": "session_x", "iat": now, "exp": now + 300, "auth_time": now,
            **claims}
    return str(emulator.emulator.keys.sign({k: v for k, v in body.items() if v is not None}))


def add_fault(emulator: Any, method: str, path: str, status: int, count: int | None = None) -> None:
    """Make the emulator fail matching requests (``POST /_emulator/faults``)."""
    body: dict[str, Any] = {"method": method, "path": path, "status": status}
    if count is not None:
        body["count"] = count
    response = httpx2.post(f"{emulator.url}/_emulator/faults", json=body,
                           headers={"Authorization": "Bearer sk_test_emulator"}, timeout=10)
    assert response.status_code == 201, response.text


def workos_membership(app: Flask, email: str, workos_org: str, role: str) -> None:
    """A membership created at WorkOS (as WorkOS's dashboard or API would)."""
    from workos.organization_membership import RoleSingle

    client = app.extensions["hatidata_workos"].client
    user = client.user_management.list_users(email=email).data[0]
    client.organization_membership.create_organization_membership(user_id=user.id, organization_id=workos_org,
                                                                  role=RoleSingle(role_slug=role))
