"""Connection alerts (issue #11, item 6): whatever order WorkOS delivers a connection's events in, the open
alerts are those its latest events call for; admins (and only they, and only their organization's) see them.

Histories are played on the emulator (the control API stands in for the IdP and WorkOS) and their events are
delivered as signed webhooks in every order under test.
"""

from __future__ import annotations

import itertools
import json
import threading
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from hatidata_auth.extensions import db
from hatidata_auth.models import OrganizationAlert
from hatidata_auth.services import alerts
from tests.auth_support import login, sync_organizations
from tests.conftest import _empty_tables
from tests.support.dsync import deliver, drain_inbox, mirror_organizations, sign
from tests.support.servers import EmulatorControl, LiveServer, http_json

CONNECTIONS = {"initech.test": "conn_01HTDQ8C300000000000000001", "umbrella.test": "conn_01HTDQ8C400000000000000001"}
GLOBEX_CONN = "conn_01HTDQ8C200000000000000001"
UMBRELLA_CONN = CONNECTIONS["umbrella.test"]

# The test's own statement of the rules (not read from services.alerts): what each event type opens or ends.
OPENS = {"connection.saml_certificate_renewal_required": "saml_certificate_renewal",
         "connection.deactivated": "connection_inactive"}
RESOLVES = {"connection.saml_certificate_renewed": {"saml_certificate_renewal"},
            "connection.activated": {"connection_inactive"},
            "connection.deleted": {"saml_certificate_renewal", "connection_inactive"}}
FINAL = "connection.deleted"

# Control-API calls that make the emulator emit each event type.
CAUSES: dict[str, tuple[str, str, dict[str, Any] | None]] = {
    "connection.saml_certificate_renewal_required": ("POST", "/connections/{c}/certificate",
                                                     {"kind": "renewal_required"}),
    "connection.saml_certificate_renewed": ("POST", "/connections/{c}/certificate", {"kind": "renewed"}),
    "connection.deactivated": ("POST", "/connections/{c}/deactivate", None),
    "connection.activated": ("POST", "/connections/{c}/activate", None),
    "connection.deleted": ("DELETE", "/connections/{c}", None),
}


def _play(control: EmulatorControl, connection_id: str, event_types: list[str],
          days: list[int] | None = None) -> list[dict[str, Any]]:
    """Make the emulator emit *event_types* for a connection, in that order; returns their events."""
    start = len(control.events())
    for i, event_type in enumerate(event_types):
        method, path, body = CAUSES[event_type]
        if body is not None and body.get("kind") == "renewal_required" and days:
            body = {**body, "days_until_expiry": days[i % len(days)]}
        control.ctl(method, path.format(c=connection_id), body)
    events = control.events()[start:]
    assert [e["event"] for e in events] == event_types
    return events


