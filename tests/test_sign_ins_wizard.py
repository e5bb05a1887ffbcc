"""The SSO wizard's test sign-in feeds the sign-in diagnostics (issue #15, item 4): the emulator's IdP leaves out
an attribute or refuses a user not assigned to the app; the admin reads why and the fix in Okta's words."""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from hatidata_auth.extensions import db
from hatidata_auth.models import AuditEvent
from tests.auth_support import authorize, callback_path, login, sync_organizations
from tests.sso_wizard_support import Wizard, mapping_form
from tests.test_sign_ins_api import API, _control, _deliver_events
from tests.test_sso_wizard import OKTA_URL, PRESET, _first_steps


def _okta_wizard_at_the_test_step(client: FlaskClient) -> Wizard:
    assert login(client, "admin@acme.test").status_code == 302
    wizard = Wizard(client, "okta")
    _first_steps(wizard)
    assert wizard.post("metadata", {"source": "url", "metadata_url": OKTA_URL}).status_code == 302
    assert wizard.post("role-mapping", mapping_form(PRESET)).status_code == 302
    return wizard


def test_a_missing_attribute_and_an_unassigned_user_in_test_sign_ins(app: Flask, client: FlaskClient,
                                                                      emulator: Any) -> None:
    sync_organizations(app)
    wizard = _okta_wizard_at_the_test_step(client)
    _control(emulator, "POST", "/sign_in_failures", {"email": "dev@acme.test", "kind": "missing_attribute",
                                                     "attribute": "first_name"})
    _control(emulator, "POST", "/sign_in_failures", {"email": "viewer@acme.test", "kind": "not_assigned"})

    wizard.test_login("dev@acme.test")
    started = wizard.post("test-login", {"action": "start", "login_hint": "viewer@acme.test"})
    refused = client.get(callback_path(authorize(started.headers["Location"])))
    assert refused.status_code == 400
    assert "User is not assigned to the client application." in refused.get_data(as_text=True)
    _deliver_events(emulator, client, app, "authentication.sso_failed")

    data = client.get(API).get_json()["data"]
    by_reason = {a["reason"]: a for a in data}
    missing = by_reason["missing_attribute"]
    assert (missing["kind"], missing["outcome"], missing["email"]) == ("test", "failure", "dev@acme.test")
    assert missing["missing_attribute"] == "firstName"
    assert "firstName → user.firstName" in missing["fix"]
    assert set(missing["attributes"]) == {"email", "idp_id", "last_name", "groups"}  # first_name never arrived
    unassigned = by_reason["not_assigned_to_app"]
    assert unassigned["kind"] == "test"
    assert unassigned["sources"] == ["callback", "event"]  # the wizard's callback and WorkOS's event: one attempt
    assert unassigned["email"] == "viewer@acme.test"
    assert "Assignments" in unassigned["fix"]
    with app.app_context():
        audited = db.session.scalars(select(AuditEvent.details).where(AuditEvent.action == "sso.test_login",
                                                                      AuditEvent.outcome == "failure")).all()
    assert any(d.get("reason") == "not_assigned_to_app" for d in audited)
