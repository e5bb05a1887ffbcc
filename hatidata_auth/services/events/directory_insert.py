"""The insert of a new directory user, which also answers the lookups its sync makes next (issue #14).

``events.directory_state.upsert_directory_user`` inserts a directory user it has not stored yet with one statement
on the session's connection (:func:`insert_directory_user`); the same statement says whether a person holds its
email and whether it is in a live group (:class:`InsertedUser`), which the ``dsync.user.*`` handler passes to
``directory_state.sync_member`` instead of asking again.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Boolean, bindparam, exists, func, select
from sqlalchemy.dialects import postgresql, sqlite

from ...models import DirectoryGroup, DirectoryGroupMembership, DirectoryUser, User
from ...unit_of_work import attach_inserted, holds_unflushed
from .context import EventContext


@functools.cache
def _insert_directory_user_statement(dialect: str) -> Any:
    """``INSERT … ON CONFLICT DO NOTHING RETURNING`` of a directory user (every column), built once per dialect
    with bound parameters; run on the session's connection, it flushes nothing (``unit_of_work.attach_inserted``).

    It returns the row's id and, in the same round trip, what ``directory_state.sync_member`` would read next for the
    new directory user (:class:`InsertedUser`): whether no person holds its email and whether it is in no live group
    (group memberships may be stored before their user).

    On PostgreSQL both are asked of VOLATILE functions (migration 0021), whose queries take a fresh snapshot: under
    READ COMMITTED the ``RETURNING`` clause's own expressions read the snapshot taken when the statement started, and
    an insert that waited on another transaction's uncommitted row of the same key (then rolled back) would report a
    state older than the commits made while it waited (a person a login created, a group created:
    ``tests/test_inserted_user_race.py``). SQLite runs one writing transaction at a time, so plain subqueries do."""
    table = DirectoryUser.__table__
    values = {column.name: bindparam(column.name, type_=column.type) for column in table.c}
    if dialect == "postgresql":
        return (postgresql.insert(table).values(values)
                .on_conflict_do_nothing(index_elements=["organization_id", "workos_id"])
                .returning(table.c.id,
                           func.directory_user_no_person(values["email"], type_=Boolean).label("no_person"),
                           func.directory_user_no_live_group(values["organization_id"], values["workos_id"],
                                                             type_=Boolean).label("no_group")))
    users, dgm, groups = User.__table__, DirectoryGroupMembership.__table__, DirectoryGroup.__table__
    no_person = ~exists().where(users.c.email == bindparam("email", type_=table.c.email.type))
    org_id = bindparam("organization_id", type_=table.c.organization_id.type)
    of_user = (dgm.c.organization_id == org_id,
               dgm.c.user_workos_id == bindparam("workos_id", type_=table.c.workos_id.type), dgm.c.present.is_(True))
    # SQLite's RETURNING names columns unqualified: no subquery may refer to an outer one
    no_group = ~exists().where(groups.c.organization_id == org_id, groups.c.deleted_at.is_(None),
                               groups.c.workos_id.in_(select(dgm.c.group_workos_id).where(*of_user)))
    return (sqlite.insert(table).values(values)
            .on_conflict_do_nothing(index_elements=["organization_id", "workos_id"])
            .returning(table.c.id, no_person.label("no_person"), no_group.label("no_group")))


@dataclass(frozen=True, slots=True)
class InsertedUser:
    """What the insert of a new directory user found, as of that statement (:func:`_insert_directory_user_statement`).

    *no_person*: no person held its email; *no_group*: it was in no live group. Each is ``False`` when unknown:
    the session held unflushed changes of the tables it reads, which a statement on the connection does not see.
    True only until the transaction writes those tables again, or waits on a lock (under READ COMMITTED, what another
    transaction commits meanwhile counts): :func:`inserted_user` hands it out once, to the ``dsync.user.*`` handler,
    which syncs the member before writing anything else, and uses *no_group* only where that sync creates the
    person (linking a stored one may first wait on its names or email lock)."""

    no_person: bool
    no_group: bool


def _note_inserted(ctx: EventContext, du: DirectoryUser, found: Any) -> None:
    session = ctx.session
    ctx.inserted_users[du.workos_id] = InsertedUser(
        no_person=bool(found.no_person) and not holds_unflushed(session, User),
        no_group=bool(found.no_group) and not holds_unflushed(session, DirectoryGroup, DirectoryGroupMembership))


def inserted_user(ctx: EventContext, du: DirectoryUser) -> InsertedUser | None:
    """What the insert of *du* found (taken once; ``None`` when this event did not insert it), for the handler to
    use before anything else is written (:class:`InsertedUser`)."""
    return ctx.inserted_users.pop(du.workos_id, None)


def insert_directory_user(ctx: EventContext, values: dict[str, Any]) -> DirectoryUser | None:
    """Insert a directory user with *values* (every column) unless its ``(organization_id, workos_id)`` is stored
    (``None`` then: a concurrent first event won); the row as the session holds it, what the insert found kept for
    :func:`inserted_user`. Flushes nothing (``unit_of_work.attach_inserted``)."""
    dialect = ctx.session.get_bind().dialect.name
    inserted = ctx.session.connection().execute(_insert_directory_user_statement(dialect), values).first()
    if inserted is None:  # (the session's execute would have flushed first)
        return None
    du = attach_inserted(ctx.session, DirectoryUser, values)
    _note_inserted(ctx, du, inserted)
    return du
