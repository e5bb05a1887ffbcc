"""Every error answers a person with the app's page and an API caller with the JSON shape (issue #15 item 6).

The rule (``hatidata_auth.errors.wants_html``): a browser asking for HTML first, outside ``/api/``, ``/webhooks/``
and the probes, gets the styled page with a message that fits the status and a way forward that can help;
everyone else gets ``{"error": {"code", "message", "details"}}``. It is checked over every HTTP status Werkzeug
can raise and every status an ``AppError`` may carry, on an unknown URL, and on the real routes that refuse.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.exceptions import default_exceptions

from hatidata_auth.errors import PAGES
from tests.auth_support import ACME, GLOBEX, login, sync_organizations, workos_membership
from tests.support.error_routes import APP_ERROR_MESSAGE, add_error_routes

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
API = {"Accept": "application/json"}
ERROR_STATUSES = sorted(code for code in default_exceptions if code >= 400)
APP_ERROR_STATUSES = sorted({*PAGES, 400, 401, 403, 404, 409, 422, 429, 500, 502, 503})


def _is_our_page(response: Any) -> str:
    page = response.get_data(as_text=True)
    assert response.mimetype == "text/html", (response.status_code, page[:200])
    assert 'id="error-summary"' in page, page[:400]
    assert '<header class="top">' in page
    assert "Werkzeug" not in page
    assert "<title>" + str(response.status_code) not in page
    assert re.search(r'request id <code>[0-9a-f]{32}</code>', page), "the request id to quote to support"
    assert 'href="/"' in page  # always a way home
    return page


def _is_json_error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status
    body = response.get_json()
    assert body is not None, response.get_data(as_text=True)[:200]
    assert set(body["error"]) >= {"code", "message", "details"}
    return dict(body["error"])


@pytest.fixture
def raising_app(app: Flask) -> Flask:
    """The app with two routes raising any status: Werkzeug's exceptions and our ``AppError``."""
    return add_error_routes(app)


@pytest.mark.parametrize("status", ERROR_STATUSES)
def test_every_http_status_has_a_page_for_people_and_json_for_callers(raising_app: Flask, status: int) -> None:
    client = raising_app.test_client()
    page = client.get(f"/_test/http/{status}", headers=BROWSER)
    assert page.status_code == status
    text = _is_our_page(page)
    title = PAGES.get(status, ("",))[0]
    assert title.replace("'", "&#39;") in text
    for headers in (API, {}, {"Accept": "*/*"}):
        _is_json_error(client.get(f"/_test/http/{status}", headers=headers), status)


@pytest.mark.parametrize("status", APP_ERROR_STATUSES)
def test_every_app_error_status_has_a_page_for_people_and_json_for_callers(raising_app: Flask, status: int) -> None:
    client = raising_app.test_client()
    text = _is_our_page(client.get(f"/_test/app/{status}", headers=BROWSER))
    assert APP_ERROR_MESSAGE in text
    error = _is_json_error(client.get(f"/_test/app/{status}", headers=API), status)
    assert error["code"] == "some_code"


def test_an_unknown_url_gets_the_page_in_a_browser_and_json_under_api(client: FlaskClient) -> None:
    text = _is_our_page(client.get("/no/such/page", headers=BROWSER))
    assert "Page not found" in text
    assert "/auth/login" not in text  # signing in would not make the page exist
    assert _is_json_error(client.get("/no/such/page", headers=API), 404)["code"] == "not_found"
    assert _is_json_error(client.get("/api/v1/no-such", headers=BROWSER), 404)["code"] == "not_found"


def test_a_wrong_method_keeps_allow_and_gets_the_page(client: FlaskClient) -> None:
    response = client.get("/auth/logout", headers=BROWSER)
    assert response.status_code == 405
    assert "POST" in response.headers["Allow"]
    _is_our_page(response)
    assert "POST" in client.get("/auth/logout", headers=API).headers["Allow"]


def test_a_signed_in_person_without_the_role_is_never_offered_to_sign_in_again(app: Flask, client: FlaskClient,
                                                                               emulator: Any) -> None:
    sync_organizations(app)
    login(client, "viewer@acme.test")
    response = client.get("/admin/sso/", headers=BROWSER)
    assert response.status_code == 403
    text = _is_our_page(response)
    assert "You do not have access to this page" in text
    assert "viewer@acme.test" in text
    assert "<strong>viewer</strong>" in text
    assert "Ask an admin of your organization" in text
    assert "/auth/login" not in text
    assert "Sign in" not in text
    assert _is_json_error(client.get("/admin/sso/", headers=API), 403)["code"] == "forbidden"


def test_an_unauthenticated_form_post_is_offered_to_sign_in(client: FlaskClient) -> None:
    response = client.post("/auth/switch-organization", data={"organization_id": "x"}, headers=BROWSER)
    assert response.status_code == 401
    text = _is_our_page(response)
    assert 'href="/auth/login?return_to=%2F"' in text  # a POST is not replayed: back home after signing in


def test_a_refused_switch_offers_the_target_organizations_own_sign_in(app: Flask, client: FlaskClient,
                                                                      emulator: Any) -> None:
    orgs = sync_organizations(app)
    workos_membership(app, "dev@acme.test", GLOBEX, "viewer")
    login(client, "consultant@partners.test", organization_id=ACME)
    page = client.get("/").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None
    response = client.post("/auth/switch-organization", headers=BROWSER, data={
        "csrf_token": token.group(1), "organization_id": orgs[GLOBEX], "return_to": "/"})
    assert response.status_code == 409
    text = _is_our_page(response)
    assert f'href="/auth/login?organization_id={orgs[GLOBEX]}"' in text


def test_a_missing_csrf_token_gets_the_page(app: Flask, client: FlaskClient, emulator: Any) -> None:
    sync_organizations(app)
    login(client, "dev@acme.test")
    response = client.post("/auth/logout", headers=BROWSER)
    assert response.status_code == 400
    _is_our_page(response)
