"""Wizards that recover (issue 15, item 1) and groups picked, not typed (item 2), with the test client against the
real emulator: the connection deleted at WorkOS mid-setup, the organization's existing connection offered for
editing, a new connection unused for sign-in until a test sign-in through it passed, a confirmed reset that forgets
the connection, and the role-mapping step resolved against the synced groups."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from hatidata_auth.causes import Cause
from hatidata_auth.extensions import db
from hatidata_auth.idp import get_registry
from hatidata_auth.models import AuditEvent, Organization, RoleMapping, WizardProgress
from hatidata_auth.services import sso_setup
from tests.auth_support import ACME, GLOBEX, login, sync_organizations
from tests.sso_wizard_support import ENTRA_GROUPS, Wizard, mapping_form, resync_directory
from tests.support.servers import EmulatorControl

OKTA_URL = "https://acme.okta.com/app/exkaell8gidiiUWrg5d7/sso/saml/metadata"
ACME_CONNECTION = "conn_01HTDQ8C100000000000000001"
ATTRS = {f"attr_{f}": "yes" for f in ("idp_id", "email", "first_name", "last_name")}
PRESET = [("HatiData Admins", "HatiData Admins", "admin"), ("HatiData Viewers", "HatiData Viewers", "viewer")]


@pytest.fixture
def orgs(app: Flask) -> dict[str, str]:
    return sync_organizations(app)


def _to_metadata(client: FlaskClient, plugin: str = "okta", admin: str = "admin@acme.test") -> Wizard:
    assert login(client, admin).status_code == 302
    wizard = Wizard(client, plugin)
    assert wizard.start().status_code == 302
    assert wizard.post("prerequisites", {"confirm": "yes", "protocol": "saml"}).status_code == 302
    assert wizard.post("console", {"confirm": "yes"}).status_code == 302
    assert wizard.post("attributes", ATTRS).status_code == 302
    return wizard


def _progress(app: Flask, org_id: str) -> dict[str, Any]:
    with app.app_context():
        row = db.session.scalar(select(WizardProgress).where(WizardProgress.organization_id == org_id))
        return {"data": dict(row.data), "current": row.current_step, "completed": list(row.completed_steps)}


def _org(app: Flask, org_id: str) -> Organization:
    with app.app_context():
        org = db.session.get(Organization, org_id)
        db.session.expunge(org)
        return org


def _actions(app: Flask, org_id: str) -> list[tuple[str, str | None, dict[str, Any]]]:
    with app.app_context():
        rows = db.session.scalars(select(AuditEvent).where(AuditEvent.organization_id == org_id)
                                  .order_by(AuditEvent.seq)).all()
        return [(r.action, r.target_id, dict(r.details or {})) for r in rows]


def _connections_at_workos(emulator: Any, workos_org: str) -> set[str]:
    return {c["id"] for c in emulator.emulator.store.connections.values() if c["organization_id"] == workos_org}


def _finish(wizard: Wizard, user: str = "admin@acme.test") -> None:
    assert wizard.post("role-mapping", mapping_form(PRESET)).status_code == 302
    page = wizard.test_login(user).get_data(as_text=True)
    assert "<strong>admin</strong>" in page
    assert wizard.post("test-login", {"action": "next"}).status_code == 302
    assert wizard.post("directory", {"action": "next"}).status_code == 302
    done = wizard.post("activate", {"enforce_sso": "yes"})
    assert done.status_code == 302, done.get_data(as_text=True)[:1500]


def test_existing_active_connection_is_offered_for_editing(app: Flask, client: FlaskClient, emulator: Any,
                                                           orgs: dict[str, str]) -> None:
    wizard = _to_metadata(client)
    before = _connections_at_workos(emulator, ACME)
    page = wizard.get("metadata").get_data(as_text=True)
    assert "already has an active OktaSAML connection" in page
    assert ACME_CONNECTION in page
    assert wizard.post("metadata", {"source": "url", "metadata_url": OKTA_URL}).status_code == 302
    assert _connections_at_workos(emulator, ACME) == before  # no second connection
    assert _progress(app, orgs[ACME])["data"]["connection_id"] == ACME_CONNECTION
    stored = emulator.emulator.store.connections[ACME_CONNECTION]["_options"]
    assert OKTA_URL in str(stored)
    assert ("sso.connection.updated", ACME_CONNECTION) in [(a, t) for a, t, _ in _actions(app, orgs[ACME])]


def test_new_connection_is_not_used_for_sign_in_until_tested(app: Flask, client: FlaskClient, emulator: Any,
                                                             orgs: dict[str, str]) -> None:
    wizard = _to_metadata(client)
    before = _connections_at_workos(emulator, ACME)
    assert wizard.post("metadata", {"source": "url", "metadata_url": OKTA_URL,
                                    "connection_choice": "new"}).status_code == 302
    (new,) = _connections_at_workos(emulator, ACME) - before
    org = _org(app, orgs[ACME])
    assert (org.connection_id, org.idp_plugin) == (ACME_CONNECTION, None)  # sign-in still uses the old one
    assert "is not used for sign-in until a test sign-in" in wizard.get("role-mapping").get_data(as_text=True)
    with app.app_context():  # the service refuses an untested connection whatever the caller
        org_row = db.session.get(Organization, orgs[ACME])
        plugin = get_registry(app).get("okta")
        assert plugin is not None
        with pytest.raises(sso_setup.SetupError, match="test sign-in"):
            sso_setup.activate(db.session(), app.extensions["hatidata_workos"].client, org_row, plugin, new,
                               False, True, Cause.system("test"))
        db.session.rollback()
    assert wizard.post("test-login", {"action": "next"}).status_code == 409  # not reached before the mapping
    _finish(wizard)
    org = _org(app, orgs[ACME])
    assert (org.connection_id, org.idp_plugin, org.sso_enforced) == (new, "okta", True)
    activated = [d for a, t, d in _actions(app, orgs[ACME]) if a == "sso.activated"]
    assert activated[-1]["replaced_connection_id"] == ACME_CONNECTION


@pytest.mark.parametrize("how", ["control_api", "workos_api"])
def test_connection_deleted_mid_setup_recovers(app: Flask, client: FlaskClient, emulator: Any,
                                               orgs: dict[str, str], how: str) -> None:
    wizard = _to_metadata(client)
    assert wizard.post("metadata", {"source": "url", "metadata_url": OKTA_URL,
                                    "connection_choice": "new"}).status_code == 302
    gone = _progress(app, orgs[ACME])["data"]["connection_id"]
    assert wizard.post("role-mapping", mapping_form(PRESET)).status_code == 302
    if how == "control_api":
        EmulatorControl(emulator.url).ctl("DELETE", f"/connections/{gone}")
    else:
        with app.app_context():
            app.extensions["hatidata_workos"].client.sso.delete_connection(gone)

    moved = client.get(wizard.url("test-login"))
    assert moved.status_code == 302  # the metadata step is open again
    assert moved.headers["Location"].endswith("/wizard/metadata")
    page = wizard.get("metadata").get_data(as_text=True)
    assert f"The WorkOS connection <code>{gone}</code> no longer exists" in page
    assert "Connected:" not in page
    progress = _progress(app, orgs[ACME])
    assert "connection_id" not in progress["data"] or progress["data"]["connection_id"] is None
    assert ("sso_wizard.connection_gone", gone) in [(a, t) for a, t, _ in _actions(app, orgs[ACME])]

    assert wizard.post("metadata", {"source": "url", "metadata_url": OKTA_URL,
                                    "connection_choice": "new"}).status_code == 302
    fresh = _progress(app, orgs[ACME])["data"]["connection_id"]
    assert fresh
    assert fresh != gone
    assert "no longer exists" not in wizard.get("role-mapping").get_data(as_text=True)
    _finish(wizard)
    assert _org(app, orgs[ACME]).connection_id == fresh


def test_the_organizations_own_connection_deleted_is_marked_and_not_offered(
        app: Flask, client: FlaskClient, emulator: Any, orgs: dict[str, str]) -> None:
    wizard = _to_metadata(client)
    assert wizard.post("metadata", {"source": "url", "metadata_url": OKTA_URL}).status_code == 302
    EmulatorControl(emulator.url).ctl("DELETE", f"/connections/{ACME_CONNECTION}")
    page = wizard.get("metadata").get_data(as_text=True)
    assert "no longer exists" in page
    assert "already has an active" not in page
    assert _org(app, orgs[ACME]).connection_state == "deleted"
    assert wizard.post("metadata", {"source": "url", "metadata_url": OKTA_URL}).status_code == 302
    assert _progress(app, orgs[ACME])["data"]["connection_id"] not in (None, ACME_CONNECTION)


def test_reset_asks_first_and_forgets_the_connection(app: Flask, client: FlaskClient, orgs: dict[str, str]) -> None:
    wizard = _to_metadata(client)
    assert wizard.post("metadata", {"source": "url", "metadata_url": OKTA_URL,
                                    "connection_choice": "new"}).status_code == 302
    created = _progress(app, orgs[ACME])["data"]["connection_id"]
    ask = client.get("/admin/sso/okta/wizard/reset")
    assert ask.status_code == 200
    assert "Start the Okta setup over?" in ask.get_data(as_text=True)
    unconfirmed = client.post("/admin/sso/okta/wizard/reset", data={"csrf_token": wizard.token})
    assert unconfirmed.status_code == 422
    assert _progress(app, orgs[ACME])["data"]["connection_id"] == created
    done = client.post("/admin/sso/okta/wizard/reset", data={"csrf_token": wizard.token, "confirm": "yes"})
    assert done.status_code == 302
    assert done.headers["Location"].endswith("/wizard/prerequisites")
    assert "was started over" in client.get(done.headers["Location"]).get_data(as_text=True)
    progress = _progress(app, orgs[ACME])
    assert progress["data"].get("connection_id") is None
    assert progress["current"] == "prerequisites"
    resets = [d for a, _, d in _actions(app, orgs[ACME]) if a == "sso_wizard.reset"]
    assert resets[-1]["forgotten_connection_id"] == created


def test_groups_are_picked_from_the_synced_directory(app: Flask, client: FlaskClient, orgs: dict[str, str]) -> None:
    resync_directory(app, orgs[GLOBEX])
    wizard = _to_metadata(client, "azure", "admin@globex.test")
    url = ("https://login.microsoftonline.com/9c2f6d41-6a7e-4c1b-8b4e-3f0a5c7d2e19/federationmetadata/2007-06/"
           "federationmetadata.xml?appid=2a1f6b0e-3c4d-4e5f-8a9b-0c1d2e3f4a5b")
    assert wizard.post("metadata", {"source": "url", "metadata_url": url}).status_code == 302
    page = wizard.get("role-mapping").get_data(as_text=True)
    for role, guid in ENTRA_GROUPS.items():
        name = f"HatiData {role.capitalize()}s"
        assert f"<td data-label=\"Group\">{name}</td><td data-label=\"Object ID\"><code>{guid}</code>" in page
        # Entra's preset is resolved: each row's select has the object id of the synced group of that name.
        assert f'<option value="{guid}" selected>{name} ({guid})</option>' in page
    rows = {f"rows-{i}-group": ENTRA_GROUPS[role] for i, role in enumerate(("admin", "developer", "viewer"))}
    picked = mapping_form([("Admins", "", "admin"), ("Developers", "", "developer"), ("Viewers", "", "viewer")])
    assert wizard.post("role-mapping", {**picked, **rows}).status_code == 302
    with app.app_context():
        saved = db.session.scalars(select(RoleMapping).where(RoleMapping.organization_id == orgs[GLOBEX])).all()
        assert {(m.group_identifier, m.role) for m in saved} == {(g, r) for r, g in ENTRA_GROUPS.items()}


def test_a_group_matching_no_synced_group_is_flagged_by_name(app: Flask, client: FlaskClient,
                                                             orgs: dict[str, str]) -> None:
    resync_directory(app, orgs[ACME])
    wizard = _to_metadata(client)
    assert wizard.post("metadata", {"source": "url", "metadata_url": OKTA_URL}).status_code == 302
    # The admins' row keeps an admin (the last-admin guard refuses mappings that leave none).
    typo = mapping_form([("Admins", "HatiData Admins", "admin"), ("Viewers", "HatiData Viewerz", "viewer")])
    flagged = wizard.post("role-mapping", typo)
    assert flagged.status_code == 422
    html = flagged.get_data(as_text=True)
    assert "“HatiData Viewerz” matches no synced group. Did you mean “HatiData Viewers”?" in html
    with app.app_context():
        assert db.session.scalar(select(RoleMapping).where(RoleMapping.organization_id == orgs[ACME])) is None
    preview = wizard.post("role-mapping", {**typo, "action": "preview"})
    assert preview.status_code == 200
    assert "matches no synced group" in preview.get_data(as_text=True)
    assert wizard.post("role-mapping", {**typo, "accept_unmatched": "yes"}).status_code == 302


def test_without_a_synced_directory_groups_are_typed(app: Flask, client: FlaskClient, orgs: dict[str, str]) -> None:
    wizard = _to_metadata(client)
    assert wizard.post("metadata", {"source": "url", "metadata_url": OKTA_URL}).status_code == 302
    page = wizard.get("role-mapping").get_data(as_text=True)
    assert "No directory is synced yet" in page
    assert 'name="rows-0-group"' not in page
    assert wizard.post("role-mapping", mapping_form([("Ops", "Ops Team", "admin")])).status_code == 302


def test_workos_activation_event_does_not_adopt_a_connection_in_setup(app: Flask, client: FlaskClient,
                                                                      webhooks: EmulatorControl,
                                                                      orgs: dict[str, str]) -> None:
    wizard = _to_metadata(client)
    assert wizard.post("metadata", {"source": "url", "metadata_url": OKTA_URL,
                                    "connection_choice": "new"}).status_code == 302
    new = _progress(app, orgs[ACME])["data"]["connection_id"]
    webhooks.flush()  # WorkOS's connection.activated for the new connection, delivered and applied
    assert any(e["event"] == "connection.activated" and e["data"]["id"] == new for e in webhooks.events())
    assert _org(app, orgs[ACME]).connection_id == ACME_CONNECTION
    _finish(wizard)
    webhooks.flush()
    assert _org(app, orgs[ACME]).connection_id == new


def test_workos_unreachable_changes_nothing_and_says_so(app: Flask, client: FlaskClient, emulator: Any,
                                                        orgs: dict[str, str]) -> None:
    wizard = _to_metadata(client)
    assert wizard.post("metadata", {"source": "url", "metadata_url": OKTA_URL,
                                    "connection_choice": "new"}).status_code == 302
    stored = _progress(app, orgs[ACME])["data"]["connection_id"]
    control = EmulatorControl(emulator.url)
    control.ctl("POST", "/faults", {"method": "GET", "path": f"/connections/{stored}", "status": 503, "count": 50})
    page = wizard.get("role-mapping").get_data(as_text=True)
    assert "WorkOS could not be reached to check the connection" in page
    assert _progress(app, orgs[ACME])["data"]["connection_id"] == stored
    assert "sso_wizard.connection_gone" not in [a for a, _, _ in _actions(app, orgs[ACME])]
