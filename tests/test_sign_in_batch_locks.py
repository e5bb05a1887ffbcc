"""A sign-in holds its membership's row before it writes the person (``sign_in_person._held_membership``), in the
order of the appliers' batches, which hold a membership (an ``organization_membership`` event of the person) and
then write the person for a later event (a name change from another organization's directory that lists them). A
sign-in that took the row after writing the person (``last_login_at``) deadlocked with such a batch: two break-it
reviews found it for every kind of membership (a role set by hand, by the mappings, by the IdP, the default). Now
the sign-in waits for the batch, holding nothing it needs, and neither is rolled back."""
from __future__ import annotations

import threading
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from hatidata_auth.causes import NO_REQUEST
from hatidata_auth.extensions import db
from hatidata_auth.models import Membership, Organization, User, WebhookEvent, utcnow
from hatidata_auth.services import inbox, inbox_worker, sign_in_membership, sign_in_person
from tests.test_inbox_batch_scope import ACME, GLOBEX, _envelope, _prepare, _stamp, _user
from tests.test_inserted_user_race import _started

pytestmark = pytest.mark.postgres

WORKOS_USER = "user_SBL_member"
EMAIL = "brk@globex.test"  # the emulator-shaped event helper names the person "brk"


def _org(app: Flask, workos_id: str) -> Organization:
    with app.app_context():
        org = db.session.scalar(select(Organization).where(Organization.workos_organization_id == workos_id))
        db.session.expunge(org)
        return org


def _drain(app: Flask) -> None:
    with app.app_context():
        inbox_worker.drain(db.session(), app.extensions["hatidata_workos"].client, limit=50)
        db.session.remove()


def _store(app: Flask, events: list[dict[str, Any]]) -> None:
    with app.app_context():
        for e in events:
            inbox.store(db.session(), e)
        db.session.remove()


@pytest.mark.parametrize(("role_source", "source"), [("manual", "manual"), ("mapping", "sso"), ("idp", "sso"),
                                                    ("default", "sso")])
def test_a_sign_in_waits_for_a_batch_holding_its_membership_without_a_deadlock(
        app: Flask, monkeypatch: pytest.MonkeyPatch, role_source: str, source: str) -> None:
    _prepare(app)
    acme = _org(app, ACME)
    # Globex's directory lists the person (it speaks for their names); in Acme they are a member of each kind.
    _store(app, [_user(GLOBEX, 1, "own", person="brk")])
    _drain(app)
    with app.app_context():
        person = db.session.scalar(select(User).where(User.email == EMAIL))
        assert person is not None
        person.workos_user_id = WORKOS_USER
        db.session.add(Membership(organization_id=acme.id, user_id=person.id, role="developer",
                                  role_source=role_source, source=source, status="active"))
        db.session.commit()
        db.session.remove()
    stamp = _stamp()
    om = _envelope("organization_membership.updated", {
        "object": "organization_membership", "id": "om_SBL_member", "user_id": WORKOS_USER,
        "organization_id": ACME, "status": "active", "role": {"slug": "developer"},
        "created_at": "2030-01-01T00:00:00.000Z", "updated_at": stamp}, stamp)
    rename = _user(GLOBEX, 1, "own", person="brk")  # a later stamp: a new last name for the person
    _store(app, [om, rename])

    paused, resume = threading.Event(), threading.Event()
    real = inbox_worker.apply_event

    def apply_event(session: Any, client: Any, payload: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        ctx = real(session, client, payload, *args, **kwargs)
        if payload["event"].startswith("organization_membership.") and not paused.is_set():
            session.flush()  # as the next event's first query would: the batch holds the Acme membership now
            paused.set()
            assert resume.wait(30)
        return ctx

    monkeypatch.setattr(inbox_worker, "apply_event", apply_event)
    applier, batch_errors = _started(app, lambda: inbox_worker.apply_batch(
        db.session(), app.extensions["hatidata_workos"].client, limit=20))
    assert paused.wait(30)

    def sign_in() -> None:
        s = db.session()
        signed = sign_in_person.upsert(s, s.merge(acme), {"id": WORKOS_USER, "email": EMAIL}, utcnow())
        sign_in_membership.upsert(s, app.extensions["hatidata_workos"].client, s.merge(acme), signed, "developer",
                                  NO_REQUEST)

    thread, errors = _started(app, sign_in)
    try:
        thread.join(2)  # it waits for the batch's membership, holding nothing the batch needs
    finally:
        resume.set()
        thread.join(30)
        applier.join(30)
    assert not errors
    assert not batch_errors
    with app.app_context():
        statuses = db.session.scalars(select(WebhookEvent.status).where(
            WebhookEvent.event_id.in_([om["id"], rename["id"]]))).all()
    assert statuses == ["applied", "applied"]
