"""One person per email across every writer of ``users`` (PostgreSQL; ``services.person_email``).

Every writer that may create a person for an email takes the email's lock, then looks for its person, and creates
only if none is found. Each test here is one writer meeting another transaction that holds the lock and has
inserted the email's person without committing yet (as any writer does between its lock and its commit): the writer
must wait on the lock and, once that transaction commits, use its person. Without the lock both created one and the
directory's membership and a sign-in's hung on two people (found by a break-it review of issue #14's work).

The writers: a sign-in (``sign_in_person.upsert``), the ``grant-admin`` command, a WorkOS ``organization_membership``
event, a directory user's first event (the insert's function, migration 0022), a stored directory user's activation
(``directory_people.person_for``), and a resync page (``reconcile.prepare_people``). The last test crosses two
real writers: a sign-in in progress and the applier. The lock-order tests cross a sign-in with an applier or an
admin holding the locks the other order would take (each a deadlock found by a break-it review), and the last
crossing no order removes, whose loser runs again (``db_conflicts.retrying``). ``tests/test_person_writers.py``
lists every writer."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select, text
from sqlalchemy.engine import Connection

from hatidata_auth.causes import NO_REQUEST, Actor
from hatidata_auth.extensions import db
from hatidata_auth.models import AuditEvent, DirectoryUser, Membership, Organization, User, new_id, utcnow
from hatidata_auth.services import (
    db_conflicts,
    inbox,
    inbox_worker,
    reconcile,
    sign_in_membership,
    sign_in_person,
    tenant_admin,
)
from hatidata_auth.services.person_email import EMAIL_LOCK
from tests.support.people import Replay
from tests.support.servers import EmulatorControl, http_json
from tests.test_inbox_batch_scope import ACME, DIRECTORIES, _prepare
from tests.test_inserted_user_race import _started, _wait_for_lock_wait

pytestmark = pytest.mark.postgres
EMAIL = "rafael.osei@partners.test"  # a domain no organization verified: every writer may link by it


def _acme(app: Flask) -> Organization:
    with app.app_context():
        org = db.session.scalar(select(Organization).where(Organization.workos_organization_id == ACME))
        assert org is not None
        db.session.expunge(org)
        return org


def _dsync_user(event: str, n: int, state: str) -> dict[str, Any]:
    stamp = f"2030-04-01T00:00:{n:02d}.000Z"
    return {"id": f"event_PEML{n:04d}", "event": event, "created_at": stamp,
            "data": {"object": "directory_user", "id": "directory_user_PEML1", "directory_id": DIRECTORIES[ACME],
                     "organization_id": ACME, "idp_id": "pe1", "email": EMAIL, "first_name": "Rafael",
                     "last_name": "Osei", "state": state, "custom_attributes": {}, "raw_attributes": {},
                     "created_at": stamp, "updated_at": stamp}}


def _store(app: Flask, events: list[dict[str, Any]]) -> None:
    with app.app_context():
        for payload in events:
            inbox.store(db.session(), payload)
        db.session.remove()


def _drain(app: Flask) -> None:
    inbox_worker.drain(db.session(), app.extensions["hatidata_workos"].client, limit=50)


def _held_person(email: str, workos_user_id: str | None = None) -> tuple[Connection, str]:
    """Another writer's transaction: it holds the email's lock and has inserted the email's person (claimed by
    *workos_user_id*, as an ``organization_membership`` event creates it), uncommitted."""
    conn = db.engine.connect()
    conn.execute(EMAIL_LOCK, {"email": email})
    person_id = new_id("usr")
    conn.execute(User.__table__.insert().values(id=person_id, email=email, workos_user_id=workos_user_id,
                                                created_at=utcnow(), updated_at=utcnow()))
    return conn, person_id


def _crossing(app: Flask, work: Callable[[], Any], wait: Callable[[], None], release: Callable[[], None]) -> None:
    """Run *work* (then commit) on a thread of its own; *wait* until it waits on a lock, then *release* what it
    waits for (*release* runs in any case); raise what *work* raised."""
    thread, errors = _started(app, work)
    try:
        wait()
    finally:
        release()
        thread.join(30)
    assert not errors, errors


def _meets_a_writer_in_progress(app: Flask, write: Callable[[], Any], workos_user_id: str | None = None) -> str:
    """Run *write* on a thread while another transaction holds the email and its new person (claimed by
    *workos_user_id*); that transaction commits once *write* waits on the lock. Returns the person's id, the only
    one with the email."""
    with app.app_context():
        conn, person_id = _held_person(EMAIL, workos_user_id)

        def release() -> None:
            conn.commit()
            conn.close()

        _crossing(app, write, lambda: _wait_for_lock_wait("%", event="advisory"), release)
        people = list(db.session.scalars(select(User.id).where(User.email == EMAIL)))
        assert people == [person_id], f"{len(people)} people hold {EMAIL}"
        db.session.remove()
        return person_id


def _membership_of(app: Flask, person_id: str) -> Membership:
    with app.app_context():
        found = db.session.scalar(select(Membership).where(Membership.user_id == person_id))
        assert found is not None, "the writer's membership is not on the email's person"
        db.session.expunge(found)
        return found


def test_a_sign_in(app: Flask) -> None:
    _prepare(app)
    org = _acme(app)
    person = _meets_a_writer_in_progress(app, lambda: sign_in_person.upsert(
        db.session(), org, {"id": "user_PEML_signin", "email": EMAIL, "first_name": "Rafael"}, utcnow()))
    with app.app_context():
        assert db.session.get(User, person).workos_user_id == "user_PEML_signin"


def test_a_sign_in_finds_the_person_its_workos_user_got_meanwhile(app: Flask) -> None:
    """An ``organization_membership`` event (or a second sign-in) created the person claimed by the same WorkOS user
    while this sign-in looked: its locked look finds it by WorkOS id (before, only unclaimed people were looked for
    again, and the insert broke the WorkOS id's uniqueness: a sign-in answered 500). From the break-it review."""
    _prepare(app)
    org = _acme(app)
    person = _meets_a_writer_in_progress(app, lambda: sign_in_person.upsert(
        db.session(), org, {"id": "user_PEML_same", "email": EMAIL}, utcnow()), workos_user_id="user_PEML_same")
    with app.app_context():
        assert db.session.scalar(select(User.id).where(User.workos_user_id == "user_PEML_same")) == person


def test_a_sign_in_whose_email_workos_changed_does_not_take_it_from_the_person_made_meanwhile(app: Flask) -> None:
    """WorkOS changed the signing-in user's email to one another writer is giving its new person: the sign-in waits
    for the email, finds it held and keeps the old one (two people are never merged: ``user.email_change_refused``).
    Before, the email moved without a lock or a look, and two people held it (break-it review)."""
    _prepare(app)
    org = _acme(app)
    with app.app_context():
        db.session.add(User(email=f"old.{EMAIL}", workos_user_id="user_PEML_moved"))
        db.session.commit()
        db.session.remove()
    _meets_a_writer_in_progress(app, lambda: sign_in_person.upsert(
        db.session(), org, {"id": "user_PEML_moved", "email": EMAIL}, utcnow()))
    with app.app_context():
        moved = db.session.scalar(select(User).where(User.workos_user_id == "user_PEML_moved"))
        assert moved is not None
        assert moved.email == f"old.{EMAIL}"
        refused = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "user.email_change_refused"))
        assert refused is not None
        assert refused.target_id == moved.id


