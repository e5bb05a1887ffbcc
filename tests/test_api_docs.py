"""The API's documentation tells the truth about API-key scopes, and the docs page sends the CSRF token
(issue #15 item 7; the page's own "Try it out" is driven in ``tests/browser/test_api_docs_browser.py``)."""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from hatidata_auth.roles import ALL_PERMISSIONS
from tests.auth_support import csrf_headers, login, sync_organizations


def _scope_items(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Every schema property named ``scopes`` that is a list of API-key scopes."""
    found = []
    for name, schema in document["components"]["schemas"].items():
        prop = schema.get("properties", {}).get("scopes")
        if prop is not None and name not in ("Identity",):
            found.append(prop["items"])
    return found


def test_api_key_scopes_are_an_enum_of_every_permission(client: FlaskClient) -> None:
    items = _scope_items(client.get("/api/openapi.json").get_json())
    assert len(items) >= 2  # what a key is created with and what it is shown with
    for item in items:
        assert item["enum"] == sorted(ALL_PERMISSIONS)


def test_an_unknown_scope_is_refused_naming_the_valid_ones(app: Flask, client: FlaskClient, emulator: Any) -> None:
    sync_organizations(app)
    login(client, "admin@acme.test")
    response = client.post("/api/v1/api-keys", json={"name": "k", "scopes": ["string", "data:read"]},
                           headers=csrf_headers(client))
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "validation_error"
    (problem,) = error["details"]["fields"]["scopes"]["0"]
    assert "'string'" in problem
    for scope in ALL_PERMISSIONS:
        assert scope in problem
    assert "1" not in error["details"]["fields"]["scopes"]  # the valid one is not blamed


def test_the_docs_page_adds_the_csrf_token_to_unsafe_requests(client: FlaskClient) -> None:
    script = client.get("/api/docs/init.js").get_data(as_text=True)
    assert "requestInterceptor: withCsrfToken" in script
    assert 'fetch("/auth/csrf"' in script
    assert 'request.headers["X-CSRFToken"]' in script
