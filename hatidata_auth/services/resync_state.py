"""What the full resync (:mod:`services.reconcile`) reads and writes a page at a time, in set operations.

Per page of listed users: :class:`PageHeld` (their group memberships and access, two queries through the
``(organization_id, user_workos_id)`` and ``(organization_id, directory_user_id)`` indexes), one multi-row upsert
of the memberships that changed (:func:`write_group_memberships`, ``INSERT ... SELECT FROM unnest(...) ON CONFLICT
DO UPDATE`` under the version guard), the live groups of the users that differed (:func:`groups_of_users`), one
``UPDATE`` per user marking them seen by the run (:func:`mark_seen`, pipelined). After the last page,
:func:`unseen_users` reads what the run did not see, a chunk at a time. The run's position is a
:class:`~hatidata_auth.models.ResyncCursor` (:func:`open_cursor`), saved with each page, so a crashed resync resumes
after its last committed page.
"""

from __future__ import annotations

import copy
import functools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ARRAY, Boolean, Select, String, and_, bindparam, func, literal, null, or_, select, true, update
from sqlalchemy import text as sql_text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import QueryableAttribute, Session, aliased

from ..models import DirectoryGroup, DirectoryGroupMembership, DirectoryUser, Membership, ResyncCursor, new_id
from . import fanout_jobs
from .role_rules import GroupRef

#: How long an unfinished run may be resumed after its last committed page. Older, it is abandoned and a new run
#: starts: the run versions its membership facts at its start, which a stale run would date too far back.
RESUME_WITHIN = timedelta(hours=1)

#: (role, status, source) of the membership hanging on a directory user.
Access = tuple[str | None, str, str]


def page_lookup(session: Session, what: Any, organization: QueryableAttribute[str] | None, organization_id: str | None,
                key: QueryableAttribute[Any], keys: list[str], *, unique: bool,
                where: tuple[Any, ...] = ()) -> Select[Any]:
    """``SELECT what WHERE organization = :organization_id AND key IN keys``, planned as one index lookup per key.

    On PostgreSQL it is written as a lateral join over ``unnest(:keys)`` whose inner query has equality on both
    columns (``LIMIT 1`` for a *unique* key, ``OFFSET 0`` otherwise, so it is not flattened): the planner cannot
    turn it into a scan of the whole organization filtered by the keys, the plan it picks for ``key IN (...)``
    when the table has no statistics (a fresh database), which made each page cost the organization's size.
    One array parameter also gives every page the same statement text (prepared once). *what* is a mapped class
    (rows come back as its instances) or a tuple of columns; *where*: more conditions of the inner query;
    *organization* ``None``: a table of no tenant (the people, ``users``), looked up by *key* alone.
    """
    entity = isinstance(what, type)
    columns = (what,) if entity else tuple(what)
    tenant = () if organization is None else (organization == organization_id,)
    if session.get_bind().dialect.name != "postgresql":
        return select(*columns).where(*tenant, key.in_(keys), *where)
    keyed = func.unnest(literal(keys, ARRAY(String))).table_valued("key").render_derived()
    inner = select(*columns).where(*tenant, key == keyed.c.key, *where)
    lateral = (inner.limit(1) if unique else inner.offset(0)).lateral()
    return select(aliased(what, lateral) if entity else lateral).select_from(keyed).join(lateral, true())


@dataclass(frozen=True, slots=True)
class PageHeld:
    """What we hold for one page of listed users.

    *memberships*: ``{user WorkOS id: {group WorkOS id: present}}``; *access*: ``{directory user WorkOS id:
    (role, status, source)}`` of the memberships carrying it.
    """

    memberships: dict[str, dict[str, bool]]
    access: dict[str, Access]

    @classmethod
    def load(cls, session: Session, organization_id: str, user_ids: list[str]) -> PageHeld:
        """Two queries for the page (none for an empty one)."""
        memberships: dict[str, dict[str, bool]] = defaultdict(dict)
        access: dict[str, Access] = {}
        if user_ids:
            dgm = DirectoryGroupMembership
            for uid, gid, present in session.execute(page_lookup(
                    session, (dgm.user_workos_id, dgm.group_workos_id, dgm.present), dgm.organization_id,
                    organization_id, dgm.user_workos_id, user_ids, unique=False)):
                memberships[uid][gid] = present
            rows: Any = session.execute(page_lookup(
                    session, (Membership.directory_user_id, Membership.role, Membership.status, Membership.source),
                    Membership.organization_id, organization_id, Membership.directory_user_id, user_ids,
                    unique=False))
            for du_id, role, status, source in rows:
                access[str(du_id)] = (role, status, source)
        return cls(dict(memberships), access)