def test_a_sign_in_takes_the_organization_before_the_email(app: Flask) -> None:
    """An applier's batch holds the organization's row exclusively (a directory's activation) and then waits for
    an email's lock (a new user's insert). A first sign-in with that email locks the organization's row before the
    email, so it waits for that batch instead of holding the email the batch waits for while its membership's
    foreign key waits for the batch: a deadlock that failed the sign-in with a 503 (break-it review)."""
    _prepare(app)
    org = _acme(app)
    with app.app_context():
        applier = db.engine.connect()
        applier.execute(select(Organization.id).where(Organization.id == org.id).with_for_update())

        def sign_in() -> None:
            s = db.session()
            signed_in = sign_in_person.upsert(s, org, {"id": "user_PEML_order", "email": EMAIL}, utcnow())
            sign_in_membership.upsert(s, app.extensions["hatidata_workos"].client, s.merge(org), signed_in, None,
                                      NO_REQUEST)

        def batch_reaches_the_email() -> None:
            _wait_for_lock_wait("%")
            assert applier.scalar(text("SELECT directory_user_no_person(:email)"), {"email": EMAIL})

        def release() -> None:
            applier.commit()
            applier.close()

        _crossing(app, sign_in, batch_reaches_the_email, release)
        assert _membership_of(app, db.session.scalar(select(User.id).where(User.email == EMAIL)))


