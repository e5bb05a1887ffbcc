"""Directory events are bound to their source.

A directory event (``dsync.*``) names a directory and an organization. It is applied only when that directory
is a directory of that organization as WorkOS knows it: our mirror first (the organization's current
``directory_id`` and the ``known_directories`` it has had), then, for a directory the mirror does not know,
``client.directory_sync.get_directory`` through the SDK, whose answer is remembered. Otherwise the event is refused:
stored in the inbox as ``ignored`` with the reason, audited once (no organization, bounded details), and
neither organization is touched.

A deleted directory's id stays known as a tombstone of its organization, also after the organization gets a
new directory: WorkOS never reuses directory ids, so any later event carrying it (``dsync.activated``
included) is stale and ignored, whatever the order it arrives in.

Events pass through :func:`bind` in :func:`services.inbox.receive` (webhooks, the Events API poller, replays);
the full resync checks its directory with :func:`check_source` and each listed object with :func:`belongs`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Row, Select, bindparam, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ..models import KnownDirectory, Organization, utcnow
from ..workos import WorkOSNotFound, translate_errors
from .events import EventContext, PayloadError, resolve_organization

DIRECTORY_EVENT_PREFIX = "dsync."
# Events whose data is the directory itself (its id is ``data.id``); the others name it in ``directory_id``.
DIRECTORY_OBJECT_EVENTS = frozenset({"dsync.activated", "dsync.deleted"})
# Events that change which directories an organization has: they lock its row exclusively.
_DIRECTORY_CHANGES = DIRECTORY_OBJECT_EVENTS
_EMBEDDED = ("user", "group")  # objects a membership event embeds, each naming its directory and organization
_DETAIL_MAX = 96


def lock_directory_changes_first(session: Session, payloads: Iterable[dict[str, Any]]) -> None:
    """Before a batch applies any of *payloads*: lock ``FOR UPDATE``, in one statement and in sorted order, the rows
    of the organizations whose directory one of them changes (``dsync.activated``, ``dsync.deleted``), as their
    binding would later (PostgreSQL; nothing on SQLite, whose writers take turns).

    The lock order of ``services.person_email`` (the organization, then keys, then emails): an earlier event of the
    batch took a new person's email lock, the directory change then waited for its organization's row, which a
    first sign-in held key-shared while it waited for that email: a deadlock that failed the sign-in (break-it
    review)."""
    wanted = sorted({str(p["data"]["organization_id"]) for p in payloads
                     if p.get("event") in _DIRECTORY_CHANGES and isinstance(p.get("data"), dict)
                     and p["data"].get("organization_id")})
    if wanted and session.get_bind().dialect.name == "postgresql":
        session.execute(select(Organization.id).where(Organization.workos_organization_id.in_(wanted))
                        .order_by(Organization.workos_organization_id).with_for_update())


def is_directory_event(event_type: str) -> bool:
    """Whether *event_type* is a Directory Sync event, bound to its source before it is applied."""
    return event_type.startswith(DIRECTORY_EVENT_PREFIX)


@dataclass(frozen=True, slots=True)
class EventSource:
    """The directory an event comes from and the WorkOS organization it names (``None``: it names none)."""

    directory_id: str
    workos_organization_id: str | None


@dataclass(frozen=True, slots=True)
class Binding:
    """The verdict on a source: ``bound`` (apply), ``refused`` (not the organization's directory) or
    ``ignored`` (a deleted directory); *organization_id* is our tenant when known, *reason* says why not."""

    status: str
    reason: str | None = None
    organization_id: str | None = None

    @property
    def bound(self) -> bool:
        """Whether the event may be applied."""
        return self.status == "bound"


def _ids(data: dict[str, Any], event_type: str) -> tuple[set[str], set[str]]:
    objects = [data, *(data[k] for k in _EMBEDDED if isinstance(data.get(k), dict))]
    directories = {str(o["directory_id"]) for o in objects if o.get("directory_id")}
    if event_type in DIRECTORY_OBJECT_EVENTS and data.get("id"):
        directories.add(str(data["id"]))
    organizations = {str(o["organization_id"]) for o in objects if o.get("organization_id")}
    return directories, organizations


def event_source(event_type: str, data: Any) -> EventSource | str:
    """The source an event's data names, or the reason it names no single one (several directories or
    organizations). Raises :class:`PayloadError` when it names no directory at all."""
    if not isinstance(data, dict):
        raise PayloadError("data must be an object")
    directories, organizations = _ids(data, event_type)
    if not directories:
        raise PayloadError("a directory event must name its directory")
    if len(directories) > 1:
        return "the event names several directories"
    if len(organizations) > 1:
        return "the event names several organizations"
    return EventSource(directories.pop(), organizations.pop() if organizations else None)


def _clip(value: Any) -> str | None:
    return None if value is None else str(value)[:_DETAIL_MAX]


def _refuse(ctx: EventContext, source: EventSource | None, reason: str, owner: str | None = None,
            directory_id: str | None = None) -> Binding:
    directory = source.directory_id if source else directory_id
    ctx.record("directory_event.refused", organization_id=None, target_type="directory",
               target_id=None if directory is None else directory[:64], outcome="failure",
               details={"event_type": _clip(ctx.event_type), "directory_id": _clip(directory),
                        "organization_id": _clip(source.workos_organization_id if source else None),
                        "directory_owner": _clip(owner), "reason": _clip(reason)})
    ctx.ignore(f"refused: {reason}")
    return Binding("refused", reason)


def _ignore_deleted(ctx: EventContext, org: Organization, directory_id: str, deleted_by: str | None) -> Binding:
    ctx.record("directory_event.ignored", organization_id=org.id, target_type="directory",
               target_id=directory_id, outcome="failure",
               details={"event_type": _clip(ctx.event_type), "reason": "directory deleted",
                        "deleted_by_event_id": deleted_by})
    ctx.ignore("directory deleted")
    return Binding("ignored", "directory deleted", org.id)


def _locked_organization(ctx: EventContext, workos_organization_id: str) -> Organization | None:
    # A directory deletion locks the organization exclusively, every other directory event shares the lock:
    # an event of a directory being deleted is applied wholly before the deletion or seen as stale after it.
    exclusive = ctx.event_type in _DIRECTORY_CHANGES
    org = ctx.scope.locked_organization(workos_organization_id, exclusive) if ctx.scope is not None else None
    if org is None:  # not held by this transaction's batch yet (``events.batch_scope``): lock it now
        org = ctx.session.scalar(_organization_statement(not exclusive),
                                 {"workos_organization_id": workos_organization_id})
        if org is not None and ctx.scope is not None:
            ctx.scope.hold(workos_organization_id, org, exclusive)
    if org is not None:  # the handler's lookups of this tenant reuse the row (``EventContext.locked_organizations``)
        ctx.locked_organizations[workos_organization_id] = org
    return org


@functools.cache
def _organization_statement(shared: bool) -> Select[Organization]:
    # Built once (bound parameters): a statement object reused keeps its cache key, per event only the values bind.
    # populate_existing: the row an earlier event of the batch loaded (unlocked, or under a lock its rolled-back
    # savepoint released) may have been changed by another transaction since; the lock's read is what counts.
    return (select(Organization).where(Organization.workos_organization_id == bindparam("workos_organization_id"))
            .with_for_update(read=shared).execution_options(populate_existing=True))


@functools.cache
def _known_statement() -> Select[datetime | None, str | None]:
    return select(KnownDirectory.deleted_at, KnownDirectory.deleted_by_event_id).where(
        KnownDirectory.organization_id == bindparam("organization_id"),
        KnownDirectory.directory_id == bindparam("directory_id"))


def _known(ctx: EventContext, org: Organization, directory_id: str) -> Row[datetime | None, str | None] | None:
    """Whether the organization has had the directory (``None``: never), and if deleted, when and by which event;
    read once per applier's batch while it holds the organization's row (``events.batch_scope``)."""
    def load() -> Row[datetime | None, str | None] | None:
        params = {"organization_id": org.id, "directory_id": directory_id}
        return ctx.session.execute(_known_statement(), params).first()

    if ctx.scope is None:
        return load()
    known: Row[datetime | None, str | None] | None = ctx.scope.known_directory(org.id, directory_id, load)
    return known


def _remember(ctx: EventContext, org: Organization, directory_id: str, *, deleted: bool = False) -> None:
    """Record that the directory is the organization's (a tombstone when *deleted*); idempotent."""
    now = utcnow()
    values = {"organization_id": org.id, "directory_id": directory_id, "created_at": now, "updated_at": now,
              "deleted_at": ctx.event_time if deleted else None,
              "deleted_by_event_id": ctx.event_id if deleted else None}
    insert = postgresql.insert if ctx.session.get_bind().dialect.name == "postgresql" else sqlite.insert
    stmt = insert(KnownDirectory).values(**values)
    if deleted:
        table = KnownDirectory.__table__
        stmt = stmt.on_conflict_do_update(
            index_elements=["organization_id", "directory_id"],
            set_={"deleted_at": values["deleted_at"], "deleted_by_event_id": values["deleted_by_event_id"],
                  "updated_at": now},
            where=table.c.deleted_at.is_(None))
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=["organization_id", "directory_id"])
    ctx.session.execute(stmt)


