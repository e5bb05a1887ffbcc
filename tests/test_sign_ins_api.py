"""Sign-in diagnostics through the API and the admin page (issue #15, item 4), against the emulator playing
the IdP: failures the emulator's IdP produces (a user not assigned to the app) arrive by our callback and by
WorkOS's ``authentication.sso_failed`` event and are read back by admins only, of their own organization."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from hatidata_auth.extensions import db
from hatidata_auth.models import AuditEvent, Organization, SignInAttempt
from tests.auth_support import (
    ACME,
    GLOBEX,
    authorize,
    callback_path,
    csrf_headers,
    login,
    start_login,
    sync_organizations,
)
from tests.sso_wizard_support import csrf_from
from tests.support.dsync import deliver

API = "/api/v1/organization/sign-in-attempts"


@pytest.fixture
def orgs(app: Flask) -> dict[str, str]:
    mirrored = sync_organizations(app)
    with app.app_context():  # the wizard records the plugin of the organization's connection
        db.session.execute(update(Organization).where(Organization.id == mirrored[ACME]).values(idp_plugin="okta"))
        db.session.commit()
    return mirrored


def _control(emulator: Any, method: str, path: str, body: Any = None) -> Any:
    response = httpx2.request(method, f"{emulator.url}/_emulator{path}", json=body, timeout=10,
                              headers={"Authorization": "Bearer sk_test_emulator"})
    assert response.status_code < 300, response.text
    return response.json() if response.content else None


def _deliver_events(emulator: Any, client: FlaskClient, app: Flask, event_type: str) -> list[str]:
    """Deliver the emulator's events of *event_type* as signed webhooks; returns their ids."""
    ids = []
    for event in _control(emulator, "GET", "/events")["data"]:
        if event["event"] == event_type:
            assert deliver(client, app, {k: event[k] for k in ("id", "event", "data", "created_at")}) == "applied"
            ids.append(event["id"])
    return ids


def _refused_sign_in(client: FlaskClient, email: str) -> None:
    """A sign-in the IdP refuses: WorkOS answers our callback with ``error`` / ``error_description``."""
    location = authorize(start_login(client, email=email))
    assert "error=access_denied" in location, location
    answer = client.get(callback_path(location))
    assert answer.status_code == 400
    assert answer.get_json()["error"]["details"]["reason"] == "idp_error"


def _signed_in(app: Flask, email: str) -> FlaskClient:
    client = app.test_client()
    assert login(client, email).status_code == 302
    return client


def test_a_user_not_assigned_to_the_app_is_explained_to_the_admin(app: Flask, client: FlaskClient, emulator: Any,
                                                                  orgs: dict[str, str]) -> None:
    _control(emulator, "POST", "/sign_in_failures", {"email": "dev@acme.test", "kind": "not_assigned"})
    _refused_sign_in(app.test_client(), "dev@acme.test")
    assert _deliver_events(emulator, client, app, "authentication.sso_failed")
    admin = _signed_in(app, "admin@acme.test")
    _deliver_events(emulator, client, app, "authentication.sso_succeeded")
    data = admin.get(API).get_json()["data"]
    failure = next(a for a in data if a["outcome"] == "failure")
    assert failure["reason"] == "not_assigned_to_app"
    assert failure["email"] == "dev@acme.test"
    assert failure["error_code"] == "access_denied"
    assert failure["error_message"] == "User is not assigned to the client application."
    assert "Okta" in failure["fix"]
    assert "Assignments" in failure["fix"]
    assert failure["sources"] == ["event"]
    success = next(a for a in data if a["outcome"] == "success")
    assert success["email"] == "admin@acme.test"
    assert success["sources"] == ["callback", "event"]  # our callback and WorkOS's event: one attempt
    assert success["attributes"]["email"] == "[redacted]"
    assert success["reason"] is None
    assert success["fix"] is None