def test_a_batch_locks_its_directory_changes_before_any_email(app: Flask) -> None:
    """A batch applies a new user (its email's lock) and then a ``dsync.activated`` of the same organization (its
    row ``FOR UPDATE``), while a first sign-in with that email holds the row key-shared (any sign-in or membership
    insert in progress does): the batch now locks the row before any event, so the sign-in never waits for an email
    the batch holds while the batch waits for it (before: a deadlock that failed the sign-in; break-it review)."""
    _prepare(app)
    org = _acme(app)
    activated = {"id": "event_PEML0009", "event": "dsync.activated", "created_at": "2030-04-01T00:00:09.000Z",
                 "data": {"object": "directory", "id": DIRECTORIES[ACME], "organization_id": ACME, "state": "active",
                          "type": "okta scim v2.0", "name": "Acme", "domains": []}}
    _store(app, [_dsync_user("dsync.user.created", 1, "active"), activated])
    with app.app_context():
        other = db.engine.connect()  # another sign-in's membership insert, in progress
        other.execute(text("SELECT id FROM organizations WHERE id = :id FOR KEY SHARE"), {"id": org.id})
        applier, batch_errors = _started(app, lambda: _drain(app))
        _wait_for_lock_wait("%FOR UPDATE%")  # the batch, on the row (its new user's email held, before the fix)

        def sign_in() -> None:
            s = db.session()
            signed_in = sign_in_person.upsert(s, org, {"id": "user_PEML_first", "email": EMAIL}, utcnow())
            sign_in_membership.upsert(s, app.extensions["hatidata_workos"].client, s.merge(org), signed_in, None,
                                      NO_REQUEST)

        def both_waiting_or_through() -> None:
            for _ in range(40):  # the sign-in waits too (on the row or, before the fix, the email), or is through
                with db.engine.connect() as c:
                    if c.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")) > 1:
                        return
                time.sleep(0.05)

        def release() -> None:
            other.commit()
            other.close()

        try:
            _crossing(app, sign_in, both_waiting_or_through, release)
        finally:
            applier.join(30)
        assert not batch_errors, batch_errors
        assert len(list(db.session.scalars(select(User.id).where(User.email == EMAIL)))) == 1


MEMBER_KEY = text("SELECT pg_advisory_xact_lock(hashtextextended('user:directory_user_PEML1', 0))")


def _member(app: Flask, org: Organization, workos_user_id: str | None) -> str:
    """A person (claimed by *workos_user_id*, or a directory's unclaimed one) whose membership of *org* hangs on the
    directory user ``directory_user_PEML1``; returns the person's id."""
    with app.app_context():
        person = User(email=EMAIL, workos_user_id=workos_user_id)
        db.session.add(person)
        db.session.flush()
        db.session.add(Membership(organization_id=org.id, user_id=person.id, source="directory", status="active",
                                  role="viewer", role_source="mapping", directory_user_id="directory_user_PEML1"))
        db.session.commit()
        person_id = person.id
        db.session.remove()
        return person_id


