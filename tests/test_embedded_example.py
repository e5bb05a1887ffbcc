"""The embedded-dashboard example: a separate Flask app using ``HatiDataAuth(app)``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from examples.embedded_dashboard.app import create_dashboard
from tests.auth_support import authorize, callback_path, csrf_headers, start_login, sync_organizations


@pytest.fixture
def dashboard(app: Flask, app_config: dict[str, Any]) -> Iterator[Flask]:
    sync_organizations(app)
    config = {k: v for k, v in app_config.items() if k != "HATIDATA_ENV"}
    config.update(TESTING=True, SESSION_COOKIE_SECURE=False, CACHE_TYPE=app.config["CACHE_TYPE"],
                  WORKOS_API_KEY="sk_test_emulator", WORKOS_CLIENT_ID="client_emulator", WORKOS_MAX_RETRIES=0)
    if app.config.get("CACHE_REDIS_URL"):
        config["CACHE_REDIS_URL"] = app.config["CACHE_REDIS_URL"]
    dash = create_dashboard(config)
    yield dash
    from hatidata_auth.extensions import db

    with dash.app_context():
        db.session.remove()
    dash.extensions["hatidata_workos"].close()


def test_dashboard_redirects_browsers_to_login_and_back(dashboard: Flask) -> None:
    client = dashboard.test_client()
    response = client.get("/", headers={"Accept": "text/html"})
    assert response.status_code == 302
    assert response.headers["Location"] == "/auth/login?return_to=%2F"
    location = authorize(start_login(client, email="dev@acme.test", return_to="/"))
    done = client.get(callback_path(location))
    assert done.status_code == 302
    assert done.headers["Location"] == "/"
    page = client.get("/").get_data(as_text=True)
    assert "Signed in as dev@acme.test (developer)" in page
    assert client.get("/data").get_json()["caller"]["email"] == "dev@acme.test"
    assert client.get("/admin").status_code == 403
    assert client.get("/api/v1/me").get_json()["auth_type"] == "session"
    logout = client.post("/auth/logout", headers=csrf_headers(client))
    assert logout.status_code == 303
    assert client.get("/data").status_code == 401


def test_dashboard_sessions_are_shared_with_the_service(app: Flask, dashboard: Flask) -> None:
    """A session created through the dashboard is known (and revocable) by HatiData Auth itself."""
    client = dashboard.test_client()
    location = authorize(start_login(client, email="admin@acme.test"))
    assert client.get(callback_path(location)).status_code == 302
    cookie = client.get_cookie("hatidata_session")
    assert cookie is not None
    service = app.test_client()
    service.set_cookie("hatidata_session", cookie.value)
    me = service.get("/api/v1/me").get_json()
    assert me["email"] == "admin@acme.test"
    assert service.post("/api/v1/organization/sessions/revoke", json={},
                        headers=csrf_headers(service)).get_json()["revoked"] == 1
    assert client.get("/admin").status_code == 401


def test_a_viewer_at_admin_gets_a_page_and_an_api_caller_json(dashboard: Flask) -> None:
    browser = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    client = dashboard.test_client()
    assert client.get(callback_path(authorize(start_login(client, email="viewer@acme.test")))).status_code == 302
    refused = client.get("/admin", headers=browser)
    assert refused.status_code == 403
    assert refused.mimetype == "text/html"
    page = refused.get_data(as_text=True)
    assert '<h1 id="refused">You do not have access to this page</h1>' in page
    assert "viewer@acme.test with the viewer role" in page
    assert 'href="/"' in page
    assert "/auth/login" not in page  # signing in again would not make them an admin
    assert client.get("/admin", headers={"Accept": "application/json"}).get_json()["error"]["code"] == "forbidden"
    assert 'href="/admin"' not in client.get("/", headers=browser).get_data(as_text=True)

    admin = dashboard.test_client()
    assert admin.get(callback_path(authorize(start_login(admin, email="admin@acme.test")))).status_code == 302
    allowed = admin.get("/admin", headers=browser)
    assert allowed.status_code == 200
    assert allowed.mimetype == "text/html"
    assert "Only admins see this page" in allowed.get_data(as_text=True)
