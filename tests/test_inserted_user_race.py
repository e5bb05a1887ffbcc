"""A directory user's insert that waited (PostgreSQL, issue #14): the applier's ``INSERT … ON CONFLICT DO NOTHING``
of a new user waits on another transaction's uncommitted row of the same (organization, WorkOS id), which then rolls
back. What is committed meanwhile must count: a person a login created with the user's email (one person per email),
a group created or deleted (the role of the user's live groups). And the applier may wait after its insert too:
linking a stored person may wait on that person's names lock; a group committed during that wait must count.

Found by a break-it review: answering the person and group lookups with subqueries in the insert's own ``RETURNING``
clause read the snapshot of the statement's start, older than those commits. Each test fails with that answer (and
with the functions declared STABLE); the insert now asks VOLATILE functions, whose queries take a fresh snapshot
(``events.directory_insert``, migration 0021)."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, text

from hatidata_auth.extensions import db
from hatidata_auth.models import (
    DirectoryGroup,
    DirectoryGroupMembership,
    DirectoryUser,
    Membership,
    Organization,
    User,
    new_id,
    utcnow,
)
from hatidata_auth.services import inbox, inbox_worker
from hatidata_auth.services.directory_names import PERSON_NAMES_LOCK
from tests.test_inbox_batch_scope import ACME, ADMINS, DIRECTORIES, _prepare

pytestmark = pytest.mark.postgres
EMAIL = "pat@shared.test"
USER = "directory_user_RACE1"


def _user_created(n: int) -> dict[str, Any]:
    stamp = f"2030-03-01T00:00:{n:02d}.000Z"
    return {"id": f"event_RACE{n:04d}", "event": "dsync.user.created", "created_at": stamp,
            "data": {"object": "directory_user", "id": USER, "directory_id": DIRECTORIES[ACME],
                     "organization_id": ACME, "idp_id": "r1", "email": EMAIL, "first_name": "P", "last_name": "R",
                     "state": "active", "custom_attributes": {}, "raw_attributes": {},
                     "created_at": stamp, "updated_at": stamp}}


def _blocked_insert(org_id: str) -> Any:
    """Another transaction inserts the same directory user and keeps its transaction open."""
    conn = db.engine.connect()
    conn.execute(DirectoryUser.__table__.insert().values(
        id=new_id("du"), organization_id=org_id, workos_id=USER, directory_id=DIRECTORIES[ACME], state="active",
        attributes={}, created_at=utcnow(), updated_at=utcnow()))
    return conn


def _wait_for_lock_wait(query: str = "INSERT INTO directory_users%", event: str = "%") -> None:
    """Until a statement whose text starts like *query* (an ``ILIKE`` pattern) waits on a lock of a kind like
    *event* (``advisory``, ``transactionid``, ...)."""
    for _ in range(100):
        with db.engine.connect() as c:
            n = c.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                              "AND query ILIKE :query AND wait_event LIKE :event"), {"query": query, "event": event})
        if n:
            return
        time.sleep(0.05)
    raise AssertionError(f"no statement like {query!r} waited on a lock like {event!r}")


def _started(app: Flask, work: Callable[[], Any]) -> tuple[threading.Thread, list[BaseException]]:
    """*work* (then a commit) started on a thread of its own, in an app context, and the errors it raises."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with app.app_context():
                work()
                db.session.commit()
                db.session.remove()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors


def _applying(app: Flask) -> tuple[threading.Thread, list[BaseException]]:
    """An applier's batch started on a thread of its own, and the errors it raises."""
    return _started(app, lambda: inbox_worker.apply_batch(db.session(), app.extensions["hatidata_workos"].client,
                                                           limit=20))


def _run(app: Flask, meanwhile: Any) -> None:
    with app.app_context():
        org_id = db.session.scalar(select(Organization.id).where(Organization.workos_organization_id == ACME))
        inbox.store(db.session(), _user_created(1))
        db.session.remove()
        other = _blocked_insert(org_id)
        t, errors = _applying(app)
        _wait_for_lock_wait()
        meanwhile(org_id)  # committed while the applier's insert waits
        other.rollback()  # the concurrent insert is abandoned: the applier's insert goes ahead
        other.close()
        t.join(30)
        assert not errors, errors