def _workos_owner(ctx: EventContext, directory_id: str, *, missing_ok: bool = True) -> str | None:
    """The WorkOS organization of a directory per WorkOS; ``None`` when WorkOS does not know it (deleted),
    or :class:`~hatidata_auth.workos.WorkOSNotFound` unless *missing_ok*."""
    if ctx.client is None:
        return None
    try:
        with translate_errors():
            directory = ctx.client.directory_sync.get_directory(directory_id)
    except WorkOSNotFound:  # only "not found" is an answer; anything else is retried
        if not missing_ok:
            raise
        return None
    return str(directory.organization_id)


def _owner_by_mirror(ctx: EventContext, directory_id: str) -> str | None:
    # The event names no organization: the tenant is what we look for, so this lookup is by directory alone.
    row = ctx.session.execute(
        select(Organization.workos_organization_id).join(KnownDirectory, KnownDirectory.organization_id
                                                         == Organization.id)
        .where(KnownDirectory.directory_id == directory_id).limit(1)).first()
    if row is None:
        row = ctx.session.execute(select(Organization.workos_organization_id)
                                  .where(Organization.directory_id == directory_id).limit(1)).first()
    return None if row is None else row[0]


def check_source(ctx: EventContext, source: EventSource, *, verify: bool = False) -> Binding:
    """Decide whether *source* is a live directory of its organization (see the module docstring).

    *verify*: ask WorkOS even when our mirror knows the directory (the resync, which reads WorkOS anyway),
    and let :class:`~hatidata_auth.workos.WorkOSNotFound` for a directory WorkOS does not know propagate.

    Refusals and ignores are audited and mark *ctx* ignored. A bound ``dsync.deleted`` leaves the tombstone,
    a bound ``dsync.activated`` of a new directory remembers the one it replaces. Raises the other
    :class:`~hatidata_auth.workos.WorkOSFailure` errors (the caller's transaction fails and the event is retried).
    """
    directory_id, claimed = source.directory_id, source.workos_organization_id
    if claimed is None:
        return _refuse(ctx, source, "no organization: neither the event nor WorkOS names one")
    org = _locked_organization(ctx, claimed)
    known = None
    if org is not None:
        known = _known(ctx, org, directory_id)
        if known is not None and known.deleted_at is not None:
            return _ignore_deleted(ctx, org, directory_id, known.deleted_by_event_id)
        current = org.directory_id == directory_id
        if current and org.directory_state == "deleted":
            return _ignore_deleted(ctx, org, directory_id, None)
        if (known is not None or current) and not verify:
            return _bound(ctx, org, directory_id, remembered=known is not None)
    owner = _workos_owner(ctx, directory_id, missing_ok=not verify)
    if owner is None:
        return _refuse(ctx, source, "WorkOS knows no such directory")
    if owner != claimed:
        return _refuse(ctx, source, "the directory belongs to another organization", owner)
    if org is None:
        org = resolve_organization(ctx, claimed)  # mirrored only once WorkOS vouched for the pair
        if org is None:
            return Binding("bound")  # the handler finds no organization either, and says so
    return _bound(ctx, org, directory_id, remembered=known is not None)


