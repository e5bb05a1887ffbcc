"""The directory users a batch's events update, locked and read together (one statement per organization).

An applier's batch holds its events' keys from its claim, then locks their organization; each user event then
locked its directory user's row and read its person and membership in one statement
(``directory_state.locked_directory_user``): a round trip per event. The first such lookup for an organization
in a batch locks and reads, at once, every directory user that the batch's update and delete events name for it:
the same row locks after the same key and organization locks, taken earlier in the same transaction (no other
order appears: a directory user's row is locked only under its key, which the batch holds).

An entry answers a later event of the batch only while what it read is current: the directory user still links
the person it linked, and this session has written none of that person's memberships since (flushed, pending or
by a Core statement: counted by :func:`member_writes`). Otherwise, and for a directory user that was not stored
when the batch read (an earlier event may have inserted it), the event reads its own as before. What an event
read is staged in its scope and joins the batch only when its savepoint commits (``batch_scope``): a rolled-back
savepoint releases the row locks taken in it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import chain
from typing import Any

from sqlalchemy import Select, and_, bindparam, select
from sqlalchemy import event as sa_event
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Session, object_session

from ...models import DirectoryUser, Membership, User
from ...unit_of_work import NO_AUTOFLUSH, AppSession, unit_of_work

LOOKED_UP = frozenset({"dsync.user.updated", "dsync.user.deleted"})
"""The events whose handler looks their directory user up first (a created user is inserted first instead)."""

_WRITES_KEY = "hatidata_member_writes"  # {person's user id, or ANY for a Core statement: writes counted}
ANY = "*"


@dataclass(frozen=True, slots=True)
class LockedUser:
    """A directory user read with its row locked, with its person and that person's membership of the
    organization as the same statement found them (``None``: none), and the counts that keep them current."""

    directory_user: DirectoryUser
    person: User | None
    membership: Membership | None
    linked_user_id: str | None
    writes: tuple[int, int]


def wanted(payloads: Iterable[Mapping[str, Any]]) -> dict[str, frozenset[str]]:
    """The directory users (WorkOS ids) the batch's update and delete events name, by WorkOS organization id; only
    organizations with two or more (one is read by its event, as before)."""
    found: dict[str, set[str]] = {}
    for payload in payloads:
        data = payload.get("data")
        if payload.get("event") in LOOKED_UP and isinstance(data, Mapping):
            org, user = data.get("organization_id"), data.get("id")
            if isinstance(org, str) and isinstance(user, str):
                found.setdefault(org, set()).add(user)
    return {org: frozenset(users) for org, users in found.items() if len(users) > 1}


def member_writes(session: Session, user_id: str | None) -> tuple[int, int]:
    """How many writes of *user_id*'s memberships, and of memberships by Core statements, *session* has sent: counts
    never reset, so that an entry read at other counts is stale."""
    counts: dict[str, int] = unit_of_work(session).info.get(_WRITES_KEY) or {}
    return counts.get(user_id or "", 0), counts.get(ANY, 0)


def lock_and_read(session: Session, organization_id: str, workos_ids: Iterable[str]) -> dict[str, LockedUser]:
    """Lock the organization's stored directory users among *workos_ids* (``FOR UPDATE``, in id order) and read
    each with its person and membership; by WorkOS id (the ones not stored are absent)."""
    rows = session.execute(_statement(), {"organization_id": organization_id, "workos_ids": sorted(workos_ids)},
                           execution_options=NO_AUTOFLUSH).all()
    return {du.workos_id: LockedUser(du, person, membership, du.user_id, member_writes(session, du.user_id))
            for du, person, membership in rows}


def current(session: Session, entry: LockedUser) -> bool:
    """Whether *entry* still says what a read now would: its directory user links the same person, and none of
    that person's memberships was written (or is waiting to be) since it was read."""
    linked = entry.linked_user_id
    if entry.directory_user.user_id != linked or member_writes(session, linked) != entry.writes:
        return False
    return not any(isinstance(obj, Membership) and obj.user_id == linked
                   for obj in chain(session.new, session.dirty, session.deleted))


def with_people() -> Select[DirectoryUser, User, Membership]:
    """Directory users, each with its person and that person's membership of the directory user's organization
    (outer joins: ``None`` where there is none); add the conditions and the lock."""
    return (select(DirectoryUser, User, Membership).outerjoin(User, User.id == DirectoryUser.user_id)
            .outerjoin(Membership, and_(Membership.organization_id == DirectoryUser.organization_id,
                                        Membership.user_id == DirectoryUser.user_id)))


@functools.cache
def _statement() -> Select[DirectoryUser, User, Membership]:
    # Built once (bound parameters, an expanding IN): a reused statement keeps its cache key.
    return (with_people().where(DirectoryUser.organization_id == bindparam("organization_id"),
                                DirectoryUser.workos_id.in_(bindparam("workos_ids", expanding=True)))
            .order_by(DirectoryUser.id).with_for_update(of=DirectoryUser))


def _count(session: Session | None, *keys: str | None) -> None:
    if session is not None:
        counts = session.info.setdefault(_WRITES_KEY, {})
        for key in {k for k in keys if k}:
            counts[key] = counts.get(key, 0) + 1


def _on_membership(_mapper: Any, _connection: Any, target: Membership) -> None:
    history: Any = sa_inspect(target).attrs.user_id.history  # a membership moved to another person: both count
    _count(object_session(target), target.user_id, *(history.deleted or ()))


for _name in ("after_insert", "after_update", "after_delete"):
    sa_event.listen(Membership, _name, _on_membership)


@sa_event.listens_for(AppSession, "do_orm_execute")
def _on_statement(state: Any) -> None:
    if ((state.is_insert or state.is_update or state.is_delete)
            and getattr(getattr(state.statement, "table", None), "name", None) == Membership.__tablename__):
        _count(state.session, ANY)
