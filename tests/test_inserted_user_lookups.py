"""The insert of a new directory user answers the two lookups its sync would make next (issue #14): whether a person
holds its email and whether it is in a live group (``directory_insert.InsertedUser``), in the insert's own statement.

Rules tested:
- What the insert reports is what the lookups find (the plain queries, after a flush), over random stored people,
  groups and group memberships, with random unflushed changes pending, which the insert cannot see: it then reports
  nothing (property). On both databases: on PostgreSQL the answers come from VOLATILE functions, whose fresh
  snapshot ``tests/test_inserted_user_race.py`` checks.
- Its answer is used only before anything else is written: an event that inserts a directory user and then writes
  a group membership or a person (``dsync.group.user_added`` carrying a user snapshot, a batch of several users with
  one email) ends with the role of its groups and one person per email, for every event type that inserts one, in
  batches of one and of twenty.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import and_, func, select

from hatidata_auth.extensions import db
from hatidata_auth.models import (
    DirectoryGroup,
    DirectoryGroupMembership,
    DirectoryUser,
    Membership,
    Organization,
    User,
    utcnow,
)
from hatidata_auth.services import inbox, inbox_worker
from hatidata_auth.services.events.context import EventContext
from hatidata_auth.services.events.directory_insert import inserted_user
from hatidata_auth.services.events.directory_state import upsert_directory_user
from tests.test_inbox_batch_scope import ACME, ADMINS, DIRECTORIES
from tests.test_inbox_batch_scope import _prepare as prepare_acme_with_admins

EMAILS = ("new@inserted.test", "held@inserted.test", "other@inserted.test")

world = st.fixed_dictionaries({
    "people": st.lists(st.sampled_from(EMAILS[1:]), max_size=3),
    # group ref -> (in this organization, deleted)
    "groups": st.dictionaries(st.sampled_from(["g1", "g2", "g3"]), st.tuples(st.booleans(), st.booleans()),
                              max_size=3),
    # (group ref incl. an unknown one, user ref) -> present
    "members": st.dictionaries(st.tuples(st.sampled_from(["g1", "g2", "g3", "g4"]), st.sampled_from(["u1", "u2"])),
                               st.booleans(), max_size=8),
    "email": st.sampled_from(EMAILS),
    "user": st.sampled_from(["u1", "u2"]),
    "pending": st.lists(st.tuples(st.sampled_from(["person_email", "new_person", "present", "group_deleted",
                                                   "new_member"]), st.integers(0, 20), st.integers(0, 20)),
                        max_size=2),
})


def _truth(session: Any, org_id: str, email: str, user: str) -> tuple[bool, bool]:
    """(no person holds *email*, *user* is in no live group of the organization), by the plain queries."""
    people = session.scalar(select(func.count()).select_from(User).where(User.email == email))
    groups = session.scalar(select(func.count()).select_from(DirectoryGroupMembership).join(DirectoryGroup, and_(
        DirectoryGroup.organization_id == DirectoryGroupMembership.organization_id,
        DirectoryGroup.workos_id == DirectoryGroupMembership.group_workos_id)).where(
        DirectoryGroupMembership.organization_id == org_id, DirectoryGroupMembership.user_workos_id == user,
        DirectoryGroupMembership.present.is_(True), DirectoryGroup.deleted_at.is_(None)))
    return people == 0, groups == 0


def _pend(session: Any, w: dict[str, Any], people: list[User], groups: list[DirectoryGroup],
          members: list[DirectoryGroupMembership], org: Organization) -> None:
    """Changes left unflushed: a statement on the connection does not see them."""
    for kind, i, v in w["pending"]:
        if kind == "person_email" and people:
            people[i % len(people)].email = EMAILS[v % 3]
        elif kind == "new_person":
            session.add(User(email=EMAILS[v % 3]))
        elif kind == "present" and members:
            members[i % len(members)].present = bool(v % 2)
        elif kind == "group_deleted" and groups:
            groups[i % len(groups)].deleted_at = None if v % 2 else utcnow()
        elif kind == "new_member":
            ref = ("g1", "g2", "g3", "g4")[v % 4]
            if not any((m.group_workos_id, m.user_workos_id) == (ref, w["user"]) for m in members):
                member = DirectoryGroupMembership(organization_id=org.id, group_workos_id=ref,
                                                  user_workos_id=w["user"], present=True)
                session.add(member)
                members.append(member)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(w=world)
def test_what_the_insert_reports_is_what_the_lookups_find(db_session: Any, w: dict[str, Any]) -> None:
    session = db_session
    try:
        org, elsewhere = Organization(name="here"), Organization(name="elsewhere")
        people = [User(email=email) for email in w["people"]]
        session.add_all([org, elsewhere, *people])
        session.flush()
        groups = [DirectoryGroup(organization_id=(org if here else elsewhere).id, workos_id=ref, directory_id="d",
                                 name=ref, deleted_at=utcnow() if deleted else None)
                  for ref, (here, deleted) in sorted(w["groups"].items())]
        members = [DirectoryGroupMembership(organization_id=org.id, group_workos_id=g, user_workos_id=u,
                                            present=present) for (g, u), present in sorted(w["members"].items())]
        session.add_all([*groups, *members])
        session.flush()
        _pend(session, w, people, groups, members, org)
        ctx = EventContext(session=session, client=None, event_id="event_inserted", event_type="dsync.user.created",
                           event_time=utcnow())
        du, changed = upsert_directory_user(ctx, org, {"id": w["user"], "directory_id": "d", "email": w["email"],
                                                       "state": "active"})
        assert du is not None
        assert changed
        reported = inserted_user(ctx, du)
        assert reported is not None
        assert inserted_user(ctx, du) is None  # handed out once
        nothing_pending = not w["pending"]
        session.flush()
        no_person, no_group = _truth(session, org.id, w["email"], w["user"])
        assert not reported.no_person or no_person
        assert not reported.no_group or no_group
        if nothing_pending:  # complete where it can see everything
            assert (reported.no_person, reported.no_group) == (no_person, no_group)
    finally:
        session.rollback()


ACME_DIR = DIRECTORIES[ACME]
_clock = itertools.count(1)


def _envelope(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    n = next(_clock)
    stamp = f"2030-02-01T{n // 3600 % 24:02d}:{n // 60 % 60:02d}:{n % 60:02d}.000Z"
    return {"id": f"event_IU{n:08d}", "event": event_type, "created_at": stamp,
            "data": {**data, **({"updated_at": stamp} if "state" in data else {})}}


def _user_object(ref: str, email: str) -> dict[str, Any]:
    return {"object": "directory_user", "id": ref, "directory_id": ACME_DIR, "organization_id": ACME,
            "idp_id": ref, "email": email, "first_name": "I", "last_name": "U", "state": "active",
            "custom_attributes": {}, "raw_attributes": {}, "created_at": "2030-01-01T00:00:00.000Z"}


def _added(ref: str, email: str | None) -> dict[str, Any]:
    """``dsync.group.user_added`` to Acme's admins; with *email*, carrying the user's full snapshot."""
    user = _user_object(ref, email) if email else {"object": "directory_user", "id": ref, "directory_id": ACME_DIR,
                                                     "organization_id": ACME}
    group = {"object": "directory_group", "id": ADMINS, "directory_id": ACME_DIR, "organization_id": ACME,
             "name": "HatiData Admins", "idp_id": "HatiData Admins"}
    return _envelope("dsync.group.user_added", {"directory_id": ACME_DIR, "organization_id": ACME, "user": user,
                                                "group": group})


def _prepare(app: Flask, person: str | None) -> str:
    """Acme with its admins group mapped to admin (``test_inbox_batch_scope``), and *person* if any; Acme's id."""
    prepare_acme_with_admins(app)
    with app.app_context():
        session = db.session()
        if person:
            session.add(User(email=person))
        org_id = session.scalar(select(Organization.id).where(Organization.workos_organization_id == ACME))
        session.commit()
        db.session.remove()
    assert org_id is not None
    return org_id


