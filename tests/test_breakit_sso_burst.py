"""Break-it review (issue #10 rule 3 / issue #11, real-world sequences): SSO enforcement must not refuse the
organization's own SSO sign-ins when WorkOS is busy.

The callback learns which connection authenticated a session by searching the Events API for its
``authentication.sso_succeeded`` event among the newest 500 of *all* organizations (5 pages of 100). When more
than 500 SSO sign-ins (any tenant's; an attacker's own IdP can produce them) are recorded between the sign-in
and that search, the event is not found, the sign-in counts as "SSO through an unknown connection", and an
organization that enforces SSO refuses its own member signing in through its own connection (and the WorkOS
session is revoked). Here the Events API answers slowly once while other sign-ins are recorded.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import httpx2
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from hatidata_auth.extensions import db
from hatidata_auth.models import AuditEvent, AuthSession, Organization
from tests.auth_support import (
    ACME,
    GLOBEX,
    add_fault,
    authorize,
    callback_path,
    login,
    start_login,
    sync_organizations,
)
from tests.support.servers import EmulatorControl

OTHER_SIGN_INS = 520


def _flood(control: EmulatorControl, base_count: int) -> None:
    # Wait (bounded) until the member's own sign-in is recorded, then record newer SSO sign-ins of others.
    for _ in range(200):
        events = control.ctl("GET", "/events")["data"]
        if sum(1 for e in events if e["event"] == "authentication.sso_succeeded") > base_count:
            break
        threading.Event().wait(0.02)
    for _ in range(OTHER_SIGN_INS):
        sso = {"organization_id": ACME, "connection_id": "conn_other", "session_id": f"session_{uuid.uuid4().hex}"}
        control.ctl("POST", "/events", {"event": "authentication.sso_succeeded", "organization_id": ACME, "data": {
            "type": "sso", "status": "succeeded", "email": "someone@elsewhere.test", "sso": sso}})


def test_an_sso_enforcing_org_accepts_its_own_sso_sign_in_during_a_burst(app: Flask, client: FlaskClient,
                                                                         emulator: Any) -> None:
    orgs = sync_organizations(app)
    with app.app_context():
        org = db.session.get(Organization, orgs[ACME])
        assert org is not None
        org.sso_enforced = True
        db.session.commit()
        db.session.remove()
    control = EmulatorControl(emulator.url)
    base = sum(1 for e in control.ctl("GET", "/events")["data"] if e["event"] == "authentication.sso_succeeded")
    location = authorize(start_login(client, email="admin@acme.test"))
    response = httpx2.post(f"{emulator.url}/_emulator/faults", json={"method": "GET", "path": "/events",
                                                                      "count": 1, "delay_ms": 8000},
                           headers={"Authorization": "Bearer sk_test_emulator"}, timeout=10)
    assert response.status_code == 201, response.text
    flood = threading.Thread(target=_flood, args=(control, base), daemon=True)
    flood.start()
    callback = client.get(callback_path(location))
    flood.join(timeout=60)
    assert callback.status_code == 302, callback.get_json()


@pytest.mark.parametrize("status", [500, 503, 429])
def test_an_sso_sign_in_workos_cannot_confirm_answers_retry_not_a_refusal(app: Flask, client: FlaskClient,
                                                                         emulator: Any, status: int) -> None:
    # The Events API fails while the callback asks how the sign-in was made: 503 "retry", nothing refused,
    # revoked or recorded; the retried sign-in goes through.
    orgs = sync_organizations(app)
    with app.app_context():
        org = db.session.get(Organization, orgs[GLOBEX])
        assert org is not None
        org.sso_enforced = True
        db.session.commit()
        db.session.remove()
    location = authorize(start_login(client, email="admin@globex.test"))
    add_fault(emulator, "GET", "/events", status, count=5)
    callback = client.get(callback_path(location))
    assert callback.status_code == 503, callback.get_json()
    assert callback.get_json()["error"]["code"] == "workos_unavailable"
    assert callback.headers.get("Retry-After")
    with app.app_context():
        refused = db.session.scalar(select(AuditEvent.id).where(AuditEvent.action == "auth.policy_refused"))
        sessions = db.session.scalars(select(AuthSession.id)).all()
        db.session.remove()
    assert refused is None
    assert sessions == []
    httpx2.delete(f"{emulator.url}/_emulator/faults", headers={"Authorization": "Bearer sk_test_emulator"},
                  timeout=10)
    assert login(client, "admin@globex.test").status_code == 302
