"""The unit of work: HatiData Auth's own session class, and the work done when one of its transactions ends.

Commit-time work is registered on :class:`AppSession` (and on ``extensions.FlaskAppSession``, the
Flask-SQLAlchemy session built on it), never on SQLAlchemy's global ``Session``: a host app that embeds
HatiData Auth keeps its own sessions free of our listeners.

- before commit: :mod:`hatidata_auth.services.audit` chains and writes the transaction's audit events;
- after commit: :mod:`hatidata_auth.metrics` counts the committed audit events, and the cache invalidations
  queued with :func:`invalidate_after_commit` run, each ``(kind, key)`` once, through the session's
  :class:`CacheInvalidator` (the app's introspector, put in ``session.info`` when the session is made);
- after rollback: the queued invalidations run too (evicting more than needed is harmless); audit events and
  metrics are dropped;
- when a transaction ends without committing (rolled back, closed, or its commit failed), the undos registered
  with :func:`undo_unless_committed` run, newest first: a change made outside the database (a certificate WorkOS
  now trusts) that only this transaction's rows record is taken back with them.

All run when the outermost transaction ends: a savepoint's release or rollback (an applier's event) runs none.

Row locks on SQLite: SQLite has none, drops ``FOR UPDATE`` / ``FOR SHARE``, and pysqlite begins a transaction only at
its first write, so a read meant to be locked saw the state before a concurrent writer's commit and acted on it. A
read that locks rows therefore first takes the database's write turn (:func:`_write_turn_before_row_locks`), held
until the transaction ends: it then reads what the previous writer committed, as PostgreSQL's lock waits for it.

What a query flushes first: :func:`reads_flushed` lets a query skip SQLAlchemy's autoflush when the session holds
no pending change of the tables it reads, and :func:`attach_inserted` puts a row inserted by a Core statement into
the session as loaded (an applier's batch then sends its pending rows at its commit, a statement per table).

This module imports nothing from ``hatidata_auth``: every layer may use it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Protocol, TypeVar

from sqlalchemy import event, text
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import ORMExecuteState, Session, make_transient_to_detached, scoped_session
from sqlalchemy.orm.attributes import instance_state

log = logging.getLogger(__name__)

INVALIDATOR = "hatidata_invalidator"
"""The key of the session's :class:`CacheInvalidator` in ``session.info`` and in ``app.extensions``."""

_INVALIDATIONS = "hatidata_pending_invalidations"
_UNDOS = "hatidata_undos_unless_committed"
_T = TypeVar("_T")


class CacheInvalidator(Protocol):
    """Evicts cached status, here and in every other process (``services.introspection.Introspector``)."""

    def invalidate_session(self, workos_session_id: str) -> None:
        """Evict one session's status."""

    def invalidate_api_key(self, key_id: str, key_hash: str | None = None) -> None:
        """Evict one API key's status (by id, and by the hash of its secret when given)."""

    def invalidate_policy(self, organization_id: str) -> None:
        """Evict one organization's access policy."""


class NotAUnitOfWork(TypeError):
    """Work was queued for commit on a session that would never do it (not an :class:`AppSession`, or one
    made without a cache invalidator): failing here beats a lost audit event or a stale revoked session."""


