"""Directory events are bound to their source (issue #10): an event is applied only when its directory is a
live directory of its organization as WorkOS knows it, on every path events take (webhook, Events API poller,
full resync)."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from hatidata_auth.models import AuditEvent, Organization, WebhookEvent
from hatidata_auth.services import events_poller, reconcile
from hatidata_auth.services.event_source import EventSource, belongs
from tests.support.dsync import deliver, mirror_organizations
from tests.support.servers import EmulatorControl
from tests.support.sources import (
    DIRECTORY_EVENT_TYPES,
    active_members,
    directory_objects,
    directory_of,
    event,
    org_state,
    payload_for,
)


@pytest.fixture
def synced(db_session: Any, workos_client: Any) -> dict[str, Organization]:
    """The demo organizations mirrored; Globex, Initech and Umbrella's directories resynced."""
    found = mirror_organizations(db_session, workos_client)
    for domain in ("globex.test", "initech.test", "umbrella.test"):
        reconcile.full_resync(db_session, workos_client, organization_id=found[domain].id)
    return found


def _stored(db_session: Any, event_id: str) -> tuple[WebhookEvent, list[AuditEvent]]:
    db_session.expire_all()
    row = db_session.scalar(select(WebhookEvent).where(WebhookEvent.event_id == event_id))
    audits = list(db_session.scalars(select(AuditEvent).where(AuditEvent.source_event_id == event_id)))
    db_session.rollback()
    return row, audits


