"""The lookups by person answer what the plain joins answer (the definition), in one statement.

``directory_names.names_listed_elsewhere`` (and ``listed_by_a_directory``, the sign-in's side of the same rule)
against the plain join of memberships, organizations and directory users, and ``role_mapping.directory_groups_of``
(``resync_state.groups_of_user_statement``) against the plain join of group memberships and groups (the statements
before issue #14's lookups by key, which planners without statistics ran as scans of the organization:
``tests/test_resync_statement_plans.py``), over random small data, with random unflushed changes pending when the
lookup runs (the events' ``reads_flushed`` options): the plain join is run after
an explicit flush, so it reads the truth the lookup must have seen.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import and_, event, select

from hatidata_auth.models import (
    DirectoryGroup,
    DirectoryGroupMembership,
    DirectoryUser,
    Membership,
    Organization,
    User,
    utcnow,
)
from hatidata_auth.services import role_mapping
from hatidata_auth.services.directory_names import LIVE_MEMBERSHIP, listed_by_a_directory, names_listed_elsewhere
from hatidata_auth.unit_of_work import reads_flushed

STATUSES = ("active", "pending", "deprovisioned", "inactive")
REFS = ("du_a", "du_b", "du_c")
NAMES = st.sampled_from([None, "Ada", "Bo"])


def _joined_names_elsewhere(session: Any, organization_id: str, user_ids: list[str]) -> dict[str, list[Any]]:
    """The plain join: the people's live memberships in other live organizations, with their live directory user."""
    statement = (select(Membership.user_id, DirectoryUser.id, DirectoryUser.first_name, DirectoryUser.last_name)
                 .join(Organization, Organization.id == Membership.organization_id)
                 .outerjoin(DirectoryUser, and_(DirectoryUser.organization_id == Membership.organization_id,
                                                DirectoryUser.workos_id == Membership.directory_user_id,
                                                DirectoryUser.deleted_at.is_(None)))
                 .where(Membership.status.in_(LIVE_MEMBERSHIP), Organization.status == "active",
                        Organization.deleted_at.is_(None))
                 .where(Membership.user_id.in_(user_ids), Membership.organization_id != organization_id))
    out: dict[str, list[Any]] = {}
    for user_id, row_id, first, last in session.execute(statement):
        out.setdefault(user_id, []).append(None if row_id is None else (first, last))
    return out


def _joined_groups_of(session: Any, organization_id: str, user_workos_id: str) -> list[tuple[Any, ...]]:
    statement = (select(DirectoryGroup.name, DirectoryGroup.idp_id, DirectoryGroup.workos_id)
                 .join(DirectoryGroupMembership, and_(
                     DirectoryGroupMembership.organization_id == DirectoryGroup.organization_id,
                     DirectoryGroupMembership.group_workos_id == DirectoryGroup.workos_id))
                 .where(DirectoryGroupMembership.organization_id == organization_id,
                        DirectoryGroupMembership.user_workos_id == user_workos_id,
                        DirectoryGroupMembership.present.is_(True),
                        DirectoryGroup.deleted_at.is_(None)))
    return [tuple(row) for row in session.execute(statement)]


def _multiset(found: dict[str, list[Any]]) -> dict[str, Counter[Any]]:
    return {user_id: Counter(names) for user_id, names in found.items()}


