"""A sign-in and a WorkOS ``organization_membership`` event of the same person and organization, interleaved: the
row either writes is the committed one, locked (``services.membership_rows``).

From a break-it review of 932b339 (the sign-in wrote the membership it had read before writing the person): a
first sign-in that met ``organization_membership.created`` (JIT: both come from one WorkOS action) broke
``uq_membership_org_user`` (the callback answered 500), and one that met ``organization_membership.deleted`` wrote
its claimed role onto the deprovisioned row and audited a change that never took effect (a removal during a sign-in:
``tests/test_sign_in_membership_lock.py``). Both sides are real code:
the sign-in is ``sign_in_person.upsert`` + ``sign_in_membership.upsert`` (what ``login.complete_login`` runs), the
event is applied by the applier (``inbox_worker.drain``). The sign-in is paused right after its membership look
(at ``directory_names.listed_by_a_directory``) so the interleaving is deterministic; the reverse order (the
sign-in's insert first, uncommitted, while the event applies) is tested too."""
from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select, update

from hatidata_auth.causes import NO_REQUEST
from hatidata_auth.extensions import db
from hatidata_auth.models import DirectoryUser, Membership, Organization, User, WebhookEvent, utcnow
from hatidata_auth.services import directory_names, inbox, inbox_worker, sign_in_membership, sign_in_person
from tests.support.people import Replay
from tests.support.servers import EmulatorControl, http_json
from tests.test_inbox_batch_scope import ACME, _prepare
from tests.test_inserted_user_race import _started, _wait_for_lock_wait
from tests.test_person_email_race import EMAIL as DIRECTORY_EMAIL
from tests.test_person_email_race import _acme, _dsync_user

pytestmark = pytest.mark.postgres  # SQLite runs one writer at a time, from the sign-in's first statement

EMAIL = "nadia.brandt@partners.test"  # a domain no organization verified: both writers may link by it


def _sign_in(app: Flask, org: Organization, workos_user_id: str, role: str | None = None) -> Any:
    s = db.session()
    signed = sign_in_person.upsert(s, s.merge(org), {"id": workos_user_id, "email": EMAIL}, utcnow())
    return sign_in_membership.upsert(s, app.extensions["hatidata_workos"].client, s.merge(org), signed, role,
                                     NO_REQUEST)


