"""Break-it round 2 (issue #12, the frozen ``Cause``): audit rows of changes a request causes must carry that
request (ip, user agent, request id) and its actor, including the changes made on the way."""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from hatidata_auth.extensions import db
from hatidata_auth.models import AuditEvent
from tests.api_support import headers_for, make_tenant

AGENT = "breakit2-admin-console/2.1"
REQUEST_ID = "breakit2-remove-0042"
ACME_ORG = "org_01HTDQ8A100000000000000001"
ACME_DIR = "directory_01HTDQ8D100000000000000001"


def _rows(app: Flask, organization_id: str, action: str) -> list[AuditEvent]:
    with app.app_context():
        rows = list(db.session.scalars(select(AuditEvent).where(AuditEvent.organization_id == organization_id,
                                                                AuditEvent.action == action)))
        db.session.expunge_all()
        db.session.remove()
    return rows


def test_keys_suspended_by_an_admin_removal_carry_the_removal_request(app: Flask, client: FlaskClient,
                                                                       emulator: Any) -> None:
    tenant = make_tenant(app, "Larkspur")
    response = client.delete(f"/api/v1/members/{tenant.ids['member']}",
                             headers={**headers_for(tenant, "admin"), "User-Agent": AGENT,
                                      "X-Request-ID": REQUEST_ID})
    assert response.status_code == 200, response.get_data(as_text=True)
    [removed] = _rows(app, tenant.id, "membership.deprovisioned")
    assert (removed.user_agent, removed.request_id) == (AGENT, REQUEST_ID)
    suspended = _rows(app, tenant.id, "api_key.suspended")
    assert suspended, "the removed member's key is suspended"
    for row in suspended:
        assert (row.actor_type, row.actor_id) == (removed.actor_type, removed.actor_id)
        assert (row.ip_address, row.user_agent, row.request_id) == (removed.ip_address, AGENT, REQUEST_ID)


def test_changes_applied_by_a_replay_carry_the_replay_request(app: Flask, db_session: Any,
                                                             workos_client: Any) -> None:
    from hatidata_auth.causes import Actor, Cause, RequestInfo
    from hatidata_auth.services import inbox_admin
    from tests.support.dsync import deliver, mirror_organizations

    acme = mirror_organizations(db_session, workos_client)["acme.test"]
    acme.default_role = "not-a-role"  # applying fails: the event is kept as failed
    db_session.commit()
    payload = {"id": "event_breakit2_replay", "event": "dsync.user.created", "created_at": "2030-01-01T00:00:01.000Z",
               "data": {"object": "directory_user", "id": "directory_user_BREAKIT2", "directory_id": ACME_DIR,
                        "organization_id": ACME_ORG, "idp_id": "00uBREAKIT2", "email": "quentin.brask@acme.test",
                        "first_name": "Quentin", "last_name": "Brask", "state": "active",
                        "custom_attributes": {}, "raw_attributes": {}, "created_at": "2030-01-01T00:00:00.000Z",
                        "updated_at": "2030-01-01T00:00:00.000Z"}}
    assert deliver(app.test_client(), app, payload) == "failed"
    acme = db_session.get(type(acme), acme.id)
    acme.default_role = "viewer"
    db_session.commit()
    request = RequestInfo(ip_address="203.0.113.77", user_agent=AGENT, request_id=REQUEST_ID)
    cause = Cause.by(Actor("user", "usr_breakit2_admin", "ops.lead@acme.test"), request)
    result = inbox_admin.replay(db_session, workos_client, organization_id=acme.id,
                                event_id="event_breakit2_replay", cause=cause)
    db_session.commit()
    assert result.status == "applied"
    applied = list(db_session.scalars(select(AuditEvent).where(AuditEvent.organization_id == acme.id,
                                                               AuditEvent.action != "webhook_event.replayed",
                                                               AuditEvent.actor_id == "usr_breakit2_admin")))
    assert applied, "the replay's changes are audited as the admin"
    for row in applied:
        assert (row.ip_address, row.user_agent, row.request_id) == ("203.0.113.77", AGENT, REQUEST_ID), row.action