def _bound(ctx: EventContext, org: Organization, directory_id: str, *, remembered: bool) -> Binding:
    if ctx.event_type == "dsync.deleted":
        _remember(ctx, org, directory_id, deleted=True)
        return Binding("bound", organization_id=org.id)
    if not remembered:
        _remember(ctx, org, directory_id)
    previous = org.directory_id
    if ctx.event_type == "dsync.activated" and previous is not None and previous != directory_id:
        # The organization's directory is about to change: keep the one it had as known (a tombstone if
        # it was deleted), so its late events are still told apart.
        _remember(ctx, org, previous, deleted=org.directory_state == "deleted")
    return Binding("bound", organization_id=org.id)


def bind(ctx: EventContext, data: Any) -> dict[str, Any] | None:
    """Bind a directory event to its source: the data to apply, or ``None`` when it was refused or ignored.

    An event that names no organization (``dsync.activated`` and ``dsync.deleted`` may not) is given the
    directory's organization per our mirror, else per WorkOS. Raises :class:`PayloadError` when the data
    names no directory.
    """
    source = event_source(ctx.event_type, data)
    if isinstance(source, str):
        directories, _ = _ids(data, ctx.event_type)
        _refuse(ctx, None, source, directory_id=",".join(sorted(directories)))
        return None
    if source.workos_organization_id is None:
        owner = _owner_by_mirror(ctx, source.directory_id) or _workos_owner(ctx, source.directory_id)
        if owner is not None:
            source = EventSource(source.directory_id, owner)
            data = {**data, "organization_id": owner}
    return data if check_source(ctx, source).bound else None


def belongs(data: dict[str, Any], source: EventSource) -> bool:
    """Whether a listed directory object (user or group) comes from *source* (the full resync's check)."""
    directories, organizations = _ids(data, "")
    return directories == {source.directory_id} and organizations <= {source.workos_organization_id}


class _Report(Protocol):
    objects_refused: int

    def note(self, text: str) -> None: ...


def resync_guard(ctx: EventContext, source: EventSource, report: _Report) -> Callable[[dict[str, Any]], bool] | None:
    """The full resync's binding: ``None`` when its directory is refused or deleted (noted in *report*,
    audited), else a predicate that keeps the listed objects of *source* and counts the others as refused."""
    if not check_source(ctx, source, verify=True).bound:
        report.note(ctx.note or "directory refused")
        return None

    def keep(data: dict[str, Any]) -> bool:
        if belongs(data, source):
            return True
        report.objects_refused += 1
        report.note(f"{_clip(data.get('object'))} {_clip(data.get('id'))} is not from {source.directory_id}")
        return False

    return keep
