"""The landing page: a sign-in form when signed out; identity, organizations and next steps when signed in."""

from __future__ import annotations

import re
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from tests.auth_support import ACME, GLOBEX, login, sync_organizations, workos_membership


def test_signed_out_visitors_get_a_sign_in_form(client: FlaskClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert 'action="/auth/login"' in page
    assert '<label for="email">' in page


def test_after_login_the_landing_page_shows_who_and_where(app: Flask, client: FlaskClient, emulator: Any) -> None:
    orgs = sync_organizations(app)
    # Acme verified acme.test, so its sign-in speaks for dev@acme.test in Globex too (a member there at WorkOS).
    workos_membership(app, "dev@acme.test", GLOBEX, "viewer")
    assert login(client, "dev@acme.test", organization_id=ACME).headers["Location"] == "/"
    page = client.get("/").get_data(as_text=True)
    assert "dev@acme.test" in page
    assert "Acme Corp" in page
    assert "Globex" in page
    assert "Switch" in page
    assert 'action="/auth/logout"' in page
    assert "/admin/sso/" not in page  # a developer is not offered the admin wizard

    # The switch form works as a plain browser form post and comes back here.
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    target = re.search(r'name="organization_id" value="([^"]+)"', page)
    assert token is not None
    assert target is not None
    assert target.group(1) == orgs[GLOBEX]
    switched = client.post("/auth/switch-organization", data={"csrf_token": token.group(1),
                                                              "organization_id": target.group(1), "return_to": "/"})
    assert switched.status_code == 303
    assert switched.headers["Location"] == "/"
    assert client.get("/api/v1/me").get_json()["organization_id"] == target.group(1)


def test_an_organization_needing_its_own_sign_in_is_offered_as_a_sign_in_link(app: Flask, client: FlaskClient,
                                                                              emulator: Any) -> None:
    orgs = sync_organizations(app)
    assert login(client, "consultant@partners.test", organization_id=ACME).headers["Location"] == "/"
    page = client.get("/").get_data(as_text=True)
    assert "Globex" in page
    assert f'name="organization_id" value="{orgs[GLOBEX]}"' not in page  # no switch form that would be refused
    link = f'href="/auth/login?organization_id={orgs[GLOBEX]}"'
    assert link in page
    assert login(client, "consultant@partners.test", organization_id=orgs[GLOBEX]).status_code == 302
    assert client.get("/api/v1/me").get_json()["organization_id"] == orgs[GLOBEX]


def test_admins_are_offered_the_sso_wizard(app: Flask, client: FlaskClient, emulator: Any) -> None:
    sync_organizations(app)
    login(client, "admin@acme.test")
    assert "/admin/sso/" in client.get("/").get_data(as_text=True)