class AppSession(Session):
    """HatiData Auth's SQLAlchemy session: the listeners of this module, ``services.audit`` and ``metrics`` are
    registered on this class only.

    *invalidator* (a :class:`CacheInvalidator`) runs the cache invalidations queued in its transactions; use
    it directly (``AppSession(engine)``) where Flask-SQLAlchemy's ``db.session`` is not at hand.
    """

    def __init__(self, *args: Any, invalidator: CacheInvalidator | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if invalidator is not None:
            self.info[INVALIDATOR] = invalidator


def unit_of_work(session: Session | scoped_session[Any]) -> AppSession:
    """The :class:`AppSession` behind *session* (``db.session`` or a session); raises :class:`NotAUnitOfWork`
    for any other session."""
    found = session() if isinstance(session, scoped_session) else session
    if not isinstance(found, AppSession):
        raise NotAUnitOfWork(f"{type(found).__name__} is not HatiData Auth's session: work queued for its commit "
                             "would never run (use db.session or hatidata_auth.unit_of_work.AppSession)")
    return found


NO_AUTOFLUSH: Mapping[str, Any] = MappingProxyType({"autoflush": False})
"""Execution options of a query that must not flush the session first (:func:`reads_flushed`)."""
_DEFAULT: Mapping[str, Any] = MappingProxyType({})


def reads_flushed(session: Session, *models: type[Any]) -> Mapping[str, Any]:
    """The execution options for a query that reads only *models*' tables: no autoflush (:data:`NO_AUTOFLUSH`)
    unless *session* holds unflushed changes of one of them (none: SQLAlchemy's default, flush first).

    An applier's batch changes rows of one table in every event; flushing them before each event's next query
    sent one statement per row, where the batch's commit sends one per table. A query that reads none of the
    changed tables sees the same rows either way (objects the session holds keep their unflushed values)."""
    return _DEFAULT if holds_unflushed(session, *models) else NO_AUTOFLUSH


def holds_unflushed(session: Session, *models: type[Any]) -> bool:
    """Whether *session* holds changes of *models*' rows not flushed yet (new, changed or deleted objects): a
    statement sent on ``session.connection()`` does not see them."""
    pending = (session.new, session.dirty, session.deleted)
    return any(isinstance(obj, models) for group in pending for obj in group)


_COLUMN_KEYS: dict[type[Any], frozenset[str]] = {}


def _column_keys(model: type[Any]) -> frozenset[str]:
    keys = _COLUMN_KEYS.get(model)
    if keys is None:
        keys = _COLUMN_KEYS[model] = frozenset(attr.key for attr in sa_inspect(model).column_attrs)
    return keys


def built_from_values(model: type[_T], values: Mapping[str, Any]) -> _T:
    """A new (transient) *model* object holding *values* (mapped column attributes only: raises
    :class:`ValueError` on another key), as ``model(**values)`` would build it, without the declarative
    constructor's per-attribute events: they cost about 20 µs per object, and an applier builds five for a created
    directory user (its row, its person, three audit events). An attribute not in *values* reads ``None`` until
    set, as on a constructed object."""
    unknown = values.keys() - _column_keys(model)
    if unknown:
        raise ValueError(f"{model.__name__} has no column {', '.join(sorted(unknown))}")
    obj: _T = sa_inspect(model).class_manager.new_instance()
    instance_state(obj).dict.update(values)
    return obj


def attach_inserted(session: Session, model: type[_T], values: Mapping[str, Any]) -> _T:
    """The object of a row this transaction has just inserted with *values* by a Core statement on
    ``session.connection()`` (``Session.execute`` flushes every pending change before a Core statement), put in
    *session* as if loaded: no change pending, no query. *values* must hold every mapped column and nothing else
    (a missing one would be expired, and read back by a query at its first use); raises :class:`ValueError`
    otherwise.

    Why: SQLAlchemy's ORM-enabled ``INSERT … RETURNING`` of one row cost an applier more CPU than the statement
    itself (about a millisecond per row, for its bulk-insert machinery); the Core statement and this object cost a
    fraction of it."""
    missing = _column_keys(model) - values.keys()
    if missing:
        raise ValueError(f"{model.__name__} row lacks {', '.join(sorted(missing))}")
    obj = built_from_values(model, values)
    make_transient_to_detached(obj)
    session.add(obj)
    return obj


def invalidate_after_commit(session: Session, kind: str, key: str, key_hash: str | None = None) -> None:
    """Queue the eviction of a cached ``"session"`` (*key*: WorkOS session id), ``"api_key"`` (*key*: key id,
    *key_hash*: hash of its secret) or ``"policy"`` (*key*: organization id) for when *session*'s transaction
    ends; queued twice, it runs once.

    Invalidating only after the commit matters: another process that reloads the entry from the database
    before the change is committed would cache the old state again. Raises :class:`NotAUnitOfWork` when
    *session* has no invalidator.
    """
    own = unit_of_work(session)
    if INVALIDATOR not in own.info:
        raise NotAUnitOfWork("this session has no cache invalidator: a revocation would stay cached")
    pending: dict[tuple[str, str], str | None] = own.info.setdefault(_INVALIDATIONS, {})
    pending[(kind, key)] = key_hash or pending.get((kind, key))


@event.listens_for(AppSession, "after_commit")
@event.listens_for(AppSession, "after_rollback")
def _run_invalidations(session: Session) -> None:
    if session.in_nested_transaction():
        # A savepoint was released or rolled back (SQLAlchemy fires these for savepoints too): the change is not
        # committed yet, and evicting now would let another process reload and answer with the state before it.
        return
    pending = session.info.pop(_INVALIDATIONS, None)
    if not pending:
        return
    invalidator: CacheInvalidator = session.info[INVALIDATOR]
    for (kind, key), key_hash in pending.items():
        try:
            if kind == "session":
                invalidator.invalidate_session(key)
            elif kind == "policy":
                invalidator.invalidate_policy(key)
            else:
                invalidator.invalidate_api_key(key, key_hash)
        except Exception:  # a cache outage must not turn a committed change into an error
            log.exception("invalidation of %s %s failed", kind, key)


def undo_unless_committed(session: Session, what: str, undo: Callable[[], None]) -> None:
    """Run *undo* if *session*'s transaction ends without committing (rolled back, closed, or its commit failed),
    newest first; drop it when the transaction commits. For a change made outside the database that only this
    transaction's rows record (left in place, no row would know of it). *what* names the change in the error
    logged when *undo* fails (never raised: the rollback's own cause is what the caller sees). Raises
    :class:`NotAUnitOfWork` for a session that is not an :class:`AppSession`."""
    unit_of_work(session).info.setdefault(_UNDOS, []).append((what, undo))


@event.listens_for(AppSession, "after_commit")
def _drop_undos(session: Session) -> None:
    if not session.in_nested_transaction():
        session.info.pop(_UNDOS, None)


@event.listens_for(AppSession, "after_transaction_end")
def _run_undos(session: Session, transaction: Any) -> None:
    if transaction.parent is not None:  # a savepoint: the outer transaction may still commit
        return
    for what, undo in reversed(session.info.pop(_UNDOS, [])):
        try:
            undo()
        except Exception:
            log.exception("could not undo %s after its transaction ended uncommitted", what)


# A write that changes nothing (and matches no row) still begins pysqlite's transaction and takes SQLite's write lock.
_SQLITE_WRITE_TURN = text("UPDATE organizations SET id = id WHERE 0")


@event.listens_for(AppSession, "do_orm_execute")
def _write_turn_before_row_locks(state: ORMExecuteState) -> None:
    """On SQLite, before a ``SELECT … FOR UPDATE`` (or ``FOR SHARE``) of a transaction that has not written yet, take
    the database's write turn (module docstring): every state transition that reads under a row lock (a session
    ended, a key revoked, suspended, reinstated or rotated, a last-admin count) is then serialized as on PostgreSQL
    (a break-it review on ``make run``: two rotations of one key both issued a successor, and a revocation racing a
    suspension left a revoked key suspended, which an admin could reinstate)."""
    if not state.is_select or getattr(state.statement, "_for_update_arg", None) is None:
        return
    connection = state.session.connection()
    if connection.dialect.name == "sqlite" and not getattr(connection.connection.dbapi_connection,
                                                           "in_transaction", True):
        connection.execute(_SQLITE_WRITE_TURN)