def _replace_directory(client: Any, app: Flask, control: EmulatorControl, org: Organization) -> tuple[
        dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """Delete the organization's directory at WorkOS, connect a new one, deliver both events; returns the old
    directory with its users and groups as they were."""
    old = directory_of(control, org.workos_organization_id)
    users, groups = directory_objects(control, old["id"])
    start = len(control.events())
    control.ctl("DELETE", f"/directories/{old['id']}")
    control.ctl("POST", f"/organizations/{org.workos_organization_id}/directories", {"name": "New HR directory"})
    for payload in control.events()[start:]:
        assert deliver(client, app, payload) == "applied", payload["event"]
    return old, users, groups


@pytest.mark.parametrize("event_type", DIRECTORY_EVENT_TYPES)
def test_an_event_naming_another_organizations_directory_is_refused(
        event_type: str, client: Any, app: Flask, db_session: Any, synced: dict[str, Organization],
        emulator_control: EmulatorControl) -> None:
    owner, claimed = synced["initech.test"], synced["umbrella.test"]
    directory = directory_of(emulator_control, owner.workos_organization_id)
    users, groups = directory_objects(emulator_control, directory["id"])
    payload = event(event_type, payload_for(event_type, directory=directory, user=users[0], group=groups[0],
                                            organization_id=claimed.workos_organization_id))
    before = [org_state(db_session, o) for o in (owner, claimed)]
    assert (deliver(client, app, payload), deliver(client, app, payload)) == ("ignored", "duplicate")
    assert [org_state(db_session, o) for o in (owner, claimed)] == before  # neither organization touched
    row, audits = _stored(db_session, payload["id"])
    assert row.status == "ignored"
    assert row.last_error == "refused: the directory belongs to another organization"
    assert [(a.action, a.organization_id, a.outcome) for a in audits] == [
        ("directory_event.refused", None, "failure")]
    details = audits[0].details
    assert details["directory_owner"] == owner.workos_organization_id
    assert details["organization_id"] == claimed.workos_organization_id
    assert all(v is None or len(str(v)) <= 96 for v in details.values())


@pytest.mark.parametrize("event_type", DIRECTORY_EVENT_TYPES)
def test_an_event_of_a_deleted_directory_is_ignored_after_a_new_directory(
        event_type: str, client: Any, app: Flask, db_session: Any, synced: dict[str, Organization],
        emulator_control: EmulatorControl) -> None:
    org = synced["globex.test"]
    assert active_members(db_session, org)
    old, users, groups = _replace_directory(client, app, emulator_control, org)
    assert active_members(db_session, org) == set()
    before = org_state(db_session, org)
    assert before["org"][0] != old["id"]  # the organization has its new directory
    # A late event still carrying the deleted id, even a newer dsync.activated (WorkOS never reuses ids).
    payload = event(event_type, payload_for(event_type, directory=old, user=users[0], group=groups[0],
                                            organization_id=org.workos_organization_id),
                    created_at="2039-01-01T00:00:00.000Z")
    assert deliver(client, app, payload) == "ignored"
    assert org_state(db_session, org) == {**before, "audit": before["audit"] + 1}
    row, audits = _stored(db_session, payload["id"])
    assert (row.status, row.last_error) == ("ignored", "directory deleted")
    assert [(a.action, a.organization_id) for a in audits] == [("directory_event.ignored", org.id)]


def test_an_event_of_a_directory_unknown_to_workos_is_refused(client: Any, app: Flask, db_session: Any,
                                                              synced: dict[str, Organization],
                                                              emulator_control: EmulatorControl) -> None:
    org = synced["initech.test"]
    directory = {**directory_of(emulator_control, org.workos_organization_id), "id": "directory_NEVERSEEN42"}
    users, groups = directory_objects(emulator_control, directory_of(emulator_control,
                                                                     org.workos_organization_id)["id"])
    before = org_state(db_session, org)
    payload = event("dsync.user.created", payload_for("dsync.user.created", directory=directory, user=users[0],
                                                      group=groups[0], organization_id=org.workos_organization_id))
    assert deliver(client, app, payload) == "ignored"
    assert org_state(db_session, org) == before
    row, _ = _stored(db_session, payload["id"])
    assert row.last_error == "refused: WorkOS knows no such directory"


def test_the_poller_ignores_a_deleted_directorys_events_it_catches_up_on(
        client: Any, app: Flask, db_session: Any, workos_client: Any, synced: dict[str, Organization],
        emulator_control: EmulatorControl) -> None:
    org = synced["umbrella.test"]
    old = directory_of(emulator_control, org.workos_organization_id)
    start = len(emulator_control.events())
    # The webhook of this creation is lost; the deletion and the new directory arrive by webhook.
    emulator_control.ctl("POST", f"/directories/{old['id']}/users",
                         {"email": "late.hire@umbrella.test", "first_name": "Late", "last_name": "Hire"})
    lost = emulator_control.events()[start]
    assert lost["event"] == "dsync.user.created"
    _replace_directory(client, app, emulator_control, org)
    result = events_poller.poll_events(db_session, workos_client)
    assert result.failed == 0
    row, audits = _stored(db_session, lost["id"])
    assert (row.source, row.status, row.last_error) == ("events_api", "ignored", "directory deleted")
    assert [a.action for a in audits] == ["directory_event.ignored"]
    assert "late.hire@umbrella.test" not in active_members(db_session, org)
    # The full resync reads the new directory only, and resurrects nothing of the old one.
    report = reconcile.full_resync(db_session, workos_client, organization_id=org.id)
    assert report.objects_refused == 0
    assert active_members(db_session, org) == set()


def test_the_resync_refuses_a_directory_workos_gives_to_another_organization(
        db_session: Any, workos_client: Any, synced: dict[str, Organization],
        emulator_control: EmulatorControl) -> None:
    owner, claimed = synced["globex.test"], synced["initech.test"]
    row = db_session.get(Organization, claimed.id)
    row.directory_id = directory_of(emulator_control, owner.workos_organization_id)["id"]  # a corrupt mirror
    db_session.commit()
    before = [org_state(db_session, o) for o in (owner, claimed)]
    report = reconcile.full_resync(db_session, workos_client, organization_id=claimed.id)
    assert report.examples == ["refused: the directory belongs to another organization"]
    assert report.differences == 0
    assert [org_state(db_session, o) for o in (owner, claimed)] == before
    refused = db_session.scalars(select(AuditEvent).where(AuditEvent.action == "directory_event.refused")).all()
    assert [(a.organization_id, a.details["directory_owner"]) for a in refused] == [
        (None, owner.workos_organization_id)]


_ids = st.text(alphabet="abcdef0123456789", min_size=1, max_size=6)


@settings(max_examples=200, deadline=None)
@given(directory=_ids, organization=_ids, object_directory=_ids, object_organization=st.one_of(st.none(), _ids))
def test_the_resync_keeps_exactly_the_listed_objects_of_its_source(directory: str, organization: str,
                                                                    object_directory: str,
                                                                    object_organization: str | None) -> None:
    source = EventSource(f"directory_{directory}", f"org_{organization}")
    data = {"id": "directory_user_x", "directory_id": f"directory_{object_directory}"}
    if object_organization is not None:
        data["organization_id"] = f"org_{object_organization}"
    expected = object_directory == directory and object_organization in (None, organization)
    assert belongs(data, source) is expected
