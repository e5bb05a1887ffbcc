"""WorkOS session ids are shown only to callers allowed to revoke sessions (break-it issue #10, finding 3).

A WorkOS session id lets whoever knows it end that session through WorkOS's logout URL. New audit rows name
our own session (``details.session_id`` = the target); rows written before still hold ``workos_session_id``,
which every audit read (list, one event, NDJSON and CSV export) blanks for callers without ``sessions:write``.
"""

from __future__ import annotations

import ast
import json
import pathlib
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

import hatidata_auth
from hatidata_auth.causes import Actor, Cause
from hatidata_auth.extensions import db
from hatidata_auth.models import AuthSession, Organization, User
from hatidata_auth.services import audit
from hatidata_auth.services.audit_queries import redacted
from tests.auth_support import ACME, GLOBEX, csrf_headers, login, sync_organizations, workos_membership
from tests.credential_support import bearer, new_key

# Every action the code audits about one session (a session is their target).
SESSION_ACTIONS = {"auth.login.succeeded", "session.organization_switched", "session.revoked"}


def _user_id(app: Flask, email: str) -> str:
    with app.app_context():
        user_id = db.session.scalar(select(User.id).where(User.email == email))
        db.session.remove()
    assert user_id is not None
    return str(user_id)


def _workos_session_ids(app: Flask) -> set[str]:
    with app.app_context():
        found = set(db.session.scalars(select(AuthSession.workos_session_id)))
        db.session.remove()
    return found


def _reads(app: Flask, secret: str) -> list[str]:
    """Every way an audit reader sees the organization's events, as text."""
    client, headers = app.test_client(), bearer(secret)
    listed = client.get("/api/v1/audit-events?limit=200", headers=headers)
    assert listed.status_code == 200, listed.get_json()
    texts = [listed.get_data(as_text=True)]
    for event in listed.get_json()["data"]:
        one = client.get(f"/api/v1/audit-events/{event['id']}", headers=headers)
        assert one.status_code == 200
        texts.append(one.get_data(as_text=True))
    for fmt in ("ndjson", "csv"):
        exported = client.get(f"/api/v1/audit-events/export?format={fmt}", headers=headers)
        assert exported.status_code == 200
        texts.append(exported.get_data(as_text=True))
    return texts


@pytest.fixture
def scenario(app: Flask) -> dict[str, Any]:
    """Sign-ins, an organization switch, an API revocation and one row of the old shape, in Globex."""
    orgs = sync_organizations(app)
    traveller = app.test_client()
    # Acme verified acme.test, so its IdP vouches for this address in Globex too (an unverified domain's sign-in
    # would have to sign in to Globex itself: docs/security.md, rule 2).
    workos_membership(app, "dev@acme.test", GLOBEX, "viewer")
    assert login(traveller, "dev@acme.test", organization_id=ACME).status_code == 302
    switched = traveller.post("/auth/switch-organization", json={"organization_id": orgs[GLOBEX]},
                              headers=csrf_headers(traveller))
    assert switched.status_code == 200, switched.get_json()
    for email in ("viewer@globex.test", "admin@globex.test"):
        assert login(app.test_client(), email).status_code == 302
    globex, admin_id = orgs[GLOBEX], _user_id(app, "admin@globex.test")
    _, revoker = new_key(app, globex, admin_id, ["sessions:read", "sessions:write"])
    with app.app_context():
        viewer_session = db.session.scalar(select(AuthSession).where(
            AuthSession.user_id == _user_id(app, "viewer@globex.test")))
        assert viewer_session is not None
        viewer_session_id, old_sid = viewer_session.id, viewer_session.workos_session_id
        org = db.session.get(Organization, globex)
        assert org is not None
        # A row as written before this rule: the WorkOS id in its details (its hash covers it; never rewritten).
        old_details = {"workos_session_id": old_sid, "nested": [{"workos_session_id": old_sid}]}
        audit.record(db.session, action="auth.login.succeeded", cause=Cause.by(Actor("user", admin_id)),
                     organization_id=globex,
                     target_type="session", target_id=viewer_session_id, details=old_details)
        db.session.commit()
        db.session.remove()
    revoked = app.test_client().post(f"/api/v1/sessions/{viewer_session_id}/revoke", headers=bearer(revoker), json={})
    assert revoked.status_code == 200, revoked.get_json()
    return {"organization_id": globex, "admin_id": admin_id, "old_sid": old_sid}


@pytest.mark.parametrize("scopes", [["audit:read"], ["audit:read", "sessions:read"], ["audit:read", "members:read"]])
def test_an_audit_reader_who_may_not_revoke_never_sees_a_workos_session_id(
        app: Flask, scenario: dict[str, Any], scopes: list[str]) -> None:
    _, secret = new_key(app, scenario["organization_id"], scenario["admin_id"], scopes)
    texts = _reads(app, secret)
    sids = _workos_session_ids(app)
    assert scenario["old_sid"] in sids
    leaked = sorted({sid for sid in sids for text in texts if sid in text})
    assert not leaked, f"{leaked} readable with {scopes}"
    events = app.test_client().get("/api/v1/audit-events?limit=200", headers=bearer(secret)).get_json()["data"]
    assert {e["action"] for e in events} >= SESSION_ACTIONS  # every session action was read, and hid the id
    for event in events:
        if event["action"] in SESSION_ACTIONS and "workos_session_id" not in event["details"]:
            assert event["details"]["session_id"] == event["target"]["id"], event  # new rows: our own id
    verified = app.test_client().get("/api/v1/audit-events/verify", headers=bearer(secret)).get_json()
    assert verified["ok"], verified  # the chain is intact: the stored rows were not rewritten


def test_a_reader_who_may_revoke_sessions_sees_old_rows_as_stored(app: Flask, scenario: dict[str, Any]) -> None:
    _, secret = new_key(app, scenario["organization_id"], scenario["admin_id"], ["audit:read", "sessions:write"])
    texts = _reads(app, secret)
    assert all(scenario["old_sid"] in text for text in (texts[0], texts[-2], texts[-1]))


def test_no_code_writes_a_workos_session_id_into_audit_details() -> None:
    # Every dict literal with a "workos_session_id" key in the package is the sessions API's own view (shown by
    # may_revoke), never audit details.
    root = pathlib.Path(hatidata_auth.__file__).parent
    owners = set()
    for source in root.rglob("*.py"):
        tree = ast.parse(source.read_text())
        for function in ast.walk(tree):
            if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                for node in ast.walk(function):
                    if isinstance(node, ast.Dict) and any(
                            isinstance(k, ast.Constant) and k.value == "workos_session_id" for k in node.keys):
                        owners.add(f"{source.relative_to(root)}:{function.name}")
    assert owners <= {"services/sessions.py:session_view"}, owners


def test_redaction_blanks_the_key_at_any_depth_and_keeps_the_rest() -> None:
    details = {"workos_session_id": "session_x", "a": [{"workos_session_id": "session_y", "b": 1}], "c": "d"}
    assert redacted(details) == {"workos_session_id": None, "a": [{"workos_session_id": None, "b": 1}], "c": "d"}
    assert '"session_x"' in json.dumps(details)  # the stored value is not changed
