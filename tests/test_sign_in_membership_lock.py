"""A removal during a sign-in: the sign-in holds its membership's row from its first look to its commit
(``sign_in_person._held_membership``, ``membership_rows.locked``), so WorkOS's ``organization_membership.deleted``
applied meanwhile waits for it, then deprovisions the member and ends every session, the one the sign-in just
recorded included. A break-it review found a sign-in that left the membership alone (a role set by hand or by the
mappings) deciding on an unlocked read: the removal ended the member's other sessions, not the sign-in's, and once
WorkOS added the member back that session was live again. An IdP-decided member is checked too (its sign-in
writes the row)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from hatidata_auth.extensions import db
from hatidata_auth.models import AuthSession, Membership, User
from hatidata_auth.services import credential_status, inbox, inbox_worker, login, sign_in_membership
from hatidata_auth.services.session_refresh import Tokens
from hatidata_auth.services.sessions import SessionPolicy
from tests.test_inbox_batch_scope import ACME, _envelope, _prepare, _stamp
from tests.test_inserted_user_race import _started
from tests.test_sign_in_batch_locks import _org

pytestmark = pytest.mark.postgres

WORKOS_USER = "user_SML_kept"
EMAIL = "kept.member@partners.test"
SID = "session_SML_kept"


def _om(event: str, status: str) -> dict[str, Any]:
    stamp = _stamp()
    return _envelope(event, {"object": "organization_membership", "id": "om_SML_kept", "user_id": WORKOS_USER,
                             "organization_id": ACME, "status": status, "role": {"slug": "developer"},
                             "created_at": "2030-01-01T00:00:00.000Z", "updated_at": stamp}, stamp)


def _apply(app: Flask, payload: dict[str, Any]) -> None:
    with app.app_context():
        inbox.store(db.session(), payload)
        db.session.remove()
        inbox_worker.drain(db.session(), app.extensions["hatidata_workos"].client, limit=50)
        db.session.remove()


@pytest.mark.parametrize(("role_source", "source"), [("manual", "sso"), ("mapping", "sso"), ("idp", "sso")])
def test_a_removal_during_a_sign_in_waits_for_it_and_ends_its_session(
        app: Flask, monkeypatch: pytest.MonkeyPatch, role_source: str, source: str) -> None:
    _prepare(app)
    acme = _org(app, ACME)
    with app.app_context():
        person = User(email=EMAIL, workos_user_id=WORKOS_USER)
        db.session.add(person)
        db.session.flush()
        db.session.add(Membership(organization_id=acme.id, user_id=person.id, role="developer",
                                  role_source=role_source, source=source, status="active",
                                  workos_membership_id="om_SML_kept"))
        db.session.commit()
        db.session.remove()

    decided, go = threading.Event(), threading.Event()
    real = sign_in_membership.upsert

    def paused(*args: Any, **kwargs: Any) -> Any:
        m = real(*args, **kwargs)
        decided.set()  # the sign-in has decided: active, kept
        assert go.wait(30)
        return m

    monkeypatch.setattr(sign_in_membership, "upsert", paused)
    result: dict[str, Any] = {}

    def sign_in() -> None:
        tokens = Tokens(access_token="x", refresh_token="y", user={"id": WORKOS_USER, "email": EMAIL},
                        organization_id=ACME, authentication_method="Password")
        result["r"] = login.complete_login(db.session(), app.extensions["hatidata_workos"].client, tokens=tokens,
                                           claims={"sid": SID, "org_id": ACME, "role": "developer"},
                                           remember=False, policy=SessionPolicy())

    thread, errors = _started(app, sign_in)
    try:
        assert decided.wait(30)
        applier = threading.Thread(target=_apply, args=(app, _om("organization_membership.deleted", "inactive")))
        applier.start()
        applier.join(5)
        event_waited = applier.is_alive()
    finally:
        go.set()
        thread.join(30)
        applier.join(30)
    assert not errors
    assert event_waited, "the removal waited for the sign-in holding the membership"
    with app.app_context():
        m = db.session.scalar(select(Membership).where(Membership.organization_id == acme.id))
        rec = db.session.scalar(select(AuthSession).where(AuthSession.workos_session_id == SID))
        assert m is not None
        assert rec is not None
        assert m.status == "deprovisioned"
        assert rec.revoked_at is not None, "the session the sign-in recorded was ended by the removal"
        db.session.remove()
    _apply(app, _om("organization_membership.updated", "active"))  # WorkOS adds the member back later
    with app.app_context():
        status = credential_status.load_session_status(db.session(), SID, default_cache_ttl=30, active_ttl=86400)
        assert status is not None
        assert not status.active, "a session from before the removal stays ended"
        db.session.remove()
