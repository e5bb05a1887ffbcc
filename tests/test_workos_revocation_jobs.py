"""No WorkOS call inside an applier's transaction (issue #14): a session ended by an applied event (a deactivated,
suspended or deleted directory user, a deleted directory) is rejected at once, here; its end at WorkOS is queued in
the same transaction and applied by the appliers afterwards (retried while WorkOS is down), audited as
``session.revoked_at_workos``. A person's revocation (the API) still calls WorkOS at once (tests/test_auth_sessions),
and queues the same job when WorkOS does not answer then (it was lost)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from flask import Flask, current_app
from flask.testing import FlaskClient
from sqlalchemy import select, update

from hatidata_auth.causes import Actor
from hatidata_auth.extensions import db
from hatidata_auth.idp import get_registry
from hatidata_auth.models import AuditEvent, AuthSession, User, WebhookEvent
from hatidata_auth.services import inbox_worker, reconcile, workos_revocations
from tests.auth_support import add_fault, csrf_headers, login
from tests.support.dsync import drain_inbox, mirror_organizations, post_event
from tests.support.servers import EmulatorControl

ACME_DIR = "directory_01HTDQ8D100000000000000001"
ACME_DEV_USER = "directory_user_01HTDQ8F100000000000000002"


@pytest.fixture
def control(emulator: Any) -> EmulatorControl:
    """The emulator's control API, with no webhook endpoint: the tests post each event themselves."""
    return EmulatorControl(emulator.url)


@pytest.fixture
def resynced(db_session: Any, workos_client: Any) -> None:
    mirror_organizations(db_session, workos_client)
    for report in reconcile.resync_all(db_session, workos_client):
        reconcile.ensure_demo_mappings(db_session, workos_client, organization_id=report.organization_id,
                                       actor=Actor.system("test"), plugins=get_registry(current_app))
        db_session.commit()


def _deprovisioning_event(control: EmulatorControl, how: str) -> dict[str, Any]:
    """Make the emulator deprovision the developer (*how*) and return the event it recorded for it."""
    before = len(control.events())
    if how == "deleted_directory":
        control.ctl("DELETE", f"/directories/{ACME_DIR}")
    elif how == "deleted":
        control.ctl("DELETE", f"/directory_users/{ACME_DEV_USER}")
    else:
        control.ctl("POST", f"/directory_users/{ACME_DEV_USER}/{how}")
    wanted = {"deactivate": "dsync.user.updated", "suspend": "dsync.user.updated", "deleted": "dsync.user.deleted",
              "deleted_directory": "dsync.deleted"}[how]
    return next(e for e in control.events()[before:] if e["event"] == wanted)


def _workos_status(app: Flask, sid: str) -> str:
    client = app.extensions["hatidata_workos"].client
    with app.app_context():
        user_id = db.session.scalar(select(AuthSession.user_id).where(AuthSession.workos_session_id == sid))
        workos_user = db.session.get(User, user_id).workos_user_id
        db.session.remove()
    item = next(s for s in client.user_management.list_sessions(workos_user).data if s.id == sid)
    return str(getattr(item.status, "value", item.status))


def _audit(app: Flask, action: str) -> list[AuditEvent]:
    with app.app_context():
        rows = list(db.session.scalars(select(AuditEvent).where(AuditEvent.action == action)))
        db.session.remove()
    return rows


def _signed_in(app: Flask) -> tuple[FlaskClient, str]:
    client = app.test_client()
    assert login(client, "dev@acme.test").status_code == 302
    me = client.get("/api/v1/me")
    assert me.status_code == 200, me.get_data(as_text=True)
    with app.app_context():
        sid = db.session.scalar(select(AuthSession.workos_session_id).where(AuthSession.id == me.json["session_id"]))
        db.session.remove()
    return client, str(sid)


@pytest.mark.parametrize("how", ["deactivate", "suspend", "deleted", "deleted_directory"])
def test_an_applied_deprovisioning_rejects_the_session_at_once_and_ends_it_at_workos_afterwards(
        app: Flask, resynced: None, control: EmulatorControl, how: str) -> None:
    client, sid = _signed_in(app)
    event = _deprovisioning_event(control, how)
    answer = post_event(app.test_client(), app, event, drain=False)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    drain_inbox_events_only(app)
    assert client.get("/api/v1/me").status_code == 401  # rejected here, before WorkOS heard of it
    revoked = [e for e in _audit(app, "session.revoked") if e.details.get("session_id")]
    assert revoked
    assert all(e.details["workos"] == "queued" for e in revoked)
    assert _audit(app, "session.revoked_at_workos") == []  # no WorkOS call was made by the applied events
    if how != "deleted_directory":  # (the emulator's directory deletion ends its sessions on WorkOS's side too)
        assert _workos_status(app, sid) == "active"
    assert drain_inbox(app) >= 1
    assert _workos_status(app, sid) == "revoked"
    at_workos = _audit(app, "session.revoked_at_workos")
    assert sorted(e.target_id for e in at_workos) == sorted(e.target_id for e in revoked)
    assert all(e.details["workos"] == "revoked" and e.source_event_id == event["id"] for e in at_workos)