def test_a_person_committed_while_the_insert_waited_is_found(app: Flask) -> None:
    _prepare(app)

    def login(_org_id: str) -> None:
        s = db.session()
        s.add(User(email=EMAIL, workos_user_id="user_login_1"))
        s.commit()
        db.session.remove()

    _run(app, login)
    with app.app_context():
        people = list(db.session.scalars(select(User.id).where(User.email == EMAIL)))
        assert len(people) == 1, f"{len(people)} persons hold {EMAIL}"


def _admins(org_id: str) -> DirectoryGroup:
    return DirectoryGroup(organization_id=org_id, workos_id=ADMINS, directory_id=DIRECTORIES[ACME],
                          name="HatiData Admins", idp_id="HatiData Admins")


def _stored_before(app: Flask, *, group: bool) -> None:
    """The user's membership of Acme's admins stored before the user (membership events may come first), and the
    group itself when *group*."""
    with app.app_context():
        s = db.session()
        org_id = s.scalar(select(Organization.id).where(Organization.workos_organization_id == ACME))
        if group:
            s.add(_admins(org_id))
        s.add(DirectoryGroupMembership(organization_id=org_id, group_workos_id=ADMINS, user_workos_id=USER,
                                       present=True))
        s.commit()
        db.session.remove()


def _roles(app: Flask) -> list[tuple[str | None, str]]:
    with app.app_context():
        return [(m.role, m.status) for m in db.session.scalars(select(Membership))]


def test_a_group_deleted_while_the_insert_waited_gives_no_role(app: Flask) -> None:
    _prepare(app)
    _stored_before(app, group=True)

    def delete_group(org_id: str) -> None:
        s = db.session()
        g = s.scalar(select(DirectoryGroup).where(DirectoryGroup.organization_id == org_id))
        g.deleted_at = utcnow()
        s.commit()
        db.session.remove()

    _run(app, delete_group)
    assert _roles(app) == [("viewer", "active")]


def test_a_group_created_while_the_insert_waited_gives_its_role(app: Flask) -> None:
    """The group is created (``dsync.group.created`` committed by another applier) while the user's insert waits."""
    _prepare(app)
    _stored_before(app, group=False)

    def create_group(org_id: str) -> None:
        s = db.session()
        s.add(_admins(org_id))
        s.commit()
        db.session.remove()

    _run(app, create_group)
    assert _roles(app) == [("admin", "active")]


def test_a_group_created_while_the_applier_waits_on_the_names_lock_gives_its_role(app: Flask) -> None:
    """The user's email names a stored person whose names differ (a sign-in) and whose domain the organization has
    not verified: ``directory_names.speaks_for_names`` takes the person's names lock, held by another transaction
    (another organization's applier mirroring names onto that person). While the applier waits there, the user's
    group is created and committed. Found by a break-it review: the insert's "in no live group", read before the
    wait, gave the default role; that answer is now used only where the sync creates the person."""
    _prepare(app)
    _stored_before(app, group=False)
    with app.app_context():
        s = db.session()
        person = User(email=EMAIL, workos_user_id="user_login_1", first_name="Old", last_name="Name")
        s.add(person)
        s.commit()
        person_id = person.id
        org_id = s.scalar(select(Organization.id).where(Organization.workos_organization_id == ACME))
        inbox.store(s, _user_created(1))
        db.session.remove()
        holder = db.engine.connect()
        holder.execute(PERSON_NAMES_LOCK, {"user_id": person_id})
        t, errors = _applying(app)
        try:
            _wait_for_lock_wait("%pg_advisory_xact_lock(1347308800%")  # directory_names.PERSON_NAMES_LOCK
            s = db.session()
            s.add(_admins(org_id))
            s.commit()
            db.session.remove()
        finally:
            holder.rollback()
            holder.close()
            t.join(30)
        assert not errors, errors
    assert _roles(app) == [("admin", "active")]