world = st.fixed_dictionaries({
    "orgs": st.lists(st.tuples(st.sampled_from(["active", "inactive"]), st.booleans()), min_size=1, max_size=4),
    "users": st.integers(1, 4),
    # (org index, user index) -> (status, directory_user_id)
    "memberships": st.dictionaries(st.tuples(st.integers(0, 3), st.integers(0, 3)),
                                   st.tuples(st.sampled_from(STATUSES), st.sampled_from((None, *REFS))),
                                   max_size=12),
    # (org index, ref) -> (first, last, deleted)
    "directory_users": st.dictionaries(st.tuples(st.integers(0, 3), st.sampled_from(REFS)),
                                       st.tuples(NAMES, NAMES, st.booleans()), max_size=10),
    "here": st.integers(0, 3),
    "asked": st.lists(st.integers(0, 5), max_size=6),  # 4, 5: people that do not exist
    # unflushed changes: (kind, index, value)
    "pending": st.lists(st.tuples(st.sampled_from(["membership_status", "membership_ref", "org_status",
                                                   "org_deleted", "du_deleted", "du_name", "new_membership",
                                                   "delete_membership"]),
                                  st.integers(0, 20), st.integers(0, 20)), max_size=3),
})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(w=world)
def test_names_listed_elsewhere_is_the_plain_join(db_session: Any, w: dict[str, Any]) -> None:  # noqa: C901
    session = db_session
    try:
        orgs = [Organization(name=f"o{i}", status=status) for i, (status, _) in enumerate(w["orgs"])]
        users = [User(email=f"u{i}@lookups.test") for i in range(w["users"])]
        session.add_all([*orgs, *users])
        session.flush()
        for org, (_, deleted) in zip(orgs, w["orgs"], strict=True):
            if deleted:
                org.deleted_at = utcnow()
        members = []
        for (o, u), (status, ref) in sorted(w["memberships"].items(), key=repr):
            if o < len(orgs) and u < len(users):
                members.append(Membership(organization_id=orgs[o].id, user_id=users[u].id, status=status,
                                          directory_user_id=ref))
        dus = []
        for (o, ref), (first, last, deleted) in sorted(w["directory_users"].items(), key=repr):
            if o < len(orgs):
                dus.append(DirectoryUser(organization_id=orgs[o].id, workos_id=ref, directory_id="d",
                                         first_name=first, last_name=last,
                                         deleted_at=utcnow() if deleted else None))
        session.add_all([*members, *dus])
        session.flush()
        gone: set[tuple[str, str]] = set()
        for kind, i, v in w["pending"]:
            if kind == "membership_status" and members:
                members[i % len(members)].status = STATUSES[v % len(STATUSES)]
            elif kind == "membership_ref" and members:
                members[i % len(members)].directory_user_id = (None, *REFS)[v % 4]
            elif kind == "org_status":
                orgs[i % len(orgs)].status = ("active", "inactive")[v % 2]
            elif kind == "org_deleted":
                orgs[i % len(orgs)].deleted_at = None if v % 2 else utcnow()
            elif kind == "du_deleted" and dus:
                dus[i % len(dus)].deleted_at = None if v % 2 else utcnow()
            elif kind == "du_name" and dus:
                dus[i % len(dus)].first_name = f"N{v}"
            elif kind == "new_membership":
                taken = {(m.organization_id, m.user_id) for m in members} | gone
                o, u = orgs[i % len(orgs)], users[v % len(users)]
                if (o.id, u.id) not in taken:
                    m = Membership(organization_id=o.id, user_id=u.id, status="active",
                                   directory_user_id=REFS[v % 3])
                    session.add(m)
                    members.append(m)
            elif kind == "delete_membership" and members:
                m = members.pop(i % len(members))
                gone.add((m.organization_id, m.user_id))  # a flush inserts before it deletes
                if m in session and m not in session.new:
                    session.delete(m)
                else:
                    session.expunge(m)
        here = orgs[w["here"] % len(orgs)].id
        asked = [users[i].id if i < len(users) else f"usr_missing_{i}" for i in w["asked"]]

        new = names_listed_elsewhere(session, here, asked, execution_options=reads_flushed(
            session, Membership, DirectoryUser, Organization))
        session.flush()
        joined = _joined_names_elsewhere(session, here, asked) if asked else {}
        assert _multiset(new) == _multiset(joined)
        # A sign-in leaves a person's names to the directories exactly when some organization's directory lists it
        # by the same rule (a tombstoned directory user lists nothing).
        everywhere = _joined_names_elsewhere(session, "org_none", asked) if asked else {}
        for user_id in asked:
            listed = any(names is not None for names in everywhere.get(user_id, ()))
            assert listed_by_a_directory(session, user_id) is listed, user_id
    finally:
        session.rollback()


