"""``POST /webhooks/workos``: signature, size and shape checks, the durable inbox, duplicates and replay."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from hatidata_auth.models import AuditEvent, WebhookEvent
from hatidata_auth.services import inbox_replay
from hatidata_auth.workos.webhooks import MalformedEvent, parse_event
from tests.support.dsync import (
    drain_inbox,
    inbox_status,
    member_roles,
    mirror_organizations,
    post_event,
    sign,
    snapshot,
)

ACME_DIR = "directory_01HTDQ8D100000000000000001"
ACME_ORG = "org_01HTDQ8A100000000000000001"


def user_event(event_id: str, *, state: str = "active", email: str = "new.person@acme.test",
               updated_at: str = "2030-01-01T00:00:00.000Z", event: str = "dsync.user.created") -> dict[str, Any]:
    return {
        "id": event_id, "event": event, "created_at": "2030-01-01T00:00:01.000Z",
        "data": {"object": "directory_user", "id": "directory_user_TEST1", "directory_id": ACME_DIR,
                 "organization_id": ACME_ORG, "idp_id": "00uTEST", "email": email, "first_name": "New",
                 "last_name": "Person", "state": state, "custom_attributes": {}, "raw_attributes": {},
                 "created_at": "2030-01-01T00:00:00.000Z", "updated_at": updated_at},
    }


@pytest.fixture
def orgs(db_session: Any, workos_client: Any) -> dict[str, Any]:
    return mirror_organizations(db_session, workos_client)


def test_a_signed_event_is_stored_and_applied_once(client: FlaskClient, app: Flask, db_session: Any,
                                                   orgs: dict[str, Any]) -> None:
    payload = user_event("event_T1")
    first = post_event(client, app, payload)
    assert first.status_code == 200, first.json
    assert first.json == {"event_id": "event_T1", "status": "received"}
    roles = member_roles(db_session, orgs["acme.test"].id)
    assert roles["new.person@acme.test"] == ("viewer", "active")  # the default role, no mapped group
    before = snapshot(db_session)
    again = post_event(client, app, payload)
    assert again.status_code == 200
    assert again.json["status"] == "duplicate"
    assert snapshot(db_session) == before
    row = db_session.scalar(select(WebhookEvent).where(WebhookEvent.event_id == "event_T1"))
    assert row.status == "applied"
    assert row.attempts == 1
    audited = db_session.scalars(select(AuditEvent).where(AuditEvent.source_event_id == "event_T1")).all()
    assert {a.action for a in audited} >= {"directory_user.created", "membership.activated"}


@pytest.mark.parametrize("case", ["missing", "wrong_secret", "stale", "garbled", "future", "tampered"])
def test_bad_signatures_are_rejected_without_change(case: str, client: FlaskClient, app: Flask, db_session: Any,
                                                    orgs: dict[str, Any]) -> None:
    body = json.dumps(user_event("event_SIG"), separators=(",", ":"))
    secret = app.config["WORKOS_WEBHOOK_SECRET"]
    headers = {"Content-Type": "application/json"}
    now_ms = int(time.time() * 1000)
    if case == "wrong_secret":
        headers["WorkOS-Signature"] = sign("whsec_wrong", body)
    elif case == "stale":
        headers["WorkOS-Signature"] = sign(secret, body, now_ms - 10 * 60 * 1000)
    elif case == "future":
        headers["WorkOS-Signature"] = sign(secret, body, now_ms + 10 * 60 * 1000)
    elif case == "garbled":
        headers["WorkOS-Signature"] = "t=abc,v1=zzz"
    elif case == "tampered":
        headers["WorkOS-Signature"] = sign(secret, body)
        body = body.replace("new.person", "evil.person")
    before = snapshot(db_session)
    response = client.post("/webhooks/workos", data=body, headers=headers)
    assert response.status_code == 401
    assert response.json["error"]["code"] == "invalid_signature"
    after = snapshot(db_session)
    assert after["audit_events"] == before["audit_events"] + 1
    assert {k: v for k, v in after.items() if k != "audit_events"} == \
        {k: v for k, v in before.items() if k != "audit_events"}
    event = db_session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc())).first()
    assert event.action == "webhook.signature_rejected"
    assert event.organization_id is None
    assert event.outcome == "failure"


def test_tolerance_is_configurable(app_config: dict[str, Any], request: pytest.FixtureRequest) -> None:
    app_config["WORKOS_WEBHOOK_TOLERANCE"] = 3600
    app = request.getfixturevalue("app")
    with app.app_context():
        from hatidata_auth.extensions import db

        mirror_organizations(db.session, app.extensions["hatidata_workos"].client)
    client = app.test_client()
    body = json.dumps(user_event("event_TOL"), separators=(",", ":"))
    stale = sign(app.config["WORKOS_WEBHOOK_SECRET"], body, int(time.time() * 1000) - 10 * 60 * 1000)
    response = client.post("/webhooks/workos", data=body, headers={"WorkOS-Signature": stale})
    assert response.status_code == 200


@pytest.mark.parametrize("body", [
    "{not json",
    "[]",
    json.dumps({"id": "event_X", "event": "dsync.user.created"}),
    json.dumps({"id": "event_X", "event": "dsync.user.created", "data": [], "created_at": "2030-01-01T00:00:00Z"}),
    json.dumps({"id": 5, "event": "dsync.user.created", "data": {}, "created_at": "2030-01-01T00:00:00Z"}),
    json.dumps({"id": "event_X", "event": "dsync.user.created", "data": {}, "created_at": "yesterday"}),
])
def test_malformed_envelopes_are_400_and_change_nothing(body: str, client: FlaskClient, app: Flask,
                                                        db_session: Any, orgs: dict[str, Any]) -> None:
    before = snapshot(db_session)
    response = post_event(client, app, body)
    assert response.status_code == 400, response.data
    assert response.json["error"]["code"] == "malformed_event"
    assert snapshot(db_session) == before


@pytest.mark.parametrize("body", [
    json.dumps({"id": "event_BAD", "event": "dsync.user.created", "data": {"id": "x"},
                "created_at": "2030-01-01T00:00:00Z"}),
    json.dumps({"id": "event_BAD", "event": "dsync.group.user_added", "data": {"user": {}},
                "created_at": "2030-01-01T00:00:00Z"}),
    json.dumps({"id": "event_BAD", "event": "dsync.user.updated",
                "data": {"object": "directory_user", "id": "directory_user_X", "directory_id": ACME_DIR},
                "created_at": "2030-01-01T00:00:00Z"}),
    json.dumps({"id": "event_BAD", "event": "connection.activated", "data": {"id": 5},
                "created_at": "2030-01-01T00:00:00Z"}),
])
def test_bad_event_data_is_refused_or_acknowledged_then_fails_alone(
        body: str, client: FlaskClient, app: Flask, db_session: Any, orgs: dict[str, Any]) -> None:
    """Data the SDK cannot read is a 400 (nothing stored); data only a handler refuses is acknowledged, then
    recorded failed (or ignored) by the applier: either way nothing else changes."""
    before = snapshot(db_session)
    response = post_event(client, app, body)
    after = snapshot(db_session)
    if response.status_code == 400:
        assert response.json["error"]["code"] == "malformed_event"
        assert after == before
        return
    assert response.status_code == 200, response.data
    assert response.json == {"event_id": "event_BAD", "status": "received"}
    row = db_session.scalar(select(WebhookEvent).where(WebhookEvent.event_id == "event_BAD"))
    assert row.status in ("failed", "ignored"), (row.status, row.last_error)
    assert row.last_error
    assert after["webhook_events"] == before["webhook_events"] + 1
    assert {k: v for k, v in after.items() if k not in ("webhook_events", "audit_events")} == \
        {k: v for k, v in before.items() if k not in ("webhook_events", "audit_events")}


@pytest.mark.parametrize("body", [b"{not json", b"\xff", b"[]", b"[" * 100_000 + b"]" * 100_000,
                                  json.dumps({"id": "event_X", "data": {}}).encode(),
                                  json.dumps({"event": "dsync.user.created", "data": "x"}).encode()])
def test_the_boundary_refuses_what_the_sdk_cannot_read_with_one_error(body: bytes) -> None:
    with pytest.raises(MalformedEvent) as info:
        parse_event(body)
    assert isinstance(info.value.cause, Exception)


def test_the_boundary_returns_the_event_it_read() -> None:
    event = {"id": "event_X", "event": "some.future.event", "data": {}, "created_at": "2030-01-01T00:00:00Z"}
    assert parse_event(json.dumps(event).encode()) == event


def test_oversized_bodies_are_413(app_config: dict[str, Any], request: pytest.FixtureRequest) -> None:
    app_config["HATIDATA_WEBHOOK_MAX_BYTES"] = 2048
    app = request.getfixturevalue("app")
    db_session = request.getfixturevalue("db_session")
    before = snapshot(db_session)
    payload = user_event("event_BIG")
    payload["data"]["custom_attributes"] = {"blob": "x" * 4096}
    response = post_event(app.test_client(), app, payload)
    assert response.status_code == 413
    assert snapshot(db_session) == before


def test_unknown_event_types_are_stored_and_ignored(client: FlaskClient, app: Flask, db_session: Any) -> None:
    payload = {"id": "event_U1", "event": "brand_new.thing_happened", "data": {"id": "x"},
               "created_at": "2030-01-01T00:00:00.000Z"}
    response = post_event(client, app, payload)
    assert response.status_code == 200
    assert response.json["status"] == "received"
    row = db_session.scalar(select(WebhookEvent).where(WebhookEvent.event_id == "event_U1"))
    assert row.status == "ignored"


def test_a_failing_event_is_acknowledged_kept_as_failed_and_replays(
        client: FlaskClient, app: Flask, db_session: Any, orgs: dict[str, Any], workos_client: Any) -> None:
    payload = user_event("event_F1")
    from hatidata_auth.models import Membership

    # Make applying fail: an organization whose default role is not a role.
    org = orgs["acme.test"]
    org.default_role = "superuser"  # not a role: provisioning refuses it
    db_session.commit()
    before_audit = snapshot(db_session)["audit_events"]
    response = post_event(client, app, payload)
    assert response.status_code == 200
    assert response.json["status"] == "received"
    row = db_session.scalar(select(WebhookEvent).where(WebhookEvent.event_id == "event_F1"))
    assert row.status == "failed"
    assert "superuser" in (row.last_error or "")
    assert snapshot(db_session)["audit_events"] == before_audit
    assert db_session.scalar(select(Membership).where(Membership.organization_id == org.id,
                                                      Membership.directory_user_id == "directory_user_TEST1")) is None
    assert [r.event_id for r in inbox_replay.list_failed(db_session)] == ["event_F1"]
    db_session.rollback()
    # Fix the cause, then replay: applied exactly once.
    org = db_session.get(type(org), org.id)
    org.default_role = "viewer"
    db_session.commit()
    result = inbox_replay.replay(db_session, workos_client, "event_F1")
    assert result.status == "applied"
    assert member_roles(db_session, org.id)["new.person@acme.test"] == ("viewer", "active")
    assert post_event(client, app, payload).json["status"] == "duplicate"
    row = db_session.scalar(select(WebhookEvent).where(WebhookEvent.event_id == "event_F1"))
    assert row.status == "applied"
    assert row.attempts == 2


def test_a_redelivered_failed_event_is_queued_again_and_applied_once(
        client: FlaskClient, app: Flask, db_session: Any, orgs: dict[str, Any]) -> None:
    org = orgs["acme.test"]
    org.default_role = "superuser"
    db_session.commit()
    payload = user_event("event_F2")
    post_event(client, app, payload)
    assert inbox_status(db_session, "event_F2") == "failed"
    org = db_session.get(type(org), org.id)
    org.default_role = "viewer"
    db_session.commit()
    again = post_event(client, app, payload, drain=False)  # WorkOS delivers it again
    assert again.json == {"event_id": "event_F2", "status": "received"}
    assert inbox_status(db_session, "event_F2") == "received"
    assert drain_inbox(app) == 1
    assert inbox_status(db_session, "event_F2") == "applied"
    assert member_roles(db_session, org.id)["new.person@acme.test"] == ("viewer", "active")
    assert post_event(client, app, payload).json["status"] == "duplicate"