def test_paging_filters_and_reveal(app: Flask, client: FlaskClient, emulator: Any, orgs: dict[str, str]) -> None:
    admin = _signed_in(app, "admin@acme.test")
    for email in ("dev@acme.test", "viewer@acme.test"):
        _signed_in(app, email)
    seen, cursor = [], None
    while True:
        body = admin.get(API, query_string={"limit": 2, **({"cursor": cursor} if cursor else {})}).get_json()
        seen += [a["email"] for a in body["data"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == ["viewer@acme.test", "dev@acme.test", "admin@acme.test"]  # newest first
    only = admin.get(API, query_string={"email": "DEV@acme.test", "outcome": "success"}).get_json()["data"]
    assert [a["email"] for a in only] == ["dev@acme.test"]
    assert admin.get(API, query_string={"reason": "not_assigned_to_app"}).get_json()["data"] == []
    for bad in ({"reason": "nope"}, {"outcome": "maybe"}, {"limit": 0}, {"cursor": "!!"}):
        answer = admin.get(API, query_string=bad)
        assert answer.status_code == 422, bad
        assert set(answer.get_json()["error"]["details"]["fields"]) == set(bad)
    newest = admin.get(API, query_string={"limit": 1}).get_json()["data"][0]
    ignored = admin.get(API, query_string={"reveal_attributes": "true"}).get_json()["data"]  # a read never reveals
    assert not any(a["attributes_revealed"] for a in ignored)
    assert admin.post(f"{API}/{newest['id']}/reveal").status_code == 400  # a cookie caller needs the CSRF token
    revealed = admin.post(f"{API}/{newest['id']}/reveal", headers=csrf_headers(admin))
    assert revealed.status_code == 200, revealed.get_data(as_text=True)
    assert revealed.get_json()["attributes"]["email"] == "viewer@acme.test"
    assert revealed.get_json()["attributes_revealed"] is True
    with app.app_context():
        event = db.session.scalars(select(AuditEvent).where(
            AuditEvent.action == "sign_in_attempts.attributes_revealed")).one()
        assert event.details == {"attempt_ids": [newest["id"]]}
        assert event.actor_email == "admin@acme.test"
    for missing in (0, 2**31, 2**63, 10**30):  # none, and past the column's range: 404, never a database error
        assert admin.post(f"{API}/{missing}/reveal", headers=csrf_headers(admin)).status_code == 404, missing


def test_only_admins_read_and_only_their_organizations_attempts(app: Flask, client: FlaskClient, emulator: Any,
                                                                orgs: dict[str, str]) -> None:
    _signed_in(app, "dev@acme.test")
    assert client.get(API).status_code == 401
    for email in ("viewer@acme.test", "dev@acme.test"):
        assert _signed_in(app, email).get(API).status_code == 403, email
        assert _signed_in(app, email).get("/admin/sso/sign-ins/").status_code == 403, email
    globex = _signed_in(app, "admin@globex.test")
    data = globex.get(API, query_string={"limit": 100}).get_json()["data"]
    assert {a["email"] for a in data} == {"admin@globex.test"}
    assert {a["organization_id"] for a in data} == {orgs[GLOBEX]}
    with app.app_context():
        acme_ids = db.session.scalars(select(SignInAttempt.id).where(
            SignInAttempt.organization_id == orgs[ACME])).all()
    assert acme_ids
    page = globex.get("/admin/sso/sign-ins/")
    token = csrf_from(page.get_data(as_text=True))
    for attempt_id in acme_ids:  # another organization's attempt cannot be revealed
        assert globex.post(f"/admin/sso/sign-ins/{attempt_id}/reveal", data={"csrf_token": token}).status_code == 404
        assert globex.post(f"{API}/{attempt_id}/reveal", headers=csrf_headers(globex)).status_code == 404


def test_the_sign_ins_page_explains_and_reveals_on_request(app: Flask, client: FlaskClient, emulator: Any,
                                                           orgs: dict[str, str]) -> None:
    _control(emulator, "POST", "/sign_in_failures", {"email": "viewer@acme.test", "kind": "not_assigned"})
    _refused_sign_in(app.test_client(), "viewer@acme.test")
    _deliver_events(emulator, client, app, "authentication.sso_failed")
    admin = _signed_in(app, "admin@acme.test")
    page = admin.get("/admin/sso/sign-ins/")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "Failed: Not assigned to the app" in html
    assert "Applications → Applications → HatiData → Assignments" in html
    assert "admin@acme.test" in html
    assert "admin@acme.test</li>" not in html  # attribute values hidden
    success_id = admin.get(API, query_string={"outcome": "success"}).get_json()["data"][0]["id"]
    assert admin.post(f"/admin/sso/sign-ins/{success_id}/reveal").status_code == 400  # CSRF
    shown = admin.post(f"/admin/sso/sign-ins/{success_id}/reveal", data={"csrf_token": csrf_from(html)})
    assert shown.status_code == 200
    assert "<code>email</code>: admin@acme.test" in shown.get_data(as_text=True)
    filtered = admin.get("/admin/sso/sign-ins/", query_string={"reason": "missing_attribute"})
    assert "No sign-in attempts match these filters" in filtered.get_data(as_text=True)
    index = admin.get("/admin/sso/").get_data(as_text=True)
    assert 'id="health-last-sign-in"><time' in index
    assert "/admin/sso/sign-ins/" in index


def test_a_sign_in_we_refuse_after_workos_let_it_through_stays_one_failure(app: Flask, client: FlaskClient,
                                                                            emulator: Any,
                                                                            orgs: dict[str, str]) -> None:
    from hatidata_auth.models import Membership, User

    _signed_in(app, "dev@acme.test")
    with app.app_context():
        user_id = db.session.scalar(select(User.id).where(User.email == "dev@acme.test"))
        db.session.execute(update(Membership).where(Membership.user_id == user_id, Membership.organization_id ==
                                                    orgs[ACME]).values(status="suspended"))
        db.session.commit()
    refused = login(app.test_client(), "dev@acme.test")
    assert refused.status_code == 403
    _deliver_events(emulator, client, app, "authentication.sso_succeeded")
    admin = _signed_in(app, "admin@acme.test")
    dev = admin.get(API, query_string={"email": "dev@acme.test"}).get_json()["data"]
    assert [(a["outcome"], a["reason"], a["sources"]) for a in dev] == [
        ("failure", "not_a_member", ["callback", "event"]), ("success", None, ["callback", "event"])]
    assert "suspended" in dev[0]["error_message"]