def groups_of_users(session: Session, organization_id: str,
                    user_workos_ids: Sequence[str]) -> dict[str, list[GroupRef]]:
    """The live groups of each of *user_workos_ids* (``{user_workos_id: [GroupRef]}``) in two queries, an index
    lookup per key (:func:`page_lookup`): their present group memberships, then those groups by key (a join let a
    planner without statistics read every group of the organization for every user)."""
    dgm = DirectoryGroupMembership
    out: dict[str, list[GroupRef]] = defaultdict(list)
    if not user_workos_ids:
        return out
    pairs: Any = session.execute(page_lookup(
        session, (dgm.user_workos_id, dgm.group_workos_id), dgm.organization_id, organization_id,
        dgm.user_workos_id, list(user_workos_ids), unique=False, where=(dgm.present.is_(True),))).all()
    groups: Any = session.execute(page_lookup(
        session, (DirectoryGroup.workos_id, DirectoryGroup.name, DirectoryGroup.idp_id),
        DirectoryGroup.organization_id, organization_id, DirectoryGroup.workos_id,
        sorted({gid for _uid, gid in pairs}), unique=True, where=(DirectoryGroup.deleted_at.is_(None),))) \
        if pairs else ()
    live = {workos_id: GroupRef(name, idp_id, workos_id) for workos_id, name, idp_id in groups}
    for user_workos_id, group_workos_id in pairs:
        if group_workos_id in live:
            out[user_workos_id].append(live[group_workos_id])
    return out


@functools.cache  # built once per dialect, bound parameters: a reused statement keeps its cache key
def groups_of_user_statement(dialect: str) -> Select[str, str | None, str]:
    """The live groups of one directory user (``:organization_id``, ``:user_workos_id``) as ``(name, idp_id,
    workos_id)`` rows: what an event reads (``role_mapping.directory_groups_of``)."""
    dgm = DirectoryGroupMembership
    of_user = (dgm.organization_id == bindparam("organization_id"), dgm.user_workos_id == bindparam("user_workos_id"),
               dgm.present.is_(True))
    if dialect != "postgresql":
        return (select(DirectoryGroup.name, DirectoryGroup.idp_id, DirectoryGroup.workos_id)
                .join(dgm, and_(dgm.organization_id == DirectoryGroup.organization_id,
                                dgm.group_workos_id == DirectoryGroup.workos_id))
                .where(*of_user, DirectoryGroup.deleted_at.is_(None)))
    # The user's group memberships, then each one's group by its key (a lateral lookup): joined plainly, a plan
    # made without statistics read the organization's every group and probed each for the user.
    group = (select(DirectoryGroup.name, DirectoryGroup.idp_id, DirectoryGroup.workos_id)
             .where(DirectoryGroup.organization_id == dgm.organization_id,
                    DirectoryGroup.workos_id == dgm.group_workos_id, DirectoryGroup.deleted_at.is_(None))
             .limit(1).lateral())
    return select(group.c.name, group.c.idp_id, group.c.workos_id).select_from(dgm).join(group, true()) \
        .where(*of_user)


def write_group_memberships(session: Session, organization_id: str, changes: list[tuple[str, str, bool]],
                            version_at: datetime) -> None:
    """Upsert ``(group WorkOS id, user WorkOS id, present)`` rows in one statement, versioned *version_at*.

    A stored row keeps a newer fact (a webhook applied after the run started): the update applies only where the
    stored ``(version_at, version_event_id)`` is not after ``(version_at, "")``, the guard of
    ``events.directory_state.set_group_membership``.
    """
    if not changes:
        return
    table = DirectoryGroupMembership.__table__
    rows = {(gid, uid): present for gid, uid, present in changes}  # a statement may not update a row twice
    if session.get_bind().dialect.name == "postgresql":
        # One statement whatever the page holds: the rows travel as three arrays, unnested by the server (an
        # executemany pays the driver's and a round trip's overhead per row).
        arrays = func.unnest(literal([g for g, _ in rows], ARRAY(String)), literal([u for _, u in rows], ARRAY(String)),
                             literal(list(rows.values()), ARRAY(Boolean))).table_valued("g", "u", "p").render_derived()
        pg_stmt = postgresql.insert(DirectoryGroupMembership).from_select(
            ["organization_id", "group_workos_id", "user_workos_id", "present", "version_at", "version_event_id"],
            select(literal(organization_id, String), arrays.c.g, arrays.c.u, arrays.c.p,
                   literal(version_at, table.c.version_at.type), null()))
        session.execute(_guarded(pg_stmt, table))
        return
    stmt = _guarded(sqlite.insert(DirectoryGroupMembership), table)
    # One compiled statement executed over the page's rows (the driver batches them): a literal multi-row VALUES
    # would be compiled and parsed anew for every page.
    session.execute(stmt, [{"organization_id": organization_id, "group_workos_id": gid, "user_workos_id": uid,
                            "present": present, "version_at": version_at, "version_event_id": None}
                           for (gid, uid), present in rows.items()])