def _paused_at_listing(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    reached, go = threading.Event(), threading.Event()
    real = directory_names.listed_by_a_directory

    def paused(session: Any, user_id: str | None) -> bool:
        if threading.current_thread() is not threading.main_thread():
            reached.set()
            assert go.wait(30)
        return real(session, user_id)

    monkeypatch.setattr(directory_names, "listed_by_a_directory", paused)
    return reached, go


def _workos_member(emulator_control: EmulatorControl, app: Flask, status: str = "active") -> tuple[str, list[Any]]:
    replay = Replay(emulator_control, app)
    api = f"{emulator_control.base_url}/user_management"
    user = http_json("POST", f"{api}/users", {"email": EMAIL}, emulator_control.headers)[1]
    http_json("POST", f"{api}/organization_memberships", {"user_id": user["id"], "organization_id": ACME},
              emulator_control.headers)
    return user["id"], [e for e in replay.new_events() if e["event"].startswith("organization_membership.")]


def _store_and_drain(app: Flask, events: list[dict[str, Any]]) -> None:
    with app.app_context():
        for payload in events:
            inbox.store(db.session(), payload)
        db.session.remove()
        inbox_worker.drain(db.session(), app.extensions["hatidata_workos"].client, limit=50)
        db.session.remove()


@pytest.mark.parametrize("claimed", [True, False], ids=["person_claimed", "person_unclaimed"])
def test_first_sign_in_meets_organization_membership_created(app: Flask, emulator_control: EmulatorControl,
                                                            monkeypatch: pytest.MonkeyPatch, claimed: bool) -> None:
    """WorkOS adds the user to the organization (``organization_membership.created``) while their first sign-in into
    it is under way (JIT: both come from the same WorkOS action). Expected: one membership, the sign-in succeeds."""
    _prepare(app)
    org = _acme(app)
    workos_user_id, events = _workos_member(emulator_control, app)
    with app.app_context():
        # the person exists already: signed in to another organization before (claimed) or created by a
        # directory / grant-admin (unclaimed)
        db.session.add(User(email=EMAIL, workos_user_id=workos_user_id if claimed else None))
        db.session.commit()
        db.session.remove()
    reached, go = _paused_at_listing(monkeypatch)
    thread, errors = _started(app, lambda: _sign_in(app, org, workos_user_id))
    try:
        assert reached.wait(30)
        _store_and_drain(app, events)  # the event's transaction commits its membership
    finally:
        go.set()
        thread.join(30)
    with app.app_context():
        n = db.session.scalar(select(func.count()).select_from(Membership).where(Membership.organization_id == org.id))
    assert n == 1
    assert not errors, f"sign-in failed: {errors!r}"


def test_an_event_meets_a_sign_ins_uncommitted_membership(app: Flask, emulator_control: EmulatorControl) -> None:
    """The reverse order: the sign-in has inserted the membership and not committed when the applier applies
    ``organization_membership.created``; the event waits for it and updates that row (applied, not failed)."""
    _prepare(app)
    org = _acme(app)
    workos_user_id, events = _workos_member(emulator_control, app)
    inserted, go = threading.Event(), threading.Event()

    def sign_in() -> None:
        _sign_in(app, org, workos_user_id)
        inserted.set()
        assert go.wait(30)

    thread, errors = _started(app, sign_in)
    assert inserted.wait(30)
    applier = threading.Thread(target=_store_and_drain, args=(app, events))
    applier.start()
    applier.join(1.0)
    assert applier.is_alive(), "the event waits for the sign-in's uncommitted row"
    go.set()
    thread.join(30)
    applier.join(30)
    assert not errors
    with app.app_context():
        statuses = db.session.scalars(select(WebhookEvent.status).where(
            WebhookEvent.event_id.in_([e["id"] for e in events]))).all()
        m = db.session.scalars(select(Membership).where(Membership.organization_id == org.id)).one()
        assert (m.status, m.workos_membership_id) == ("active", events[0]["data"]["id"])
    assert set(statuses) == {"applied"}, statuses


def test_a_directory_event_meeting_a_first_sign_ins_membership_is_applied_again(app: Flask) -> None:
    """``dsync.user.created`` of a person whose first sign-in into the organization has inserted the membership,
    uncommitted: the directory's insert waits for it, then breaks ``uq_membership_org_user`` (its batch's reads
    predate the row). The event is not ``failed`` (a second review found it so, needing a replay): it stays
    ``received``, and the next try, due after ``RETRY_DELAY``, links the sign-in's row to the directory user."""
    _prepare(app)
    org = _acme(app)
    with app.app_context():  # the person exists (signed in elsewhere before): found by WorkOS id, no email lock
        db.session.add(User(email=DIRECTORY_EMAIL, workos_user_id="user_MRR_dir", first_name="Rafael",
                            last_name="Osei"))
        db.session.commit()
        db.session.remove()
    inserted, go = threading.Event(), threading.Event()

    def sign_in() -> None:
        s = db.session()
        signed = sign_in_person.upsert(s, s.merge(org), {"id": "user_MRR_dir", "email": DIRECTORY_EMAIL,
                                                         "first_name": "Rafael", "last_name": "Osei"}, utcnow())
        sign_in_membership.upsert(s, app.extensions["hatidata_workos"].client, s.merge(org), signed, None,
                                  NO_REQUEST)
        inserted.set()
        assert go.wait(30)

    thread, errors = _started(app, sign_in)
    assert inserted.wait(30)
    event = _dsync_user("dsync.user.created", 1, "active")
    with app.app_context():
        inbox.store(db.session(), event)
        db.session.remove()

    def apply() -> None:
        with app.app_context():
            inbox_worker.drain(db.session(), app.extensions["hatidata_workos"].client, limit=50)
            db.session.remove()

    applier = threading.Thread(target=apply)
    applier.start()
    try:
        with app.app_context():
            _wait_for_lock_wait("INSERT INTO memberships%", event="transactionid")  # the applier's ORM insert waits
    finally:
        go.set()
        thread.join(30)
        applier.join(30)
    assert not errors, errors
    with app.app_context():
        row = db.session.scalar(select(WebhookEvent).where(WebhookEvent.event_id == event["id"]))
        m = db.session.scalars(select(Membership).where(Membership.organization_id == org.id)).one()
        du = db.session.scalar(select(DirectoryUser).where(DirectoryUser.workos_id == "directory_user_PEML1"))
        assert row is not None
        assert (row.status, row.attempts) == ("received", 1), (row.status, row.last_error)
        assert "uq_membership_org_user" in str(row.last_error)
        db.session.execute(update(WebhookEvent).where(WebhookEvent.id == row.id).values(
            updated_at=row.updated_at - inbox_worker.RETRY_DELAY - timedelta(seconds=1)))  # due again now
        db.session.commit()
        inbox_worker.drain(db.session(), app.extensions["hatidata_workos"].client, limit=50)
        db.session.expire_all()
        assert db.session.scalar(select(WebhookEvent.status).where(WebhookEvent.id == row.id)) == "applied"
        m = db.session.scalars(select(Membership).where(Membership.organization_id == org.id)).one()
        du = db.session.scalar(select(DirectoryUser).where(DirectoryUser.workos_id == "directory_user_PEML1"))
        assert du is not None
        assert (m.source, m.directory_user_id, du.user_id) == ("directory", "directory_user_PEML1", m.user_id)
