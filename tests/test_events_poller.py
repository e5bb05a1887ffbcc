"""The Events API poller asks for explicit event types, exactly the ones we handle (issue #11, item 8).

WorkOS's ``GET /events`` takes event types, not patterns (the emulator now refuses ``authentication.*`` as
WorkOS would), so the poller's filter is the handler registry itself; these tests prove it receives an event
of every type it handles and none of the types it does not.
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from sqlalchemy import select
from workos.events.models.event_schema import EventSchema
from workos.organization_membership import RoleSingle

from hatidata_auth.extensions import db
from hatidata_auth.models import WebhookEvent
from hatidata_auth.services import events_poller
from hatidata_auth.services.events import HANDLERS, handled_event_types, handler_for
from tests.support.servers import EmulatorControl

INITECH = "org_01HTDQ8A300000000000000001"
INITECH_CONN = "conn_01HTDQ8C300000000000000001"
INITECH_DIR = "directory_01HTDQ8D300000000000000001"


def test_the_filter_is_the_registry_and_names_only_types_workos_knows() -> None:
    types = handled_event_types()
    assert types == list(HANDLERS)
    assert len(types) == len(set(types))
    assert all(handler_for(t) is not None for t in types)
    known = set(EventSchema._DISPATCH)  # every event type the SDK (WorkOS's spec) defines
    assert set(types) <= known, sorted(set(types) - known)
    # What the old ``authentication.*`` asked for is still asked for, one type at a time.
    assert {t for t in known if t.startswith("authentication.")} <= set(types)
    assert handler_for("authentication.made_up_type") is None


def _authentication_data(event_type: str) -> dict[str, Any]:
    """A payload valid for every ``authentication.*`` type (the SDK's required fields of each)."""
    return {"type": event_type.split(".")[1].rsplit("_", 1)[0], "status": "failed" if "failed" in event_type
            else "succeeded", "ip_address": "198.51.100.23", "user_agent": "poller-test",
            "user_id": "user_01POLLERTEST0000000000000", "email": "someone@initech.test",
            "sso": {"organization_id": INITECH, "connection_id": INITECH_CONN, "session_id": "sso_session_1"},
            "error": {"code": "test_error", "message": "made up"}, "auth_method": "SSO", "action": "signin",
            "control": "bot_detection", "blocklist_type": "ip_address"}


def _emit_every_handled_type(control: EmulatorControl, workos: Any) -> None:
    """Make the emulator record at least one event of every handled type, most of them the way WorkOS would."""
    group = control.ctl("POST", f"/directories/{INITECH_DIR}/groups", {"name": "Poll Group"})
    user = control.ctl("POST", f"/directories/{INITECH_DIR}/users", {"email": "poll@initech.test",
                                                                     "groups": [group["id"]]})
    control.ctl("PATCH", f"/directory_users/{user['id']}", {"last_name": "Polled"})
    control.ctl("PATCH", f"/directory_groups/{group['id']}", {"name": "Poll Group 2"})
    control.ctl("DELETE", f"/directory_groups/{group['id']}/members/{user['id']}")
    control.ctl("DELETE", f"/directory_groups/{group['id']}")
    control.ctl("DELETE", f"/directory_users/{user['id']}")
    control.ctl("POST", f"/directories/{INITECH_DIR}/activate")
    control.ctl("POST", f"/connections/{INITECH_CONN}/deactivate")
    control.ctl("POST", f"/connections/{INITECH_CONN}/activate")
    for kind in ("renewal_required", "renewed"):
        control.ctl("POST", f"/connections/{INITECH_CONN}/certificate", {"kind": kind})
    control.ctl("PATCH", f"/organizations/{INITECH}", {"name": "Initech LLC"})
    person = workos.user_management.create_user(email="poller.member@initech.test")
    membership = workos.organization_membership.create_organization_membership(
        user_id=person.id, organization_id=INITECH, role=RoleSingle(role_slug="viewer"))
    workos.organization_membership.update_organization_membership(membership.id,
                                                                  role=RoleSingle(role_slug="developer"))
    workos.organization_membership.delete_organization_membership(membership.id)
    control.ctl("DELETE", f"/connections/{INITECH_CONN}")
    control.ctl("DELETE", f"/directories/{INITECH_DIR}")
    doomed = workos.organizations.create_organization(name="Short-lived Poll Org")
    workos.organizations.delete_organization(doomed.id)
    for event_type in sorted(t for t in handled_event_types() if t.startswith("authentication.")):
        control.ctl("POST", "/events", {"event": event_type, "data": _authentication_data(event_type),
                                        "organization_id": INITECH})
    control.ctl("POST", "/events", {"event": "session.revoked", "organization_id": INITECH, "data": {
        "object": "session", "id": "session_01POLLERTEST000000000000", "user_id": "user_01POLLERTEST0000000000000",
        "organization_id": INITECH, "ip_address": "198.51.100.23", "user_agent": "poller-test",
        "auth_method": "sso", "status": "revoked", "expires_at": "2026-01-01T00:00:00.000Z",
        "ended_at": "2026-01-01T00:00:00.000Z", "created_at": "2026-01-01T00:00:00.000Z",
        "updated_at": "2026-01-01T00:00:00.000Z"}})


def test_the_poller_receives_every_type_it_handles_and_no_other(app: Flask, emulator: Any) -> None:
    control = EmulatorControl(emulator.url)
    with app.app_context():
        workos = app.extensions["hatidata_workos"].client
        _emit_every_handled_type(control, workos)
        recorded = control.events()
        recorded_types = {e["event"] for e in recorded}
        assert set(handled_event_types()) <= recorded_types, sorted(set(handled_event_types()) - recorded_types)
        unhandled = recorded_types - set(handled_event_types())
        assert unhandled, "the history must also hold types we do not handle (user.created, ...)"

        result = events_poller.poll_events(db.session, workos, page_size=25)
        received = db.session.execute(select(WebhookEvent.event_id, WebhookEvent.event_type).where(
            WebhookEvent.source == "events_api")).all()
        db.session.remove()
    assert {t for _, t in received} == set(handled_event_types())
    assert {i for i, _ in received} == {e["id"] for e in recorded if e["event"] in HANDLERS}
    assert result.processed == len(received)
    assert result.failed == 0