def _signs_in(app: Flask, org: Organization, workos_user_id: str) -> Callable[[], None]:
    def sign_in() -> None:
        s = db.session()
        signed_in = sign_in_person.upsert(s, org, {"id": workos_user_id, "email": EMAIL}, utcnow())
        sign_in_membership.upsert(s, app.extensions["hatidata_workos"].client, s.merge(org), signed_in, None,
                                  NO_REQUEST)
    return sign_in


@pytest.mark.parametrize("claimed", [True, False], ids=["found_by_workos_id", "found_by_email"])
def test_a_sign_in_takes_its_member_s_key_before_writing_the_person(app: Flask, claimed: bool) -> None:
    """The person's membership hangs on a directory user whose event an applier holds (its key, from the claim) and
    that writes the person (its names): the sign-in waits for that key before it writes the person. Before, it
    wrote the person first (its last sign-in time, its WorkOS id) and then waited for the key while the applier
    waited for the person's row: a deadlock (break-it reviews; a directory's person signing in for the first time is
    found by email)."""
    _prepare(app)
    org = _acme(app)
    person_id = _member(app, org, "user_PEML_member" if claimed else None)
    with app.app_context():
        applier = db.engine.connect()
        applier.execute(MEMBER_KEY)

        def applier_writes_the_person() -> None:
            _wait_for_lock_wait("%", event="advisory")
            applier.execute(text("UPDATE users SET first_name = 'Renamed' WHERE id = :id"), {"id": person_id})

        def release() -> None:
            applier.commit()
            applier.close()

        _crossing(app, _signs_in(app, org, "user_PEML_member"), applier_writes_the_person, release)


def test_a_sign_in_takes_the_organization_before_its_member_s_key(app: Flask) -> None:
    """An admin's removal of the member (``tenant_admin.remove_member``: the organization ``FOR UPDATE``, then the
    member's key) while the member signs in: the sign-in key-shares the organization first, so it waits for the
    admin before taking the key. Before, it held the key and then waited for the organization (its session's
    foreign key) while the admin waited for the key (third break-it review)."""
    _prepare(app)
    org = _acme(app)
    _member(app, org, "user_PEML_member")
    with app.app_context():
        admin = db.engine.connect()
        admin.execute(select(Organization.id).where(Organization.id == org.id).with_for_update())

        def admin_takes_the_key() -> None:
            _wait_for_lock_wait("%")
            admin.execute(MEMBER_KEY)

        def release() -> None:
            admin.commit()
            admin.close()

        _crossing(app, _signs_in(app, org, "user_PEML_member"), admin_takes_the_key, release)


def test_a_sign_in_that_loses_a_deadlock_runs_again(app: Flask) -> None:
    """The crossing no single order avoids: an applier's batch holds a member's key from its claim and then locks the
    organization exclusively (a directory's activation in the same batch) while that member signs in (the
    organization key-shared, then waiting for the key). PostgreSQL rolls back the sign-in, which waited first, and
    the sign-in runs again (``db_conflicts.retrying``): it succeeds."""
    _prepare(app)
    org = _acme(app)
    person_id = _member(app, org, "user_PEML_member")
    sign_in = _signs_in(app, org, "user_PEML_member")
    with app.app_context():
        applier = db.engine.connect()
        applier.execute(MEMBER_KEY)

        def signs_in_committed() -> None:
            sign_in()
            db.session.commit()

        def applier_locks_the_organization() -> None:
            _wait_for_lock_wait("%", event="advisory")
            applier.execute(select(Organization.id).where(Organization.id == org.id).with_for_update())

        def release() -> None:
            applier.commit()
            applier.close()

        _crossing(app, lambda: db_conflicts.retrying(db.session(), signs_in_committed, what="a sign-in"),
                  applier_locks_the_organization, release)
        assert db.session.get(User, person_id).last_login_at is not None


