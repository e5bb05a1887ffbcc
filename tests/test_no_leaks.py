"""Nothing internal leaks (issue #10, rule 9): no tracebacks to tenants, no caching of authenticated answers,
a fresh CSRF token at login, and forms that can only go to this site or WorkOS."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from hatidata_auth.models import Organization
from hatidata_auth.services.inbox import ERROR_SUMMARY_CHARS, error_summary
from tests.api_support import headers_for, make_tenant
from tests.auth_support import access_token, csrf_headers, login, sync_organizations
from tests.support.dsync import deliver
from tests.test_webhooks import user_event

ROUTE_VALUES = {"plugin": "okta", "key": "prerequisites"}


def _get_routes(app: Flask) -> list[str]:
    paths = {re.sub(r"<(?:[^:>]+:)?([^>]+)>", lambda m: ROUTE_VALUES.get(m.group(1), "x"), rule.rule)
             for rule in app.url_map.iter_rules() if "GET" in (rule.methods or ()) and rule.endpoint != "static"}
    return sorted(paths)


def _credentials(app: Flask, client: FlaskClient, kind: str) -> dict[str, str]:
    if kind == "cookie":
        return {}
    if kind == "jwt":
        return {"Authorization": f"Bearer {access_token(app, client)}"}
    return headers_for(make_tenant(app, "Fabrikam"), "admin")


@pytest.mark.parametrize("kind", ["cookie", "jwt", "api_key"])
def test_every_authenticated_response_is_private(app: Flask, client: FlaskClient, kind: str) -> None:
    sync_organizations(app)
    assert login(client, "admin@globex.test").status_code == 302
    headers = _credentials(app, client, kind)
    if kind != "cookie":
        client = app.test_client()  # the credential travels in the header alone
    for path in _get_routes(app):
        response = client.get(path, headers=headers)
        response.get_data()  # drain a streamed answer (the audit export) before the next request
        response.close()
        assert response.headers.get("Cache-Control") == "no-store", (path, response.status_code)
        vary = [v.strip().lower() for v in response.headers.get("Vary", "").split(",")]
        assert {"cookie", "authorization"} <= set(vary), (path, vary)
        assert len(vary) == len(set(vary)), (path, vary)  # merged, not repeated


def test_the_login_callback_and_logout_answers_are_private(app: Flask, client: FlaskClient) -> None:
    sync_organizations(app)
    done = login(client, "dev@acme.test")
    assert done.status_code == 302
    assert done.headers["Cache-Control"] == "no-store"
    out = client.post("/auth/logout", headers=csrf_headers(client))
    assert out.status_code == 303
    assert out.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("email", ["dev@acme.test", "viewer@initech.test", "admin@globex.test"])
def test_a_csrf_token_from_before_login_no_longer_works(app: Flask, client: FlaskClient, email: str) -> None:
    sync_organizations(app)
    before = csrf_headers(client)
    assert login(client, email).status_code == 302
    refused = client.post("/auth/logout", headers=before)
    assert refused.status_code == 400
    assert client.get_cookie("hatidata_session") is not None  # the refused logout changed nothing
    fresh = csrf_headers(client)
    assert fresh != before
    assert client.post("/auth/logout", headers=fresh).status_code == 303


def test_html_forms_may_only_go_to_this_site_or_workos(app: Flask, client: FlaskClient, emulator: Any) -> None:
    sync_organizations(app)
    anonymous = app.test_client()
    assert login(client, "admin@acme.test").status_code == 302
    parts = urlsplit(emulator.url)
    allowed = {"'self'", f"{parts.scheme}://{parts.netloc}"}
    pages = 0
    for path in _get_routes(app):
        for who in (anonymous, client):
            response = who.get(path, headers={"Accept": "text/html"})
            response.get_data()
            response.close()
            if response.mimetype != "text/html":
                continue
            pages += 1
            policy = dict(d.strip().split(" ", 1) for d in response.headers["Content-Security-Policy"].split(";"))
            assert set(policy["form-action"].split()) == allowed, path
    assert pages >= 3


def test_tenants_see_an_error_summary_never_a_traceback(app: Flask, client: FlaskClient, db_session: Any,
                                                        workos_client: Any) -> None:
    from tests.support.dsync import mirror_organizations

    orgs = mirror_organizations(db_session, workos_client)
    org = db_session.get(Organization, orgs["globex.test"].id)
    org.default_role = "overlord"  # not a role: applying the event fails inside provisioning
    db_session.commit()
    payload = user_event("event_LEAK1", email="new.hire@globex.test")
    payload["data"].update(directory_id=org.directory_id, organization_id=org.workos_organization_id)
    org_id = org.id
    assert deliver(client, app, payload) == "failed"
    db_session.remove()
    assert login(client, "admin@globex.test").status_code == 302
    listed = client.get("/api/v1/webhook-inbox/failed")
    assert listed.status_code == 200, listed.get_json()
    errors = [row["last_error"] for row in listed.get_json()["data"]]
    replayed = client.post("/api/v1/webhook-inbox/event_LEAK1/replay", headers=csrf_headers(client))
    assert replayed.status_code == 200, replayed.get_json()
    errors.append(replayed.get_json()["error"])
    assert len(errors) == 2
    for error in errors:
        assert error.startswith("ValueError: ")
        assert "overlord" in error
        assert "Traceback" not in error
        assert 'File "' not in error
        assert "\n" not in error
        assert len(error) <= ERROR_SUMMARY_CHARS
    assert db_session.scalar(select(Organization.default_role).where(Organization.id == org_id)) == "overlord"


@settings(max_examples=200, deadline=None)
@given(message=st.text(max_size=5000), kind=st.sampled_from([ValueError, KeyError, RuntimeError, LookupError]))
def test_an_error_summary_is_one_short_clean_line(message: str, kind: type[Exception]) -> None:
    summary = error_summary(kind(message))
    assert summary.startswith(kind.__name__)
    assert len(summary) <= ERROR_SUMMARY_CHARS
    assert not any(ord(c) < 32 or 127 <= ord(c) < 160 for c in summary)
