"""URLs come from configuration (issue #10, rule 7): a forged ``Host`` never steers a URL we hand out.

Every redirect URI, logout return URL and Admin Portal return URL is built from ``HATIDATA_PUBLIC_URL``; the
sweep below sends a forged ``Host`` (and, behind a trusted proxy, a forged ``X-Forwarded-Host``) to every GET
route of the app and to every route that builds a URL, and finds the forged origin nowhere.
"""

from __future__ import annotations

import re
from html import unescape
from typing import Any
from urllib.parse import urlsplit

import httpx2
import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.auth_support import access_token, authorize, csrf_headers, login, query, sync_organizations
from tests.sso_wizard_support import Wizard, mapping_form
from tests.test_sso_wizard import OKTA_URL, PRESET

PUBLIC = "https://auth.configured-origin.example"
FORGED = "attacker.invalid"
ROUTE_VALUES = {"plugin": "okta", "key": "test-login"}


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    app_config["HATIDATA_PUBLIC_URL"] = PUBLIC
    app_config["HATIDATA_TRUSTED_PROXIES"] = 1  # so that X-Forwarded-Host is honoured where it may be
    return app_config


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _forged(mode: str, client: FlaskClient, app: Flask) -> dict[str, str]:
    if mode == "host":  # a forged Host; the credential travels as a bearer token (cookies are per host)
        return {"Host": FORGED, "Authorization": f"Bearer {access_token(app, client)}"}
    return {"X-Forwarded-Host": FORGED, "X-Forwarded-Proto": "https"}


def _signed_in_admin(app: Flask, client: FlaskClient) -> Wizard:
    sync_organizations(app)
    assert login(client, "admin@acme.test").status_code == 302
    wizard = Wizard(client, "okta")
    assert wizard.start().status_code == 302
    return wizard


def _get_routes(app: Flask) -> list[str]:
    paths = []
    for rule in app.url_map.iter_rules():
        if "GET" not in (rule.methods or ()) or rule.endpoint == "static":
            continue
        paths.append(re.sub(r"<(?:[^:>]+:)?([^>]+)>", lambda m: ROUTE_VALUES.get(m.group(1), "x"), rule.rule))
    return sorted(set(paths))


@pytest.mark.parametrize("mode", ["host", "forwarded"])
def test_no_get_route_answers_with_the_forged_origin(app: Flask, client: FlaskClient, mode: str) -> None:
    _signed_in_admin(app, client)
    routes = _get_routes(app)
    assert {"/auth/login", "/auth/callback", "/admin/sso/okta/test-login/callback", "/api/v1/me"} <= set(routes)
    for path in routes:
        with client.get(path, headers=_forged(mode, client, app)) as response:  # closed even if streamed
            body = response.get_data(as_text=True)
        location = response.headers.get("Location", "")
        assert FORGED not in location, (path, location)
        assert FORGED not in body, path
        if location.startswith(("http://", "https://")) and "redirect_uri=" in location:
            assert _origin(query(location)["redirect_uri"]) == PUBLIC, (path, location)


@pytest.mark.parametrize("mode", ["host", "forwarded"])
def test_login_redirect_uri_is_the_configured_one(app: Flask, client: FlaskClient, mode: str) -> None:
    sync_organizations(app)
    headers = {"Host": FORGED} if mode == "host" else {"X-Forwarded-Host": FORGED}
    location = client.get("/auth/login", query_string={"email": "dev@globex.test"}, headers=headers)
    assert query(location.headers["Location"])["redirect_uri"] == f"{PUBLIC}/auth/callback"
    # ... and WorkOS sends the browser back there, not to the forged host.
    assert authorize(location.headers["Location"]).startswith(f"{PUBLIC}/auth/callback?")


def test_logout_returns_to_the_configured_origin(app: Flask, client: FlaskClient) -> None:
    sync_organizations(app)
    assert login(client, "dev@acme.test").status_code == 302
    response = client.post("/auth/logout", headers={**csrf_headers(client), "X-Forwarded-Host": FORGED})
    assert response.status_code == 303
    assert query(response.headers["Location"])["return_to"] == f"{PUBLIC}/"
    anonymous = app.test_client().post("/auth/logout", headers={"Host": FORGED})
    assert anonymous.headers["Location"] == f"{PUBLIC}/"


def test_wizard_test_sign_in_and_admin_portal_use_the_configured_origin(app: Flask, client: FlaskClient,
                                                                       emulator: Any) -> None:
    wizard = _signed_in_admin(app, client)
    forged = {"X-Forwarded-Host": FORGED}
    link = client.post("/admin/sso/okta/portal-link", headers=forged,
                       data={"intent": "sso", "csrf_token": wizard.token})
    assert link.status_code == 200
    portal = re.search(r'<code id="portal-link">([^<]+)</code>', link.get_data(as_text=True))
    assert portal, link.get_data(as_text=True)[:500]
    page = httpx2.get(unescape(portal.group(1)), timeout=10).text
    assert f'href="{PUBLIC}/admin/sso/"' in page
    assert FORGED not in page
    assert wizard.post("prerequisites", {"confirm": "yes", "protocol": "saml"}).status_code == 302
    assert wizard.post("console", {"confirm": "yes"}).status_code == 302
    fields = ("idp_id", "email", "first_name", "last_name")
    assert wizard.post("attributes", {f"attr_{f}": "yes" for f in fields}).status_code == 302
    assert wizard.post("metadata", {"source": "url", "metadata_url": OKTA_URL}).status_code == 302
    assert wizard.post("role-mapping", mapping_form(PRESET)).status_code == 302
    wizard.get("test-login")
    started = client.post(wizard.url("test-login"), headers=forged, content_type="multipart/form-data",
                          data={"csrf_token": wizard.token, "action": "start", "login_hint": "admin@acme.test"})
    assert started.status_code == 302, started.get_data(as_text=True)[:500]
    assert query(started.headers["Location"])["redirect_uri"] == f"{PUBLIC}/admin/sso/okta/test-login/callback"
    assert authorize(started.headers["Location"]).startswith(f"{PUBLIC}/admin/sso/okta/test-login/callback?")