def test_the_grant_admin_command(app: Flask) -> None:
    _prepare(app)
    org = _acme(app)
    person = _meets_a_writer_in_progress(app, lambda: tenant_admin.grant_admin(
        db.session(), organization_id=org.id, email=EMAIL, actor=Actor.system("test")))
    assert _membership_of(app, person).role == "admin"


def test_an_organization_membership_event(app: Flask, emulator_control: EmulatorControl) -> None:
    _prepare(app)
    replay = Replay(emulator_control, app)
    api = f"{emulator_control.base_url}/user_management"
    user = http_json("POST", f"{api}/users", {"email": EMAIL}, emulator_control.headers)[1]
    http_json("POST", f"{api}/organization_memberships", {"user_id": user["id"], "organization_id": ACME},
              emulator_control.headers)
    _store(app, [e for e in replay.new_events() if e["event"].startswith("organization_membership.")])
    person = _meets_a_writer_in_progress(app, lambda: _drain(app))
    assert _membership_of(app, person).status == "active"


def test_a_directory_user_s_first_event(app: Flask) -> None:
    _prepare(app)
    _store(app, [_dsync_user("dsync.user.created", 1, "active")])
    person = _meets_a_writer_in_progress(app, lambda: _drain(app))
    assert _membership_of(app, person).status == "active"


def test_a_stored_directory_user_s_activation(app: Flask) -> None:
    _prepare(app)
    _store(app, [_dsync_user("dsync.user.created", 1, "inactive")])
    with app.app_context():
        _drain(app)
        assert db.session.scalar(select(func.count()).select_from(User).where(User.email == EMAIL)) == 0
        db.session.remove()
    _store(app, [_dsync_user("dsync.user.updated", 2, "active")])
    person = _meets_a_writer_in_progress(app, lambda: _drain(app))
    assert _membership_of(app, person).status == "active"


def test_a_resync_page(app: Flask, emulator_control: EmulatorControl) -> None:
    _prepare(app)
    replay = Replay(emulator_control, app)
    replay.ctl("POST", f"/directories/{DIRECTORIES[ACME]}/users",
               {"email": EMAIL, "first_name": "Rafael", "last_name": "Osei", "groups": ["HatiData Developers"]})
    replay.miss()
    org = _acme(app)
    person = _meets_a_writer_in_progress(app, lambda: reconcile.full_resync(
        db.session(), app.extensions["hatidata_workos"].client, organization_id=org.id))
    assert _membership_of(app, person).status == "active"


def test_a_sign_in_in_progress_and_the_applier_end_with_one_person(app: Flask) -> None:
    """The sign-in's transaction has created the person (holding the email's lock) when the applier inserts a
    directory user with that email: the insert's function waits, then finds the sign-in's person and links it."""
    _prepare(app)
    org = _acme(app)
    _store(app, [_dsync_user("dsync.user.created", 1, "active")])
    with app.app_context():
        signing_in = db.session()
        person_id = sign_in_person.upsert(signing_in, signing_in.merge(org),
                                          {"id": "user_PEML_signin", "email": EMAIL}, utcnow()).person.id

        def release() -> None:
            signing_in.commit()
            db.session.remove()

        _crossing(app, lambda: _drain(app), lambda: _wait_for_lock_wait("%", event="advisory"), release)
    with app.app_context():
        assert list(db.session.scalars(select(User.id).where(User.email == EMAIL))) == [person_id]
        du = db.session.scalar(select(DirectoryUser).where(DirectoryUser.workos_id == "directory_user_PEML1"))
        assert du is not None
        assert du.user_id == person_id
    assert _membership_of(app, person_id).status == "active"