def expected_open(events: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """(kind, connection id) of the alerts the events call for, applied in the order WorkOS created them."""
    state: dict[tuple[str, str], bool] = {}
    deleted: set[str] = set()
    for event in sorted(events, key=lambda e: (e["created_at"], e["id"])):
        data = event["data"]
        conn = data["connection"]["id"] if "connection" in data else data["id"]
        if event["event"] == FINAL:
            deleted.add(conn)
        if event["event"] in OPENS:
            state[(OPENS[event["event"]], conn)] = True
        for kind in RESOLVES.get(event["event"], set()):
            state[(kind, conn)] = False
    return {key for key, is_open in state.items() if is_open and key[1] not in deleted}


def stored_open(app: Flask) -> set[tuple[str, str]]:
    with app.app_context():
        rows = db.session.scalars(select(OrganizationAlert).where(OrganizationAlert.resolved_at.is_(None))).all()
        found = {(a.kind, str(a.target_id)) for a in rows}
        db.session.remove()
    return found


def _fresh(app: Flask) -> None:
    """Empty our tables and mirror the emulator's organizations again (the emulator keeps its history)."""
    _empty_tables(app)
    with app.app_context():
        mirror_organizations(db.session, app.extensions["hatidata_workos"].client)
        db.session.commit()
        db.session.remove()


def _deliver(app: Flask, events: list[dict[str, Any]], order: list[int]) -> None:
    client = app.test_client()
    for index in order:
        assert deliver(client, app, events[index]) in ("applied", "duplicate", "ignored")


def test_the_rules_under_test_are_the_rules_applied() -> None:
    # Every event type that opens or resolves an alert is covered by the histories below, and no other.
    assert alerts.ALERT_EVENT_TYPES == set(OPENS) | set(RESOLVES) == set(CAUSES)
    assert {k.name for k in alerts.KINDS} == set(OPENS.values())


# Every cause/resolution pair of every alert kind, as "cause, resolution" and "cause, resolution, cause again",
# delivered in every order.
HISTORIES = [
    [cause, resolution, *([cause] if resolution != FINAL else [])]
    for cause, kind in OPENS.items()
    for resolution, kinds in RESOLVES.items() if kind in kinds
] + [[cause, resolution] for cause, kind in OPENS.items() for resolution, kinds in RESOLVES.items()
     if kind in kinds and resolution != FINAL]


def test_every_order_of_cause_and_resolution(app: Flask, emulator: Any) -> None:
    control = EmulatorControl(emulator.url)
    checked = 0
    for history in HISTORIES:
        emulator.reset()
        events = _play(control, UMBRELLA_CONN, history, days=[9])
        want = expected_open(events)
        for order in itertools.permutations(range(len(events))):
            _fresh(app)
            _deliver(app, events, list(order))
            assert stored_open(app) == want, (history, order)
            checked += 1
    assert checked == 2 * 6 + 2 * 2 + 2 * 2  # 3-event histories x6 orders; 2-event ones (renewal, deletion) x2


EVENT_TYPES = sorted(CAUSES.keys() - {FINAL})


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(domain=st.sampled_from(sorted(CONNECTIONS)), history=st.lists(st.sampled_from(EVENT_TYPES), min_size=1,
                                                                      max_size=7),
       delete=st.booleans(), days=st.lists(st.integers(-5, 90), min_size=1, max_size=3), data=st.data())
def test_shuffled_duplicated_histories_leave_the_latest_alert_state(
        domain: str, history: list[str], delete: bool, days: list[int], data: st.DataObject, app: Flask,
        emulator: Any) -> None:
    emulator.reset()
    control = EmulatorControl(emulator.url)
    events = _play(control, CONNECTIONS[domain], history + ([FINAL] if delete else []), days)
    duplicates = data.draw(st.lists(st.integers(0, len(events) - 1), max_size=len(events)))
    order = data.draw(st.permutations(list(range(len(events))) + duplicates))
    _fresh(app)
    _deliver(app, events, order)
    assert stored_open(app) == expected_open(events)


def test_admins_see_their_organizations_open_alerts(app: Flask, client: FlaskClient, emulator: Any) -> None:
    control = EmulatorControl(emulator.url)
    sync_organizations(app)
    events = [*_play(control, GLOBEX_CONN, ["connection.saml_certificate_renewal_required"], days=[11]),
              *_play(control, GLOBEX_CONN, ["connection.deactivated"]),
              *_play(control, UMBRELLA_CONN, ["connection.saml_certificate_renewal_required"], days=[3])]
    _deliver(app, events, list(range(len(events))))

    assert login(client, "admin@globex.test").status_code == 302
    page = client.get("/api/v1/organization/alerts?limit=1").get_json()
    assert len(page["data"]) == 1
    assert page["next_cursor"]
    rest = client.get(f"/api/v1/organization/alerts?limit=1&cursor={page['next_cursor']}").get_json()
    listed = page["data"] + rest["data"]
    assert rest["next_cursor"] is None
    assert sorted((a["kind"], a["target_id"], a["status"]) for a in listed) == [
        ("connection_inactive", GLOBEX_CONN, "open"), ("saml_certificate_renewal", GLOBEX_CONN, "open")]
    certificate = next(a for a in listed if a["kind"] == "saml_certificate_renewal")
    assert certificate["details"]["days_until_expiry"] == 11
    assert certificate["occurred_at"]
    assert certificate["resolved_at"] is None
    assert UMBRELLA_CONN not in client.get("/api/v1/organization/alerts?status=all").get_data(as_text=True)

    home = client.get("/").get_data(as_text=True)
    assert 'id="alerts"' in home
    assert certificate["message"] in home
    wizard = client.get("/admin/sso/").get_data(as_text=True)
    assert 'id="alerts"' in wizard
    assert certificate["message"] in wizard
    assert UMBRELLA_CONN not in home + wizard

    # The renewal resolves its alert everywhere; the inactive connection's alert stays until reactivation.
    _deliver(app, _play(control, GLOBEX_CONN, ["connection.saml_certificate_renewed"]), [0])
    still = client.get("/api/v1/organization/alerts").get_json()["data"]
    assert [a["kind"] for a in still] == ["connection_inactive"]
    resolved = client.get("/api/v1/organization/alerts?status=resolved").get_json()["data"]
    assert [(a["kind"], a["resolution"]) for a in resolved] == [
        ("saml_certificate_renewal", "connection.saml_certificate_renewed")]
    assert certificate["message"] not in client.get("/").get_data(as_text=True)
    _deliver(app, _play(control, GLOBEX_CONN, ["connection.activated"]), [0])
    assert client.get("/api/v1/organization/alerts").get_json()["data"] == []
    assert 'id="alerts"' not in client.get("/").get_data(as_text=True)


def test_members_without_sso_manage_see_no_alerts(app: Flask, client: FlaskClient, emulator: Any) -> None:
    control = EmulatorControl(emulator.url)
    sync_organizations(app)
    _deliver(app, _play(control, GLOBEX_CONN, ["connection.deactivated"]), [0])
    assert login(client, "dev@globex.test").status_code == 302
    denied = client.get("/api/v1/organization/alerts")
    assert denied.status_code == 403
    assert 'id="alerts"' not in client.get("/").get_data(as_text=True)


@pytest.mark.postgres
def test_concurrent_deliveries_of_one_connections_events_converge(app: Flask, emulator: Any,
                                                                   live_app: LiveServer) -> None:
    # Workers racing on the same alert rows (first insert, then FOR UPDATE) still leave the latest state.
    control = EmulatorControl(emulator.url)
    history = ["connection.saml_certificate_renewal_required", "connection.deactivated",
               "connection.saml_certificate_renewed", "connection.saml_certificate_renewal_required",
               "connection.activated", "connection.deactivated"]
    events = _play(control, CONNECTIONS["initech.test"], history, days=[21])
    _fresh(app)
    results: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(6)

    def worker(shift: int) -> None:
        barrier.wait()
        for event in events[shift:] + events[:shift]:
            body = json.dumps(event, separators=(",", ":"))
            status, _ = http_json("POST", f"{live_app.url}/webhooks/workos", raw=body.encode(), headers={
                "WorkOS-Signature": sign(app.config["WORKOS_WEBHOOK_SECRET"], body)})
            with lock:
                results.append(status)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 36
    drain_inbox(app)  # acknowledged by the live server; applied by the appliers (here, this drain)
    assert stored_open(app) == expected_open(events) == {
        ("saml_certificate_renewal", CONNECTIONS["initech.test"]), ("connection_inactive", CONNECTIONS["initech.test"])}
