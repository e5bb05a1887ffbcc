"""The "not used until tested" rule (docs/plugins.md) over every writer of ``Organization.connection_id`` other than
the wizard's activation: mirroring from WorkOS (``sync-organizations``, seeding, tenant creation) and WorkOS's
``connection.*`` events. Only an organization with no connection at all adopts a connection, and only an active one
no wizard of ours created; a wizard's created ids survive "Start over". The wizard's own path (a tested activation,
a reset, two metadata submits at once) is in ``tests/test_breakit15.py``."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select
from workos.sso import CreateProtocolOptionsSAML
from workos.sso.models import CreateConnectionSAMLOptions

from hatidata_auth.causes import Actor, Cause
from hatidata_auth.extensions import db
from hatidata_auth.idp import get_registry
from hatidata_auth.models import Organization
from hatidata_auth.services import sso_setup
from hatidata_auth.services.organizations import CREATED_CONNECTIONS, may_adopt, wizard_connection_ids
from hatidata_auth.sso_wizard import wizard
from tests.auth_support import ACME, sync_organizations
from tests.support.dsync import deliver
from tests.support.servers import EmulatorControl

OKTA_URL = "https://acme.okta.com/app/exkaell8gidiiUWrg5d7/sso/saml/metadata"
ACME_CONNECTION = "conn_01HTDQ8C100000000000000001"
WRITERS = ["sync", "event"]


def _apply(writer: str, app: Flask, request: pytest.FixtureRequest) -> None:
    """Let one writer other than the wizard see what WorkOS holds now."""
    if writer == "sync":
        sync_organizations(app)  # what `hatidata-auth sync-organizations` runs
    else:
        request.getfixturevalue("webhooks").flush()  # WorkOS's connection.* events, delivered and applied


def _outside_connection(workos_client: Any, workos_org: str) -> str:
    """A connection set up at WorkOS outside this app (the dashboard, another tool): active at once."""
    return str(workos_client.sso.create_connection(
        organization_id=workos_org, name="Set up elsewhere", connection_type="OktaSAML",
        protocol_options=CreateProtocolOptionsSAML(CreateConnectionSAMLOptions(idp_metadata_url=OKTA_URL))).id)


def _org(app: Flask, workos_org: str) -> Organization:
    with app.app_context():
        org = db.session.scalar(select(Organization).where(Organization.workos_organization_id == workos_org))
        assert org is not None
        db.session.expunge(org)
        return org


def _bare_organization(app: Flask, workos_client: Any, request: pytest.FixtureRequest, writer: str) -> str:
    """A WorkOS organization with no connection, mirrored (so ours has none either); returns its WorkOS id."""
    if writer == "event":
        request.getfixturevalue("webhooks")  # registered before anything happens at WorkOS
    workos_org = str(workos_client.organizations.create_organization(name="Bare Co").id)
    sync_organizations(app)
    assert _org(app, workos_org).connection_id is None
    return workos_org


@pytest.mark.parametrize("writer", WRITERS)
def test_an_organization_with_a_connection_never_adopts_another(writer: str, app: Flask, emulator: Any,
                                                                workos_client: Any,
                                                                request: pytest.FixtureRequest) -> None:
    # Its connection deleted at WorkOS still counts as one: only a tested wizard activation replaces it.
    if writer == "event":
        request.getfixturevalue("webhooks")
    sync_organizations(app)
    control = EmulatorControl(emulator.url)
    control.ctl("DELETE", f"/connections/{ACME_CONNECTION}")
    other = _outside_connection(workos_client, ACME)
    _apply(writer, app, request)
    org = _org(app, ACME)
    assert (org.connection_id, org.connection_state) == (ACME_CONNECTION, "deleted"), f"{other} was adopted"


@pytest.mark.parametrize("writer", WRITERS)
def test_an_organization_without_a_connection_adopts_an_active_one_set_up_elsewhere(
        writer: str, app: Flask, workos_client: Any, request: pytest.FixtureRequest) -> None:
    workos_org = _bare_organization(app, workos_client, request, writer)
    made = _outside_connection(workos_client, workos_org)
    _apply(writer, app, request)
    org = _org(app, workos_org)
    assert (org.connection_id, org.connection_state) == (made, "active")


def test_an_inactive_connection_is_never_adopted_by_a_sync(app: Flask, emulator: Any, workos_client: Any,
                                                            request: pytest.FixtureRequest) -> None:
    workos_org = _bare_organization(app, workos_client, request, "sync")
    made = _outside_connection(workos_client, workos_org)
    EmulatorControl(emulator.url).ctl("POST", f"/connections/{made}/deactivate")
    sync_organizations(app)
    assert _org(app, workos_org).connection_id is None


@pytest.mark.parametrize("event_type", ["connection.deactivated", "connection.deleted"])
def test_an_event_other_than_activated_never_adopts(event_type: str, app: Flask, workos_client: Any,
                                                    request: pytest.FixtureRequest) -> None:
    workos_org = _bare_organization(app, workos_client, request, "sync")
    state = "inactive" if event_type == "connection.deactivated" else "active"
    event = {"id": f"event_RULE_{event_type}", "event": event_type, "created_at": "2030-01-02T00:00:00.000Z",
             "data": {"object": "connection", "id": "conn_RULE_ELSEWHERE", "organization_id": workos_org,
                      "state": state, "name": "Elsewhere", "connection_type": "OktaSAML", "external_key": "k",
                      "status": "unlinked", "domains": [], "created_at": "2030-01-01T00:00:00.000Z",
                      "updated_at": "2030-01-02T00:00:00.000Z"}}
    assert deliver(app.test_client(), app, event) in ("ignored", "applied")  # applied: its alerts, not its state
    assert _org(app, workos_org).connection_id is None


@pytest.mark.parametrize("writer", WRITERS)
def test_a_connection_a_reset_wizard_created_is_never_adopted(writer: str, app: Flask, workos_client: Any,
                                                              request: pytest.FixtureRequest) -> None:
    workos_org = _bare_organization(app, workos_client, request, writer)
    plugin = get_registry(app).get("okta")
    cause = Cause.by(Actor.system("test"))
    with app.app_context():
        org = db.session.scalar(select(Organization).where(Organization.workos_organization_id == workos_org))
        assert org is not None
        progress = wizard.start(db.session, org.id, plugin, cause)
        sp = sso_setup.sp_values("https://auth.example.test", str(progress.data["sp_key"]))
        made = sso_setup.save_connection(db.session, workos_client, org, plugin, "saml", sp, cause,
                                         metadata_url=OKTA_URL)
        # What the metadata step stores (sso_wizard.steps.handle_metadata), then "Start over".
        wizard.update_data(progress, {"connection_id": made.connection_id, CREATED_CONNECTIONS: [made.connection_id]})
        wizard.reset(db.session, plugin, progress, cause)
        db.session.commit()
        assert progress.data.get("connection_id") is None
        assert wizard_connection_ids(db.session, org.id) == {made.connection_id}
    _apply(writer, app, request)
    assert _org(app, workos_org).connection_id is None, f"untested {made.connection_id} became the sign-in connection"


@pytest.mark.parametrize(("current", "wizard_made", "state"),
                         list(itertools.product([None, "conn_theirs"], [False, True],
                                                ["active", "inactive", "deleted"])))
def test_may_adopt_is_the_rule(current: str | None, wizard_made: bool, state: str) -> None:
    ours = {"conn_new"} if wizard_made else {"conn_other"}
    expected = current is None and not wizard_made and state == "active"
    assert may_adopt(current, "conn_new", state, ours) is expected


def test_start_over_during_a_metadata_submit_keeps_the_created_connection_known(
        app: Flask, emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # The other writer of the wizard's data at the same time: it waits for the submit's lock and then keeps the id
    # the submit stored, instead of writing back the data it read before (which would forget the connection).
    import threading
    import time

    from tests.test_sso_wizard_recovery import _to_metadata

    orgs = sync_organizations(app)
    submitter, resetter = _to_metadata(app.test_client()), _to_metadata(app.test_client())
    resetter.get("metadata")
    creating = threading.Event()
    original = sso_setup.save_connection

    def slow(*args: Any, **kwargs: Any) -> Any:
        creating.set()
        time.sleep(0.5)  # the reset's request arrives while the connection is being created
        return original(*args, **kwargs)

    monkeypatch.setattr(sso_setup, "save_connection", slow)
    answers: dict[str, int] = {}

    def submit() -> None:
        answers["submit"] = submitter.post("metadata", {"source": "url", "metadata_url": OKTA_URL,
                                                        "connection_choice": "new"}).status_code

    def reset() -> None:
        assert creating.wait(30)
        answers["reset"] = resetter.client.post("/admin/sso/okta/wizard/reset",
                                                data={"csrf_token": resetter.token, "confirm": "yes"}).status_code

    threads = [threading.Thread(target=submit), threading.Thread(target=reset)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert answers == {"submit": 302, "reset": 302}
    created = {c["id"] for c in emulator.emulator.store.connections.values() if c["organization_id"] == ACME} \
        - {ACME_CONNECTION}
    assert len(created) == 1
    with app.app_context():
        assert wizard_connection_ids(db.session, orgs[ACME]) == created
