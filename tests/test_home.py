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


def test_the_home_page_tells_a_person_who_where_how_and_until_when(app: Flask, client: FlaskClient,
                                                                   emulator: Any) -> None:
    sync_organizations(app)
    login(client, "admin@acme.test", remember="1")
    page = client.get("/").get_data(as_text=True)
    assert '<dd id="who-name">Alice Anderson</dd>' in page
    assert '<dd id="who-organization">Acme Corp</dd>' in page
    assert '<dd id="who-role"><strong>admin</strong></dd>' in page
    assert '<dd id="who-method">Single sign-on</dd>' in page
    expires = re.search(r'<dd id="who-expires">(\d{4}-\d\d-\d\d \d\d:\d\d UTC)', page)
    assert expires is not None
    assert "you chose to stay signed in" in page


def test_no_link_on_the_home_page_shows_json_to_a_person(app: Flask, client: FlaskClient, emulator: Any) -> None:
    """Every link a signed-out or signed-in person (viewer or admin, with alerts) is offered opens a page."""
    from hatidata_auth.errors import JSON_PATHS

    sync_organizations(app)
    pages = [client.get("/").get_data(as_text=True)]
    for email in ("viewer@acme.test", "admin@acme.test"):
        login(client, email)
        pages.append(client.get("/").get_data(as_text=True))
    for page in pages:
        for href in re.findall(r'href="([^"]+)"', page):
            if href.startswith("/api/docs"):
                continue  # the interactive API documentation is a page, labelled as the API's
            assert not href.startswith(JSON_PATHS), href
            assert not href.startswith("/auth/organizations"), href


def test_switching_and_signing_out_say_what_happened(app: Flask, client: FlaskClient, emulator: Any) -> None:
    orgs = sync_organizations(app)
    workos_membership(app, "dev@acme.test", GLOBEX, "viewer")
    login(client, "dev@acme.test", organization_id=ACME)
    page = client.get("/").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None
    switched = client.post("/auth/switch-organization", data={"csrf_token": token.group(1),
                                                              "organization_id": orgs[GLOBEX], "return_to": "/"})
    assert switched.status_code == 303
    page = client.get("/").get_data(as_text=True)
    assert '<p class="flash success">You are now in Globex as viewer.</p>' in page
    assert "You are now in" not in client.get("/").get_data(as_text=True)  # said once

    # An API caller's switch (JSON, no return_to) gets JSON and leaves no message behind.
    from tests.auth_support import csrf_headers

    back = client.post("/auth/switch-organization", json={"organization_id": orgs[ACME]},
                       headers=csrf_headers(client))
    assert back.status_code == 200
    assert "You are now in" not in client.get("/").get_data(as_text=True)

    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/").get_data(as_text=True))
    assert token is not None
    assert client.post("/auth/logout", data={"csrf_token": token.group(1)}).status_code == 303
    page = client.get("/").get_data(as_text=True)
    assert '<p class="flash success">You are signed out.</p>' in page
    assert "Sign in to HatiData" in page
