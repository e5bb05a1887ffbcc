"""What an applier's batch has established in its transaction, shared by the batch's events.

An applier applies up to 20 events in one transaction, under one savepoint for the batch, or each under its own
when one fails (``inbox_worker._optimistic``). Much of what an event reads is
the same for every event of the batch: the lock on its organization's row, every organization's verified domains
(``domains.VerifiedDomains``), the organization's role mappings, whether the organization has had the event's
directory (``known_directories``). :class:`BatchScope` keeps them for the
transaction, and each event gets an :class:`EventScope` that reads through it:

- What an event establishes is staged in its :class:`EventScope` and joins the batch only when the event's
  savepoint commits, or, under the batch's single savepoint, when the event returns (:meth:`BatchScope.promote`;
  that savepoint rolled back, the whole :class:`BatchScope` is dropped): a rolled-back savepoint releases the row
  locks taken in it, and what was read in it may have been changed by the work rolled back.
- A cached value is used only while nothing it derives from has changed in this session, flushed or not: any write
  to ``organizations`` (an organization's domains, status, directory, a mirrored new one) or ``role_mappings``,
  by the ORM or by a Core statement, in this event or an earlier one (rolled back or not), is counted
  (:func:`writes`), and an entry read before the count moved is read again.
- Role mappings are kept only for an organization whose row this transaction holds locked: a mapping edit locks
  that row first (``role_mapping.replace_mappings``), so none can commit while the batch holds it. Known
  directories likewise: a directory is marked deleted only under its organization's exclusive lock
  (``services.event_source``), and a write to ``known_directories`` in this session is counted as above.

Verified domains are those of every organization, most of them not locked by the batch: an edit committed by
another transaction while the batch runs is seen by the batch's next transaction (as if the batch had run a few
milliseconds earlier), the way the resync reads them once per page.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from itertools import chain
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session, object_session

from ...models import KnownDirectory, Organization, RoleMapping
from ...unit_of_work import AppSession, unit_of_work
from .. import domains, role_mapping
from . import batch_users

_WRITES_KEY = "hatidata_batch_scope_writes"  # {table name: writes counted in this session}
_WATCHED = {model.__table__.name: model for model in (Organization, RoleMapping, KnownDirectory)}


def writes(session: Session, model: type[Any]) -> int:
    """How many writes to *model*'s table this session has sent (flushed ORM rows and Core statements); a count,
    never reset, so that an entry read at one count is stale at any other."""
    counts: dict[str, int] = unit_of_work(session).info.get(_WRITES_KEY) or {}
    return counts.get(model.__table__.name, 0)


def _count(session: Session | None, table: str) -> None:
    if session is not None:
        counts = session.info.setdefault(_WRITES_KEY, {})
        counts[table] = counts.get(table, 0) + 1


def _on_row(_mapper: Any, _connection: Any, target: Any) -> None:
    _count(object_session(target), type(target).__table__.name)


for _model in _WATCHED.values():
    for _name in ("after_insert", "after_update", "after_delete"):
        sa_event.listen(_model, _name, _on_row)


@sa_event.listens_for(AppSession, "do_orm_execute")
def _on_statement(state: Any) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        name = getattr(getattr(state.statement, "table", None), "name", None)
        if isinstance(name, str) and name in _WATCHED:
            _count(state.session, name)


def _unflushed(session: Session, model: type[Any]) -> bool:
    """Whether *session* holds changes of *model* rows not flushed yet (a query would flush them first)."""
    return any(isinstance(obj, model) for obj in chain(session.new, session.dirty, session.deleted))


class BatchScope:
    """What the batch's transaction has established so far (only events whose savepoint committed added to it);
    made by the applier for one transaction and dropped with it."""

    __slots__ = ("_domains", "_known", "_locked", "_mappings", "_users", "_wanted")

    def __init__(self, wanted: Mapping[str, frozenset[str]] | None = None) -> None:
        # WorkOS organization id -> the directory users the batch's events look up there (``batch_users.wanted``)
        self._wanted = wanted or {}
        # organization id -> its wanted directory users, locked and read (``batch_users.lock_and_read``)
        self._users: dict[str, dict[str, batch_users.LockedUser]] = {}
        # WorkOS organization id -> (row, locked exclusively, organizations' write count when read)
        self._locked: dict[str, tuple[Organization, bool, int]] = {}
        self._domains: tuple[int, domains.VerifiedDomains] | None = None
        # organization id -> (role mappings' write count when read, mappings, its row locked before the read)
        self._mappings: dict[str, tuple[int, list[role_mapping.MappingSpec], bool]] = {}
        # (organization id, directory id) -> (known directories' write count when read, the row or None, locked)
        self._known: dict[tuple[str, str], tuple[int, Any, bool]] = {}

    def event(self, session: Session) -> EventScope:
        """A scope for the next event, reading through this one."""
        return EventScope(session, self)

    def promote(self, scope: EventScope) -> None:
        """The event of *scope* committed its savepoint (or returned, under the batch's single savepoint): what it
        established is the transaction's."""
        for key, (org, exclusive, seen) in scope._locked.items():
            held = self._locked.get(key)
            self._locked[key] = (org, exclusive or (held is not None and held[1]), seen)
        if scope._domains is not None:
            self._domains = scope._domains
        self._mappings.update((org_id, (seen, specs, True)) for org_id, (seen, specs, locked)
                              in scope._mappings.items() if locked)
        self._known.update((key, entry) for key, entry in scope._known.items() if entry[2])
        self._users.update(scope._users)


class EventScope:
    """One event's view of its batch: what the batch established, plus what this event has established itself
    (joined to the batch by :meth:`BatchScope.promote` when its savepoint commits)."""

    __slots__ = ("_batch", "_domains", "_known", "_locked", "_mappings", "_session", "_users")

    def __init__(self, session: Session, batch: BatchScope | None = None) -> None:
        self._session = session
        self._batch = batch or BatchScope()
        self._locked: dict[str, tuple[Organization, bool, int]] = {}
        self._domains: tuple[int, domains.VerifiedDomains] | None = None
        self._mappings: dict[str, tuple[int, list[role_mapping.MappingSpec], bool]] = {}
        self._known: dict[tuple[str, str], tuple[int, Any, bool]] = {}
        self._users: dict[str, dict[str, batch_users.LockedUser]] = {}

    def locked_organization(self, workos_organization_id: str, exclusive: bool) -> Organization | None:
        """The organization's row if this transaction holds it locked (*exclusive*: ``FOR UPDATE``, else at least
        ``FOR SHARE``) and no organization was written since it was read; else ``None`` (lock and read it)."""
        held = self._locked.get(workos_organization_id) or self._batch._locked.get(workos_organization_id)
        if held is None or (exclusive and not held[1]) or held[2] != writes(self._session, Organization):
            return None
        return held[0]

    def hold(self, workos_organization_id: str, org: Organization, exclusive: bool) -> None:
        """This event has just read *org* with a lock (*exclusive*: ``FOR UPDATE``)."""
        self._locked[workos_organization_id] = (org, exclusive, writes(self._session, Organization))

    def holds(self, organization_id: str) -> bool:
        """Whether this transaction holds the organization's row (our id) locked."""
        return any(org.id == organization_id for org, _x, _s in chain(self._locked.values(),
                                                                       self._batch._locked.values()))

    def verified_domains(self) -> domains.VerifiedDomains:
        """Every live organization's verified domains, read once while no organization is written."""
        session = self._session
        cached = self._domains or self._batch._domains
        if cached is not None and cached[0] == writes(session, Organization) and not _unflushed(session, Organization):
            return cached[1]
        loaded = domains.VerifiedDomains.load(session)  # the query flushes pending changes first (autoflush)
        self._domains = (writes(session, Organization), loaded)
        return loaded

    def mappings(self, organization_id: str) -> list[role_mapping.MappingSpec]:
        """The organization's role mappings: read once per event, and once per batch while this transaction holds
        the organization's row locked (taken before the read) and writes no mapping."""
        session = self._session
        cached = self._mappings.get(organization_id) or self._batch._mappings.get(organization_id)
        if cached is not None and cached[0] == writes(session, RoleMapping) and not _unflushed(session, RoleMapping):
            return cached[1]
        locked = self.holds(organization_id)
        specs = role_mapping.list_mappings(session, organization_id)
        self._mappings[organization_id] = (writes(session, RoleMapping), specs, locked)
        return specs

    def known_directory(self, organization_id: str, directory_id: str, load: Callable[[], Any]) -> Any:
        """What ``known_directories`` holds of the pair (*load* reads it: a row, or ``None``): read once per event,
        and once per batch while this transaction holds the organization's row locked (taken before the read) and
        writes no known directory."""
        key = (organization_id, directory_id)
        session = self._session
        cached = self._known.get(key) or self._batch._known.get(key)
        if (cached is not None and cached[0] == writes(session, KnownDirectory)
                and not _unflushed(session, KnownDirectory)):
            return cached[1]
        locked = self.holds(organization_id)
        row = load()
        self._known[key] = (writes(session, KnownDirectory), row, locked)
        return row

    def locked_user(self, organization: Organization, workos_id: str) -> batch_users.LockedUser | None:
        """The directory user *workos_id* of *organization* as the batch locked and read it with the others its
        events look up there (the first call for the organization reads them all), if it is one of them, this
        transaction holds the organization's row locked, and what was read is still current; else ``None``
        (read it alone)."""
        names = self._batch._wanted.get(organization.workos_organization_id or "")
        if not names or workos_id not in names or not self.holds(organization.id):
            return None
        read = self._users.get(organization.id)
        if read is None:
            read = self._batch._users.get(organization.id)
        if read is None:
            read = self._users[organization.id] = batch_users.lock_and_read(self._session, organization.id, names)
        entry = read.get(workos_id)
        return entry if entry is not None and batch_users.current(self._session, entry) else None