def _apply(app: Flask, batches: list[list[dict[str, Any]]], limit: int) -> None:
    with app.app_context():
        for events in batches:
            for payload in events:
                inbox.store(db.session(), payload)
            inbox_worker.drain(db.session(), app.extensions["hatidata_workos"].client, limit=limit)
        db.session.remove()


@pytest.mark.parametrize("limit", [1, 20])
@pytest.mark.parametrize("person_before", [False, True])
@pytest.mark.parametrize("inserting", ["dsync.user.created", "dsync.user.updated", "dsync.group.user_added"])
def test_an_event_that_inserts_a_directory_user_and_writes_after_it_ends_right(
        app: Flask, inserting: str, person_before: bool, limit: int) -> None:
    """Three new users in one batch: one whose group membership the same event writes after inserting it (or, for
    the user events, stored by an earlier event), two more sharing one email (the first creates the person, the
    second finds it, under the one-person-per-email rule the directory keeps)."""
    email = "ida@acme.test"
    org_id = _prepare(app, email if person_before else None)
    first = _added("directory_user_IU1", email) if inserting == "dsync.group.user_added" else \
        _envelope(inserting, _user_object("directory_user_IU1", email))
    before = [] if inserting == "dsync.group.user_added" else [_added("directory_user_IU1", None)]
    shared = [_envelope("dsync.user.created", _user_object(f"directory_user_IU{n}", "pat@acme.test"))
              for n in (2, 3)]
    _apply(app, [before, [first, *shared]] if before else [[first, *shared]], limit)
    with app.app_context():
        s = db.session()
        people = {u.email: u.id for u in s.scalars(select(User))}
        assert sorted(people) == ["ida@acme.test", "pat@acme.test"]  # one person per email, the old one kept
        roles = {(m.directory_user_id, m.user_id): (m.role, m.status) for m in s.scalars(
            select(Membership).where(Membership.organization_id == org_id))}
        assert roles[("directory_user_IU1", people[email])] == ("admin", "active")
        # the second of one email is refused its link (held by the first): the first keeps the membership
        assert roles[("directory_user_IU2", people["pat@acme.test"])] == ("viewer", "active")
        linked = {d.workos_id: d.user_id for d in s.scalars(select(DirectoryUser))}
        assert linked["directory_user_IU1"] == people[email]
        db.session.remove()