def drain_inbox_events_only(app: Flask) -> None:
    """Apply the WorkOS events still pending (an event left to the appliers), not the queued revocation jobs."""
    table = WebhookEvent.__table__
    hold = update(table).where(table.c.event_type == workos_revocations.JOB_TYPE, table.c.status == "received")
    with app.app_context():
        while True:  # a fan-out chunk queues jobs as it goes: hold them before each batch
            db.session.execute(hold.values(status="held"))
            db.session.commit()
            if not inbox_worker.drain(db.session(), app.extensions["hatidata_workos"].client, max_batches=1):
                break
        db.session.execute(update(table).where(table.c.status == "held").values(status="received"))
        db.session.commit()
        db.session.remove()


def test_a_queued_revocation_waits_out_a_workos_outage_and_is_retried(
        app: Flask, resynced: None, control: EmulatorControl, emulator: Any) -> None:
    client, sid = _signed_in(app)
    post_event(app.test_client(), app, _deprovisioning_event(control, "deactivate"), drain=False)
    drain_inbox_events_only(app)
    assert client.get("/api/v1/me").status_code == 401
    add_fault(emulator, "POST", "/user_management/sessions/revoke", 503)
    drain_inbox(app)
    with app.app_context():
        job = db.session.scalar(select(WebhookEvent).where(WebhookEvent.event_type == workos_revocations.JOB_TYPE))
        assert job is not None
        assert job.status == "received"
        assert job.last_error
        db.session.execute(update(WebhookEvent.__table__).where(WebhookEvent.id == job.id).values(
            updated_at=job.updated_at - inbox_worker.RETRY_DELAY - timedelta(seconds=1)))
        db.session.commit()
        db.session.remove()
    assert _audit(app, "session.revoked_at_workos") == []
    assert _workos_status(app, sid) == "active"
    control.ctl("DELETE", "/faults")
    drain_inbox(app)
    assert _workos_status(app, sid) == "revoked"
    assert [e.details["workos"] for e in _audit(app, "session.revoked_at_workos")] == ["revoked"]


def test_no_job_is_queued_outside_an_applier(app: Flask, resynced: None) -> None:
    client, _ = _signed_in(app)
    admin = app.test_client()
    assert login(admin, "admin@acme.test").status_code == 302
    from tests.auth_support import csrf_headers

    me = client.get("/api/v1/me").json
    answer = admin.post(f"/api/v1/sessions/{me['session_id']}/revoke", json={}, headers=csrf_headers(admin))
    assert answer.status_code == 200, answer.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(select(WebhookEvent).where(
            WebhookEvent.event_type == workos_revocations.JOB_TYPE)) is None
        db.session.remove()
    assert [e.details["workos"] for e in _audit(app, "session.revoked")] == ["revoked"]


def test_a_revocation_by_the_api_while_workos_is_down_is_ended_there_later(
        app: Flask, resynced: None, control: EmulatorControl, emulator: Any) -> None:
    """The sessions API ends the session at WorkOS at once; when WorkOS does not answer, the end at WorkOS is queued
    for the appliers, not lost (it was recorded as failed and never tried again)."""
    client, sid = _signed_in(app)
    admin = app.test_client()
    assert login(admin, "admin@acme.test").status_code == 302
    session_id = client.get("/api/v1/me").json["session_id"]
    add_fault(emulator, "POST", "/user_management/sessions/revoke", 503)
    answer = admin.post(f"/api/v1/sessions/{session_id}/revoke", json={"reason": "lost laptop"},
                        headers=csrf_headers(admin))
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert client.get("/api/v1/me").status_code == 401  # rejected here at once
    [revoked] = [e for e in _audit(app, "session.revoked") if e.target_id == session_id]
    assert revoked.details["workos"] == "queued"
    assert _workos_status(app, sid) == "active"
    control.ctl("DELETE", "/faults")
    drain_inbox(app)
    assert _workos_status(app, sid) == "revoked"
    assert [e.details["workos"] for e in _audit(app, "session.revoked_at_workos")] == ["revoked"]