def _guarded(stmt: Any, table: Any) -> Any:
    """*stmt* (a dialect's INSERT of group memberships) updating a stored row only where it holds no newer fact."""
    return stmt.on_conflict_do_update(
        index_elements=["organization_id", "group_workos_id", "user_workos_id"],
        set_={"present": stmt.excluded.present, "version_at": stmt.excluded.version_at, "version_event_id": None},
        where=or_(table.c.version_at.is_(None), table.c.version_at < stmt.excluded.version_at,
                  and_(table.c.version_at == stmt.excluded.version_at,
                       func.coalesce(table.c.version_event_id, "") == "")))


def plan_each_statement(session: Session) -> None:
    """Plan every statement of the session's current transaction for the tables as they are now (PostgreSQL:
    ``SET LOCAL plan_cache_mode = force_custom_plan``; nothing elsewhere).

    psycopg prepares a statement on the server from its sixth execution, and PostgreSQL then keeps the generic
    plan it made for that connection until the table's statistics change. A first resync fills the directory
    tables in one burst: a plan made while they were nearly empty stayed a sequential scan as they grew, even for a
    primary-key ``UPDATE`` (``mark_seen``; 2,144 of them over 2 ms in a 2,000 + 6,000-user run, every one a
    ``Seq Scan``), so the run's time per user grew with the directory. A custom plan costs a planning per statement,
    far less than one scan of a grown table."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sql_text("SET LOCAL plan_cache_mode = force_custom_plan"))


def mark_seen(session: Session, rows: list[DirectoryUser], run_id: str) -> None:
    """Record that the run saw these users listed (``updated_at`` left alone).

    One single-row ``UPDATE`` by primary key executed over the page (the driver pipelines them): an ``id IN (...)``
    may be planned as a scan of the table when its statistics are stale, a primary-key equality is not, once it is
    planned for the table as it is (:func:`plan_each_statement`; so may an ``UPDATE ... FROM unnest(:ids)``:
    without statistics PostgreSQL 15 hashed the whole table against the page).
    """
    if rows:
        table = DirectoryUser.__table__
        session.execute(update(table).where(table.c.id == bindparam("seen_id"))
                        .values(resync_run_id=run_id, updated_at=table.c.updated_at),
                        [{"seen_id": du.id} for du in rows])


def unseen_users(session: Session, organization_id: str, directory_id: str, run_id: str, started: datetime,
                 after: str, limit: int, *, fresh: bool = False) -> list[DirectoryUser]:
    """Up to *limit* live users of the directory, after the WorkOS id *after*, that the run did not see listed
    (*fresh*: reloaded over what the session holds of them).

    Users created after the run started (by a webhook, while it ran) are not its to judge.
    """
    return list(session.scalars(select(DirectoryUser).execution_options(populate_existing=fresh).where(
        DirectoryUser.organization_id == organization_id, DirectoryUser.directory_id == directory_id,
        DirectoryUser.deleted_at.is_(None), DirectoryUser.created_at < started, DirectoryUser.workos_id > after,
        or_(DirectoryUser.resync_run_id.is_(None), DirectoryUser.resync_run_id != run_id))
        .order_by(DirectoryUser.workos_id).limit(limit)))


def held_unseen_users(session: Session, organization_id: str, directory_id: str, run_id: str, started: datetime,
                      after: str, limit: int) -> list[DirectoryUser]:
    """:func:`unseen_users`, read once their keys are held (``fanout_jobs.hold_members``: read, hold, read afresh,
    until the page holds no other user), so that retiring them never writes over a member's event."""
    held: set[str] = set()
    while True:
        rows = unseen_users(session, organization_id, directory_id, run_id, started, after, limit, fresh=bool(held))
        missing = {du.workos_id for du in rows} - held
        if not missing or session.get_bind().dialect.name != "postgresql":
            return rows
        fanout_jobs.hold_members(session, missing)
        held |= missing


def open_cursor(session: Session, organization_id: str, directory_id: str, started: datetime) -> ResyncCursor:
    """The directory's unfinished run (its last page committed within :data:`RESUME_WITHIN` of *started*), else
    a new one (added, not committed)."""
    cursor = session.scalar(select(ResyncCursor).where(ResyncCursor.organization_id == organization_id,
                                                       ResyncCursor.directory_id == directory_id))
    if cursor is not None and cursor.updated_at < started - RESUME_WITHIN:
        session.delete(cursor)
        session.flush()
        cursor = None
    if cursor is None:
        cursor = ResyncCursor(organization_id=organization_id, directory_id=directory_id,
                              run_id=new_id("resync")[:64], started_at=started, after_user_id=None, report={})
        session.add(cursor)
    return cursor


def restore_counts(target: Any, saved: dict[str, Any]) -> None:
    """Copy the counters (and examples) a cursor saved back onto a report (copies: the report's later notes never
    change *saved*, which a page run again restores from)."""
    for key, value in saved.items():
        if hasattr(target, key) and key not in ("organization_id", "directory_id", "seconds"):
            setattr(target, key, copy.deepcopy(value))
