"""The SSO setup wizard end to end (test client, real emulator): steps, validation, audit, refusals."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from hatidata_auth.extensions import db
from hatidata_auth.idp.testing import saml_metadata
from hatidata_auth.models import AuditEvent, Organization, RoleMapping, WizardProgress
from tests.auth_support import ACME, GLOBEX, INITECH, login, sync_organizations
from tests.sso_wizard_support import ENTRA_GROUPS, UMBRELLA, Wizard, mapping_form

OKTA_URL = "https://acme.okta.com/app/exkaell8gidiiUWrg5d7/sso/saml/metadata"
ENTRA_URL = ("https://login.microsoftonline.com/9c2f6d41-6a7e-4c1b-8b4e-3f0a5c7d2e19/federationmetadata/"
             "2007-06/federationmetadata.xml?appid=2a1f6b0e-3c4d-4e5f-8a9b-0c1d2e3f4a5b")
ACME_CONNECTION = "conn_01HTDQ8C100000000000000001"
PRESET = [("HatiData Admins", "HatiData Admins", "admin"), ("HatiData Developers", "HatiData Developers", "developer"),
          ("HatiData Viewers", "HatiData Viewers", "viewer")]


@pytest.fixture
def orgs(app: Flask) -> dict[str, str]:
    return sync_organizations(app)


def _admin(client: FlaskClient, email: str) -> None:
    response = login(client, email)
    assert response.status_code == 302, response.get_data(as_text=True)


def _org(app: Flask, org_id: str) -> Organization:
    with app.app_context():
        org = db.session.get(Organization, org_id)
        db.session.expunge(org)
        return org


def _first_steps(wizard: Wizard, protocol: str = "saml") -> None:
    assert wizard.start().status_code == 302
    assert wizard.post("prerequisites", {"confirm": "yes", "protocol": protocol}).status_code == 302
    assert wizard.post("console", {"confirm": "yes"}).status_code == 302
    fields = ("idp_id", "email", "first_name", "last_name")
    assert wizard.post("attributes", {f"attr_{f}": "yes" for f in fields}).status_code == 302


def _finish(wizard: Wizard, enforce: bool = True) -> None:
    assert wizard.post("test-login", {"action": "next"}).status_code == 302
    assert wizard.post("directory", {"action": "next"}).status_code == 302
    done = wizard.post("activate", {"enforce_sso": "yes"} if enforce else {})
    assert done.status_code == 302, done.get_data(as_text=True)[:800]
    assert done.headers["Location"].endswith("/admin/sso/?done=" + wizard.plugin)


def test_okta_wizard_end_to_end(app: Flask, client: FlaskClient, orgs: dict[str, str]) -> None:
    _admin(client, "admin@acme.test")
    wizard = Wizard(client, "okta")
    _first_steps(wizard)
    page = wizard.get("metadata").get_data(as_text=True)
    assert "View IdP Metadata" in page
    assert wizard.post("metadata", {"source": "url", "metadata_url": OKTA_URL}).status_code == 302
    org = _org(app, orgs[ACME])
    assert org.connection_id == ACME_CONNECTION  # the organization's active connection, edited, not a second one
    assert org.connection_type == "OktaSAML"
    assert org.idp_plugin is None  # until activation
    preview = wizard.post("role-mapping", mapping_form(PRESET, action="preview"))
    assert preview.status_code == 200
    assert "Dry run" in preview.get_data(as_text=True)
    assert wizard.post("role-mapping", mapping_form(PRESET)).status_code == 302
    result = wizard.test_login("admin@acme.test").get_data(as_text=True)
    assert "Profile received for admin@acme.test" in result
    assert "<strong>admin</strong>" in result
    assert "Everyone" in result  # Okta's built-in group arrives too
    _finish(wizard)
    org = _org(app, orgs[ACME])
    assert org.sso_enforced is True
    assert org.idp_plugin == "okta"
    with app.app_context():
        actions = db.session.scalars(select(AuditEvent.action).where(AuditEvent.organization_id == org.id)).all()
        progress = db.session.scalar(select(WizardProgress).where(WizardProgress.organization_id == org.id))
        assert progress.completed_at is not None
        mappings = db.session.scalars(select(RoleMapping).where(RoleMapping.organization_id == org.id)).all()
    assert {"sso_wizard.started", "sso_wizard.step_completed", "sso.connection.updated", "role_mapping.replaced",
            "sso.test_login", "sso.activated"} <= set(actions)
    assert actions.count("sso_wizard.step_completed") == 8
    assert {(m.identifier_kind, m.group_identifier, m.role) for m in mappings} == {
        ("name", g, r) for _, g, r in PRESET}


def test_entra_wizard_maps_object_ids(app: Flask, client: FlaskClient, orgs: dict[str, str]) -> None:
    _admin(client, "admin@globex.test")
    wizard = Wizard(client, "azure")
    _first_steps(wizard)
    assert wizard.post("metadata", {"source": "url", "metadata_url": ENTRA_URL}).status_code == 302
    page = wizard.get("role-mapping").get_data(as_text=True)
    assert "Group (Object ID)" in page
    named = wizard.post("role-mapping", mapping_form([("HatiData Admins", "HatiData Admins", "admin")]))
    assert named.status_code == 422
    assert "is not a group object ID" in named.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(select(RoleMapping).where(RoleMapping.organization_id == orgs[GLOBEX])) is None
    rows = [(label, ENTRA_GROUPS[role], role) for label, _, role in PRESET]
    assert wizard.post("role-mapping", mapping_form(rows)).status_code == 302
    result = wizard.test_login("dev@globex.test").get_data(as_text=True)
    assert ENTRA_GROUPS["developer"] in result
    assert "<strong>developer</strong>" in result
    _finish(wizard, enforce=False)
    assert _org(app, orgs[GLOBEX]).connection_type == "AzureSAML"


def test_google_wizard_with_a_metadata_file(app: Flask, client: FlaskClient, orgs: dict[str, str]) -> None:
    _admin(client, "admin@initech.test")
    wizard = Wizard(client, "google")
    _first_steps(wizard)
    entity = "https://accounts.google.com/o/saml2?idpid=C01234567"
    good = saml_metadata(entity, "https://accounts.google.com/o/saml2/idp?idpid=C01234567")
    assert wizard.post("metadata", {"source": "xml"}, file=good).status_code == 302
    assert "certificate valid until" in wizard.get("metadata").get_data(as_text=True)
    assert wizard.post("role-mapping", mapping_form(PRESET)).status_code == 302
    result = wizard.test_login("viewer@initech.test").get_data(as_text=True)
    assert "<strong>viewer</strong>" in result
    _finish(wizard)
    assert _org(app, orgs[INITECH]).connection_type == "GoogleSAML"


def test_onelogin_wizard(app: Flask, client: FlaskClient, orgs: dict[str, str]) -> None:
    _admin(client, "admin@umbrella.test")
    wizard = Wizard(client, "onelogin")
    _first_steps(wizard)
    plugin_entity = "https://app.onelogin.com/saml/metadata/3f1a2b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b"
    document = saml_metadata(plugin_entity, "https://umbrella.onelogin.com/trust/saml2/http-post/sso/3f1a2b4c")
    assert wizard.post("metadata", {"source": "xml"}, file=document).status_code == 302
    assert wizard.post("role-mapping", mapping_form(PRESET)).status_code == 302
    result = wizard.test_login("admin@umbrella.test").get_data(as_text=True)
    assert "<strong>admin</strong>" in result
    _finish(wizard)
    assert _org(app, orgs[UMBRELLA]).connection_type == "OneLoginSAML"


@pytest.mark.parametrize(("plugin", "admin", "data", "file", "message"), [
    ("okta", "admin@acme.test", {"source": "url", "metadata_url": ENTRA_URL}, None, "Microsoft Entra ID URL"),
    ("okta", "admin@acme.test", {"source": "url", "metadata_url": "https://acme.okta.com/nope"}, None,
     "looks like"),
    ("google", "admin@initech.test", {"source": "xml"}, b"<!DOCTYPE x [<!ENTITY a SYSTEM 'file:///etc/passwd'>]><x>&a;</x>",
     "DTD"),
    ("google", "admin@initech.test", {"source": "xml"}, b"<html><body>hello</body></html>", "not SAML metadata"),
    ("google", "admin@initech.test", {"source": "xml"},
     saml_metadata("https://accounts.google.com/o/saml2?idpid=C1", "https://accounts.google.com/o/saml2/idp",
                   not_after=datetime.now(UTC) - timedelta(days=3)), "expired"),
])
def test_bad_metadata_is_refused_inline_and_nothing_is_saved(
        app: Flask, client: FlaskClient, orgs: dict[str, str], plugin: str, admin: str, data: dict[str, str],
        file: bytes | None, message: str) -> None:
    _admin(client, admin)
    wizard = Wizard(client, plugin)
    _first_steps(wizard)
    before = _org(app, orgs[ACME if plugin == "okta" else INITECH])
    response = wizard.post("metadata", data, file=file)
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert message in page
    assert 'role="alert"' in page
    after = _org(app, before.id)
    assert after.connection_id == before.connection_id
    assert after.idp_plugin is None
    with app.app_context():
        progress = db.session.scalar(select(WizardProgress).where(WizardProgress.organization_id == before.id))
        assert progress.current_step == "metadata"
        assert "connection_id" not in progress.data or progress.data["connection_id"] is None


def test_oidc_secret_goes_to_workos_and_is_never_stored(app: Flask, client: FlaskClient, emulator: Any,
                                                         orgs: dict[str, str]) -> None:
    secret = "oidc-secret-value-7f3a9c"
    _admin(client, "admin@acme.test")
    wizard = Wizard(client, "okta")
    _first_steps(wizard, protocol="oidc")
    missing = wizard.post("metadata", {"discovery_endpoint": "https://acme.okta.com/.well-known/openid-configuration",
                                       "client_id": "0oa1", "client_secret": ""})
    assert missing.status_code == 422
    ok = wizard.post("metadata", {"discovery_endpoint": "https://acme.okta.com/.well-known/openid-configuration",
                                  "client_id": "0oa1", "client_secret": secret})
    assert ok.status_code == 302, ok.get_data(as_text=True)[:600]
    org = _org(app, orgs[ACME])
    assert (org.connection_id, org.connection_type) == (ACME_CONNECTION, "OktaSAML")  # the new one is untested
    with app.app_context():
        created = db.session.scalar(select(WizardProgress).where(WizardProgress.organization_id == org.id))
        connection_id = created.data["connection_id"]
    assert emulator.emulator.store.connections[connection_id]["connection_type"] == "OktaOIDC"
    stored = emulator.emulator.store.connections[connection_id]["_options"]["oidc"]
    assert stored["has_client_secret"] is True  # WorkOS received it
    with app.app_context():
        dump = json.dumps([p.data for p in db.session.scalars(select(WizardProgress))]
                          + [e.details for e in db.session.scalars(select(AuditEvent))], default=str)
    assert secret not in dump
    assert secret not in wizard.get("metadata").get_data(as_text=True)


def test_non_admin_is_refused(client: FlaskClient, orgs: dict[str, str]) -> None:
    _admin(client, "viewer@acme.test")
    assert client.get("/admin/sso/").status_code == 403
    assert client.get("/admin/sso/okta/wizard/prerequisites").status_code == 403


def test_anonymous_is_sent_to_login(client: FlaskClient, orgs: dict[str, str]) -> None:
    response = client.get("/admin/sso/", headers={"Accept": "text/html"})
    assert response.status_code == 302
    assert "/auth/login" in response.headers["Location"]


def test_step_posted_out_of_order_is_refused(app: Flask, client: FlaskClient, orgs: dict[str, str]) -> None:
    _admin(client, "admin@acme.test")
    wizard = Wizard(client, "okta")
    wizard.start()
    wizard.get("prerequisites")
    response = wizard.post("metadata", {"source": "url", "metadata_url": OKTA_URL})
    assert response.status_code == 409
    assert _org(app, orgs[ACME]).idp_plugin is None
    ahead = client.get(wizard.url("activate"))
    assert ahead.status_code == 302
    assert ahead.headers["Location"].endswith("/wizard/prerequisites")


def test_post_without_csrf_token_is_refused(client: FlaskClient, orgs: dict[str, str]) -> None:
    _admin(client, "admin@acme.test")
    Wizard(client, "okta").start()
    response = client.post("/admin/sso/okta/wizard/prerequisites", data={"confirm": "yes"})
    assert response.status_code == 400


def test_inline_errors_for_unticked_boxes(client: FlaskClient, orgs: dict[str, str]) -> None:
    _admin(client, "admin@acme.test")
    wizard = Wizard(client, "okta")
    wizard.start()
    response = wizard.post("prerequisites", {})
    assert response.status_code == 422
    assert "Tick “I have these ready” to go on." in response.get_data(as_text=True)


def test_progress_is_shared_and_resumable(app: Flask, client: FlaskClient, orgs: dict[str, str]) -> None:
    _admin(client, "admin@acme.test")
    wizard = Wizard(client, "okta")
    _first_steps(wizard)
    other = app.test_client()
    _admin(other, "admin@acme.test")
    resumed = other.get("/admin/sso/okta/wizard/")
    assert resumed.status_code == 302
    assert resumed.headers["Location"].endswith("/admin/sso/okta/wizard/metadata")
    page = other.get("/admin/sso/okta/wizard/metadata").get_data(as_text=True)
    assert 'aria-current="step"' in page
    assert "/sso/saml/acs/" in other.get("/admin/sso/okta/wizard/console").get_data(as_text=True)


def test_changed_step_list_resets_a_half_done_setup(app: Flask, client: FlaskClient, orgs: dict[str, str]) -> None:
    _admin(client, "admin@acme.test")
    wizard = Wizard(client, "okta")
    _first_steps(wizard)
    with app.app_context():
        progress = db.session.scalar(select(WizardProgress).where(WizardProgress.organization_id == orgs[ACME]))
        progress.steps_hash = "0" * 64
        db.session.commit()
    response = client.get("/admin/sso/okta/wizard/")
    assert response.headers["Location"].endswith("/wizard/prerequisites")


def test_admin_portal_link(app: Flask, client: FlaskClient, orgs: dict[str, str]) -> None:
    _admin(client, "admin@acme.test")
    wizard = Wizard(client, "okta")
    wizard.start()
    page = client.post("/admin/sso/okta/portal-link", data={"intent": "dsync", "csrf_token": wizard.token})
    assert page.status_code == 200
    assert "/portal/" in page.get_data(as_text=True)
    bad = client.post("/admin/sso/okta/portal-link", data={"intent": "billing", "csrf_token": wizard.token})
    assert bad.status_code == 400
    with app.app_context():
        assert db.session.scalar(select(AuditEvent).where(AuditEvent.action == "sso.admin_portal_link")) is not None


def test_test_login_reports_missing_groups_with_advice(app: Flask, client: FlaskClient,
                                                      orgs: dict[str, str]) -> None:
    _admin(client, "admin@acme.test")
    wizard = Wizard(client, "okta")
    _first_steps(wizard)
    wizard.post("metadata", {"source": "url", "metadata_url": OKTA_URL})
    wizard.post("role-mapping", mapping_form([("Ops", "Ops Team", "admin")], default_role="none"))
    result = wizard.test_login("admin@acme.test").get_data(as_text=True)
    assert "unmapped_groups" in result
    assert "case-sensitive" in result  # Okta-specific advice
    assert "no access" in result
    refused = wizard.post("test-login", {"action": "next"})
    assert refused.status_code == 422


def test_guide_page(client: FlaskClient, orgs: dict[str, str]) -> None:
    _admin(client, "admin@acme.test")
    Wizard(client, "azure").start()
    page = client.get("/admin/sso/idp/azure/guide").get_data(as_text=True)
    assert "Reply URL (Assertion Consumer Service URL)" in page
    assert "/sso/saml/acs/" in page
