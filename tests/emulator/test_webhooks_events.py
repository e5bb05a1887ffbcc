"""Webhook delivery (signature, retries, duplicates, reorder), Events API cursors, control API dsync events."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from workos import WorkOSClient

from workos_emulator.testing import EmulatorServer

from .conftest import (
    ACME,
    ACME_ADMIN_DU,
    ACME_ADMINS,
    ACME_CONN,
    ACME_DEV_DU,
    ACME_DIR,
    GLOBEX,
    GLOBEX_CONN,
    Receiver,
)

SECRET = "whsec_test_secret_value"


def _register(http: httpx2.Client, receiver: Receiver, events: list[str] | None = None) -> None:
    resp = http.post("/_emulator/webhook_endpoints",
                     json={"endpoint_url": receiver.url, "secret": SECRET, "events": events or []})
    assert resp.status_code in (200, 201), resp.text


def _flush(http: httpx2.Client) -> dict[str, Any]:
    resp = http.post("/_emulator/webhooks/flush", params={"timeout": 10})
    assert resp.status_code == 200
    return resp.json()


def _create_user(http: httpx2.Client, email: str, groups: list[str] | None = None) -> dict[str, Any]:
    resp = http.post(f"/_emulator/directories/{ACME_DIR}/users",
                     json={"email": email, "first_name": "T", "last_name": "User", "groups": groups or []})
    assert resp.status_code == 201, resp.text
    return resp.json()


def test_signature_verifies_with_sdk(http: httpx2.Client, receiver: Receiver, workos: WorkOSClient) -> None:
    _register(http, receiver)
    _create_user(http, "hooked@acme.test", ["HatiData Viewers"])
    assert _flush(http)["drained"]
    assert len(receiver.requests) == 2
    types = []
    for req in receiver.requests:
        assert ", v1=" in req["signature"]
        assert req["signature"].startswith("t=")
        event = workos.webhooks.verify_event(event_body=req["body"], event_signature=req["signature"],
                                             secret=SECRET)
        types.append(event.event)
    assert types == ["dsync.user.created", "dsync.group.user_added"]
    with pytest.raises(ValueError, match="Signature hash"):
        workos.webhooks.verify_event(event_body=receiver.requests[0]["body"],
                                     event_signature=receiver.requests[0]["signature"], secret="wrong")


def test_retries_on_500(http: httpx2.Client, receiver: Receiver) -> None:
    receiver.fail_first = 2
    _register(http, receiver)
    _create_user(http, "retry@acme.test")
    assert _flush(http)["drained"]
    assert [r["status"] for r in receiver.requests] == [500, 500, 200]
    deliveries = http.get("/_emulator/webhook_deliveries").json()["data"]
    assert deliveries[0]["status"] == "delivered"
    assert deliveries[0]["attempts"] == 3


def test_gives_up_after_max_attempts(http: httpx2.Client, receiver: Receiver) -> None:
    receiver.fail_first = 100
    _register(http, receiver)
    _create_user(http, "fail@acme.test")
    _flush(http)
    assert len(receiver.requests) == 4  # webhook_max_attempts=4 in the fixture
    assert http.get("/_emulator/webhook_deliveries", params={"status": "failed"}).json()["data"]


def test_duplicates_and_reorder(http: httpx2.Client, receiver: Receiver) -> None:
    _register(http, receiver)
    assert http.put("/_emulator/settings/webhooks", json={"duplicate_rate": 1.0}).status_code == 200
    _create_user(http, "dup@acme.test")
    _flush(http)
    ids = [b["id"] for b in receiver.bodies()]
    assert len(ids) == 2
    assert ids[0] == ids[1]
    receiver.requests.clear()
    http.put("/_emulator/settings/webhooks", json={"duplicate_rate": 0.0, "reorder": True, "reorder_window": 30})
    for i in range(25):
        _create_user(http, f"r{i}@acme.test")
    _flush(http)
    ids = [b["id"] for b in receiver.bodies()]
    assert len(ids) == 25
    assert sorted(ids) == sorted(set(ids))
    assert ids != sorted(ids)  # shuffled (25! permutations: practically never sorted)


def test_pause_and_invalid_settings(http: httpx2.Client, receiver: Receiver) -> None:
    _register(http, receiver)
    http.put("/_emulator/settings/webhooks", json={"paused": True})
    _create_user(http, "paused@acme.test")
    assert _flush(http)["drained"] is False
    assert receiver.requests == []
    http.put("/_emulator/settings/webhooks", json={"paused": False})
    assert _flush(http)["drained"]
    assert len(receiver.requests) == 1
    bad = http.put("/_emulator/settings/webhooks", json={"duplicate_rate": 3})
    assert bad.status_code == 422
    assert bad.json()["code"] == "invalid_request_parameters"


def test_endpoint_event_filter(http: httpx2.Client, receiver: Receiver) -> None:
    _register(http, receiver, ["dsync.group.*"])
    _create_user(http, "filter@acme.test", ["HatiData Admins"])
    _flush(http)
    assert [b["event"] for b in receiver.bodies()] == ["dsync.group.user_added"]


def test_control_api_emits_every_dsync_event(http: httpx2.Client, workos: WorkOSClient) -> None:
    group = http.post(f"/_emulator/directories/{ACME_DIR}/groups", json={"name": "Temp"}).json()
    user = _create_user(http, "all@acme.test", [group["id"]])
    assert http.patch(f"/_emulator/directory_users/{user['id']}",
                      json={"email": "all2@acme.test", "groups": [ACME_ADMINS]}).status_code == 200
    assert http.post(f"/_emulator/directory_users/{user['id']}/suspend").json()["state"] == "suspended"
    assert http.post(f"/_emulator/directory_users/{user['id']}/deactivate").json()["state"] == "inactive"
    assert http.post(f"/_emulator/directory_users/{user['id']}/reactivate").json()["state"] == "active"
    assert http.patch(f"/_emulator/directory_groups/{group['id']}", json={"name": "Temp 2"}).status_code == 200
    assert http.post(f"/_emulator/directory_groups/{group['id']}/members/{user['id']}").json()["added"]
    assert http.delete(f"/_emulator/directory_groups/{group['id']}/members/{user['id']}").json()["removed"]
    assert http.delete(f"/_emulator/directory_groups/{group['id']}").status_code == 204
    assert http.delete(f"/_emulator/directory_users/{user['id']}").status_code == 204
    assert http.post(f"/_emulator/directories/{ACME_DIR}/activate").status_code == 200
    assert http.post(f"/_emulator/connections/{ACME_CONN}/deactivate").status_code == 200
    assert http.post(f"/_emulator/connections/{ACME_CONN}/activate").status_code == 200
    for kind in ("renewal_required", "renewed"):
        assert http.post(f"/_emulator/connections/{ACME_CONN}/certificate", json={"kind": kind}).status_code == 201
    assert http.patch(f"/_emulator/organizations/{ACME}", json={"name": "Acme Corporation"}).status_code == 200
    assert http.delete(f"/_emulator/connections/{ACME_CONN}").status_code == 204
    assert http.delete(f"/_emulator/directories/{ACME_DIR}").status_code == 204
    wanted = {
        "dsync.group.created", "dsync.user.created", "dsync.group.user_added", "dsync.user.updated",
        "dsync.group.user_removed", "dsync.group.updated", "dsync.group.deleted", "dsync.user.deleted",
        "dsync.activated", "dsync.deleted", "connection.deactivated", "connection.activated",
        "connection.saml_certificate_renewal_required", "connection.saml_certificate_renewed",
        "organization.updated", "connection.deleted",
    }
    events = list(workos.events.list_events(events=sorted(wanted), order="asc", limit=100).auto_paging_iter())
    types = [e.event for e in events]
    assert set(types) == wanted
    assert all(type(e).__name__ != "EventSchemaUnknown" for e in events)
    updated = [e for e in events if e.event == "dsync.user.updated"]
    assert updated[0].data.email == "all2@acme.test"
    # As WorkOS documents it: changed root attributes (emails too) and only the changed raw/custom keys.
    old_emails = [{"primary": True, "type": "work", "value": "all@acme.test"}]
    assert updated[0].data.previous_attributes == {"email": "all@acme.test", "emails": old_emails,
                                                   "raw_attributes": {"emails": old_emails}}
    added = next(e for e in events if e.event == "dsync.group.user_added")
    assert added.data.directory_id == ACME_DIR
    assert added.data.group.name == "Temp"


def test_directory_managed_role_follows_groups(http: httpx2.Client, workos: WorkOSClient) -> None:
    http.post(f"/_emulator/directory_groups/{ACME_ADMINS}/members/{ACME_DEV_DU}")
    ms = workos.organization_membership.list_organization_memberships(organization_id=ACME, limit=100)
    dev = next(m for m in ms.data if m.user.email == "dev@acme.test")
    assert dev.role.slug == "admin"
    http.post(f"/_emulator/directory_users/{ACME_ADMIN_DU}/deactivate")
    ms = workos.organization_membership.list_organization_memberships(organization_id=ACME, limit=100)
    assert all(m.user.email != "admin@acme.test" for m in ms.data)  # active ones only, unless asked (WorkOS's rule)
    ms = workos.organization_membership.list_organization_memberships(organization_id=ACME, limit=100,
                                                                      statuses=["inactive"])
    assert next(m for m in ms.data if m.user.email == "admin@acme.test").status.value == "inactive"


def test_events_cursor_semantics(http: httpx2.Client, workos: WorkOSClient) -> None:
    ids = [workos.organizations.create_organization(name=f"E{i}").id for i in range(5)]
    workos.organizations.update_organization(ids[0], name="E0 renamed")
    asc = workos.events.list_events(events=["organization.created"], order="asc", limit=2)
    assert [e.data.id for e in asc.data] == ids[:2]
    assert asc.list_metadata.after == asc.data[-1].id
    nxt = workos.events.list_events(events=["organization.created"], order="asc", limit=10,
                                    after=asc.list_metadata.after)
    assert [e.data.id for e in nxt.data] == ids[2:]
    assert nxt.list_metadata.after is None
    desc = workos.events.list_events(events=["organization.created"], limit=2)
    assert [e.data.id for e in desc.data] == ids[::-1][:2]
    before = workos.events.list_events(events=["organization.created"], order="asc", before=nxt.data[0].id)
    assert [e.data.id for e in before.data] == ids[:2]
    both = workos.events.list_events(events=["organization.created", "organization.updated"], order="asc",
                                     limit=100)
    assert [e.event for e in both.data][-1] == "organization.updated"
    caught_up = workos.events.list_events(events=["organization.created"], order="asc", after=both.data[-1].id)
    assert caught_up.data == []
    assert caught_up.list_metadata.after is None
    start = both.data[2].created_at.isoformat()
    ranged = workos.events.list_events(events=["organization.created"], order="asc", range_start=start)
    assert ranged.data[0].id >= both.data[2].id
    by_org = workos.events.list_events(events=["organization.created", "organization.updated"],
                                       organization_id=ids[0], order="asc")
    assert [e.event for e in by_org.data] == ["organization.created", "organization.updated"]
    assert workos.events.list_events(events=["organization.created"], organization_id=GLOBEX).data == []
    # Spec 0.61.0: `events` is optional; without it every type is listed (an empty `events=` stays a 422).
    unfiltered = http.get("/events", params={"order": "asc", "limit": 100})
    assert unfiltered.status_code == 200
    assert {"organization.created", "organization.updated"} <= {e["event"] for e in unfiltered.json()["data"]}
    empty = http.get("/events", params={"events": ""})
    assert empty.status_code == 422
    assert empty.json()["errors"][0]["field"] == "events"


def test_bulk_create(http: httpx2.Client, workos: WorkOSClient) -> None:
    groups = [{"name": f"G{i}"} for i in range(20)]
    users = [{"email": f"u{i}@acme.test", "groups": [f"G{i % 20}"]} for i in range(500)]
    resp = http.post(f"/_emulator/directories/{ACME_DIR}/bulk",
                     json={"groups": groups, "users": users, "emit_events": False})
    assert resp.status_code == 201
    assert len(resp.json()["users"]) == 500
    page = workos.directory_sync.list_users(directory=ACME_DIR, limit=100)
    assert len(page.data) == 100
    assert page.list_metadata.after


def test_reset_restores_seed(emu: EmulatorServer, http: httpx2.Client, workos: WorkOSClient) -> None:
    workos.organizations.create_organization(name="Temp")
    assert http.post("/_emulator/reset").status_code == 200
    assert len(workos.organizations.list_organizations(limit=100).data) == 5  # the demo seed: 4 with SSO + Hooli


GLOB_PATTERNS = st.builds(
    lambda head, glob, tail: f"{head}{glob}{tail}",
    st.sampled_from(["", "dsync.", "dsync.user.", "authentication.", "connection.saml_", "organization"]),
    st.sampled_from(["*", "?", "[a-z]", "**", ".*", "*.*"]),
    st.sampled_from(["", "created", ".deleted", "_succeeded"]),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pattern=GLOB_PATTERNS, position=st.integers(0, 2))
def test_events_filter_refuses_wildcards(http: httpx2.Client, pattern: str, position: int) -> None:
    # WorkOS's GET /events takes event types (spec 0.61.0), so a pattern is refused wherever it appears in
    # the list rather than silently matching what only an emulator would match.
    types = ["connection.activated", "dsync.user.created"]
    types.insert(position, pattern)
    response = http.get("/events", params={"events": ",".join(types)})
    assert response.status_code == 422, (pattern, response.text)
    body = response.json()
    assert body["errors"] == [{"code": "invalid", "field": "events"}]
    assert body["message"]


def test_events_filter_matches_exact_types_only(http: httpx2.Client, workos: WorkOSClient) -> None:
    http.post(f"/_emulator/connections/{GLOBEX_CONN}/deactivate")
    http.post(f"/_emulator/connections/{GLOBEX_CONN}/certificate", json={"kind": "renewal_required"})
    http.post(f"/_emulator/connections/{GLOBEX_CONN}/activate")
    page = workos.events.list_events(events=["connection.activated", "connection.saml_certificate_renewed"],
                                     order="asc", limit=100)
    assert [e.event for e in page.data] == ["connection.activated"]
    # A prefix of a type is not a type: nothing matches it.
    assert workos.events.list_events(events=["connection.saml_certificate"], limit=100).data == []