groups_world = st.fixed_dictionaries({
    # (org index, group ref) -> (name, deleted)
    "groups": st.dictionaries(st.tuples(st.integers(0, 1), st.sampled_from(["g1", "g2", "g3"])),
                              st.tuples(st.sampled_from(["A", "B"]), st.booleans()), max_size=6),
    # (org index, group ref incl. an unknown one, user ref) -> present
    "members": st.dictionaries(st.tuples(st.integers(0, 1), st.sampled_from(["g1", "g2", "g3", "g4"]),
                                         st.sampled_from(["u1", "u2"])), st.booleans(), max_size=12),
    "pending": st.lists(st.tuples(st.sampled_from(["present", "group_deleted", "new_member", "group_name"]),
                                  st.integers(0, 20), st.integers(0, 20)), max_size=3),
})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(w=groups_world)
def test_directory_groups_of_is_the_plain_join(db_session: Any, w: dict[str, Any]) -> None:
    session = db_session
    try:
        orgs = [Organization(name=f"g{i}") for i in range(2)]
        session.add_all(orgs)
        session.flush()
        groups = [DirectoryGroup(organization_id=orgs[o].id, workos_id=ref, directory_id="d", name=name,
                                 idp_id=f"idp-{ref}", deleted_at=utcnow() if deleted else None)
                  for (o, ref), (name, deleted) in sorted(w["groups"].items())]
        members = [DirectoryGroupMembership(organization_id=orgs[o].id, group_workos_id=g, user_workos_id=u,
                                            present=present)
                   for (o, g, u), present in sorted(w["members"].items())]
        session.add_all([*groups, *members])
        session.flush()
        for kind, i, v in w["pending"]:
            if kind == "present" and members:
                members[i % len(members)].present = bool(v % 2)
            elif kind == "group_deleted" and groups:
                groups[i % len(groups)].deleted_at = None if v % 2 else utcnow()
            elif kind == "group_name" and groups:
                groups[i % len(groups)].name = f"N{v}"
            elif kind == "new_member":
                o, g, u = orgs[i % 2], ("g1", "g2", "g3", "g4")[v % 4], ("u1", "u2")[i % 2]
                if not any((m.organization_id, m.group_workos_id, m.user_workos_id) == (o.id, g, u) for m in members):
                    m = DirectoryGroupMembership(organization_id=o.id, group_workos_id=g, user_workos_id=u,
                                                 present=True)
                    session.add(m)
                    members.append(m)
        new = {(o.id, u): sorted((g.name, g.idp_id, g.workos_id) for g in role_mapping.directory_groups_of(
            session, o.id, u)) for o in orgs for u in ("u1", "u2", "u3")}
        session.flush()
        joined = {(o.id, u): sorted(_joined_groups_of(session, o.id, u)) for o in orgs for u in ("u1", "u2", "u3")}
        assert new == joined
    finally:
        session.rollback()


def test_a_page_of_people_members_of_many_organizations_costs_one_statement(db_session: Any) -> None:
    """A person's memberships elsewhere, each organization and directory user with them, in one statement: not one
    more per organization the page's people belong to."""
    here = Organization(name="here")
    others = [Organization(name=f"o{i}") for i in range(30)]
    people = [User(email=f"p{i}@count.test") for i in range(30)]
    db_session.add_all([here, *others, *people])
    db_session.flush()
    for i, (org, person) in enumerate(zip(others, people, strict=True)):
        db_session.add_all([
            Membership(organization_id=here.id, user_id=person.id, status="active"),
            Membership(organization_id=org.id, user_id=person.id, status="active", directory_user_id=f"du{i}"),
            DirectoryUser(organization_id=org.id, workos_id=f"du{i}", directory_id="d", first_name="A",
                          last_name=str(i), user_id=person.id),
        ])
    db_session.flush()
    sent: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement)

    event.listen(db_session.get_bind(), "before_cursor_execute", count)
    try:
        found = names_listed_elsewhere(db_session, here.id, [p.id for p in people])
    finally:
        event.remove(db_session.get_bind(), "before_cursor_execute", count)
    db_session.rollback()
    assert found == {p.id: [("A", str(i))] for i, p in enumerate(people)}
    assert len(sent) == 1, sent
