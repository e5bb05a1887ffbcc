"""The durable inbox of WorkOS events (webhooks and the Events API share it).

Webhooks are acknowledged, then applied: :func:`store` keeps the verified event with one statement (status
``received``) and the appliers (:mod:`~hatidata_auth.services.inbox_worker`) apply it later with
:func:`apply_event`, in batches and in order per :func:`entity_key`.

The Events API poller and replays apply at once with :func:`receive`: the event is stored under its unique
WorkOS event id with ``INSERT … ON CONFLICT DO NOTHING`` in the same transaction that applies it, together with
its audit events: either all of it commits or none of it. A duplicate (the insert hit the unique id) is
acknowledged without any change. If applying fails, the transaction rolls back and the event is stored again,
alone, as ``failed`` with its error; a retry (or ``hatidata inbox replay``) claims the failed row atomically and
applies it once.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Engine, Select, String, and_, bindparam, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ..causes import Actor, Cause
from ..errors import is_connection_error
from ..models import Organization, WebhookEvent, utcnow
from ..models.inbox import INBOX_CHANNEL, INTERNAL_SOURCE, REVOKING_NOTE, about_one_person, status_is
from ..trace_context import carrier
from ..workos import WorkOSClient
from . import event_source, fanout_jobs, workos_revocations
from .events import HANDLERS, EventContext, PayloadError, apply_internal, handler_for, parse_time
from .events.batch_scope import EventScope

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class InboxResult:
    """What became of one event: ``applied``, ``ignored``, ``duplicate`` or ``failed``."""

    event_id: str
    event_type: str
    status: str
    error: str | None = None
    note: str | None = None


OnResult = Callable[[InboxResult], None]
"""Called with an event's result in the transaction that records it (:func:`receive`)."""


def validate_envelope(payload: Any) -> dict[str, Any]:
    """Check the event envelope ``{id, event, data, created_at}``; raise :class:`PayloadError` otherwise."""
    if not isinstance(payload, dict):
        raise PayloadError("the body must be a JSON object")
    event_id, event_type, data = payload.get("id"), payload.get("event"), payload.get("data")
    if not isinstance(event_id, str) or not event_id or len(event_id) > 64:
        raise PayloadError("id must be a string of 1-64 characters")
    if not isinstance(event_type, str) or not event_type or len(event_type) > 96:
        raise PayloadError("event must be a string of 1-96 characters")
    if not isinstance(data, dict):
        raise PayloadError("data must be an object")
    if fanout_jobs.is_internal(event_type, event_id):
        raise PayloadError("the type or id belongs to our internal work (hatidata.*), which no event may carry")
    try:
        parse_time(payload.get("created_at"))
    except (TypeError, ValueError) as exc:
        raise PayloadError("created_at is not a timestamp") from exc
    return payload


_DIRECTORY_OBJECT_EVENTS = ("dsync.activated", "dsync.deleted")
_KEY_MAX = 160


def _ref(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def entity_key(payload: dict[str, Any]) -> str:
    """What the event is about, the unit of order of the appliers: ``directory:<id>`` (``dsync.activated`` and
    ``dsync.deleted``), ``user:<directory user id>`` (user events and group membership events, which decide
    that user's access), ``group:<id>`` (group events), ``organization_membership:<organization id>/<user id>``
    (one person's memberships of one organization, whatever their WorkOS ids), ``<family>:<data.id>`` for other
    types with an id, else ``event:<event id>`` (no order with any other event). At most 160 characters."""
    event_type, data = str(payload["event"]), payload["data"]
    ref: str | None
    if event_type in _DIRECTORY_OBJECT_EVENTS:
        kind, ref = "directory", _ref(data.get("id"))
    elif event_type.startswith("dsync.user."):
        kind, ref = "user", _ref(data.get("id"))
    elif event_type.startswith("dsync.group.user_"):
        user = data.get("user")
        kind, ref = "user", _ref(user.get("id")) if isinstance(user, dict) else None
    elif event_type.startswith("dsync.group."):
        kind, ref = "group", _ref(data.get("id"))
    elif event_type.startswith("organization_membership."):  # not by id: a re-added member gets a new one
        org, user = _ref(data.get("organization_id")), _ref(data.get("user_id"))
        kind, ref = "organization_membership", f"{org}/{user}" if org and user else None
    else:
        kind, ref = event_type.rsplit(".", 1)[0], _ref(data.get("id"))
    if ref is None:
        return f"event:{payload['id']}"[:_KEY_MAX]
    return f"{kind}:{ref}"[:_KEY_MAX]


def _workos_organization(payload: dict[str, Any]) -> str | None:
    data = payload["data"]
    if str(payload["event"]).startswith("organization."):
        return _ref(data.get("id"))
    return _ref(data.get("organization_id"))


def _derived_values(payload: dict[str, Any]) -> dict[str, Any]:
    """The columns every write of an event row derives from its payload (the one place they are computed, so that no
    insert path leaves out the order key, the tenant or the urgency); the tenant as the WorkOS organization id
    (``workos_org``) it is looked up by."""
    return {"event_id": payload["id"], "event_type": payload["event"], "payload": payload,
            "workos_org": _workos_organization(payload), "event_created_at": parse_time(payload.get("created_at")),
            "entity_key": entity_key(payload), "revokes": HANDLERS.revokes(str(payload["event"]), payload["data"])}


def _tenant(workos_org: Any) -> Any:
    return select(Organization.id).where(Organization.workos_organization_id == workos_org).scalar_subquery()


def _derived(payload: dict[str, Any]) -> dict[str, Any]:
    """:func:`_derived_values` as column values (the tenant looked up in the statement)."""
    values = _derived_values(payload)
    workos_org = values.pop("workos_org")
    return {**values, "organization_id": _tenant(workos_org) if workos_org else None}


def _rederived(stmt: Any) -> dict[str, Any]:
    """On a conflict, the derived columns are taken again from the new row (an older row may predate them)."""
    return {name: stmt.excluded[name] for name in ("organization_id", "entity_key", "revokes")}


def store(session: Session, payload: dict[str, Any], *, source: str = "webhook", notify: bool = True) -> str:
    """Keep a verified event (envelope checked with :func:`validate_envelope`) for the appliers; commits.

    Returns ``"received"`` (stored with status ``received``, or ``ignored`` when no handler takes its type; a
    known ``failed`` event is queued again) or ``"duplicate"`` (a known event otherwise: nothing changes). One
    statement: the insert, our tenant (looked up from the WorkOS organization the event names, in the same
    statement) and, on PostgreSQL with *notify*, the ``NOTIFY`` that wakes other processes' appliers when the
    transaction commits (a caller whose own process runs appliers wakes them itself and passes ``False``: a
    ``NOTIFY`` per event cost the listening processes and the database more than the insert; an event that may take
    access away from many, a group, a directory, a connection or an organization, notifies whatever *notify* says,
    and one that takes it from one person is the acknowledging request's to apply: only *notify* decides). With
    traces on, the current trace context is kept with it: its application continues the webhook's trace.
    """
    handled = handler_for(payload["event"]) is not None
    params = {**_derived_values(payload), "status": "received" if handled else "ignored", "source": source,
              "last_error": None if handled else "event type not handled", "trace_context": carrier(),
              "now": utcnow()}
    bind = session.get_bind()
    # An event that may take access away from many is always announced: every process's deprovisioning thread wakes
    # for it. One person's is applied by the acknowledging request, which wakes its own thread if it could not.
    for_threads = bool(params["revokes"]) and not about_one_person(params["entity_key"])
    statement = _store_statement(bind.dialect.name, notify or for_threads)
    params["note"] = REVOKING_NOTE if for_threads else ""
    if isinstance(bind, Engine) and bind.dialect.name == "postgresql" and not session.in_transaction():
        # The one statement is its own transaction (autocommit), on a connection of its own outside the session:
        # no BEGIN and COMMIT round trips (two of the four) and none of the session's transaction bookkeeping.
        # Its NOTIFY is delivered when it ends.
        with bind.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            row = connection.execute(statement, params).first()
    else:  # on the session's connection: a Core statement, no ORM execution state to build
        row = session.connection().execute(statement, params).first()
        session.commit()
    return "duplicate" if row is None else "received"


_STORED = ("event_id", "event_type", "payload", "event_created_at", "entity_key", "revokes", "status", "source",
           "last_error", "trace_context")


@functools.cache
def _store_statement(dialect: str, notify: bool = True) -> Any:
    """:func:`store`'s statement, built once per dialect (and with or without the ``NOTIFY``) with bound parameters:
    building (and keying for the compiled cache) a new statement per event cost more CPU than the insert itself
    (``bench/ack_profile.py``)."""
    table = WebhookEvent.__table__
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    now = bindparam("now", type_=table.c.received_at.type)
    row_insert = insert(table).values(
        **{name: bindparam(name, type_=table.c[name].type) for name in _STORED}, attempts=0, received_at=now,
        created_at=now, updated_at=now,
        organization_id=_tenant(bindparam("workos_org", type_=table.c.organization_id.type)))
    stmt = row_insert.on_conflict_do_update(
        index_elements=["event_id"], set_={"status": "received", "last_error": None, "updated_at": now,
                                           "trace_context": row_insert.excluded.trace_context,
                                           **_rederived(row_insert)},
        where=table.c.status == "failed",
    ).returning(table.c.id)
    if dialect == "postgresql" and notify:  # the NOTIFY is delivered when the transaction commits
        note = bindparam("note", type_=String)
        return select(func.pg_notify(INBOX_CHANNEL, note)).select_from(stmt.cte("stored"))
    return stmt


def _insert(session: Session, values: dict[str, Any]) -> bool:
    """Store the event, or claim it if it failed before; returns whether this delivery should apply it.

    One statement: ``INSERT … ON CONFLICT (event_id) DO UPDATE … WHERE status = 'failed' RETURNING id``. A new
    id is inserted; a known failed one is claimed (only one concurrent retry wins the row); any other known id
    (applied, ignored) returns no row: a duplicate.
    """
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    now = values["updated_at"]
    table = WebhookEvent.__table__  # Core, not the ORM bulk-insert path
    stmt = insert(table).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["event_id"],
        set_={"status": values["status"], "attempts": table.c.attempts + 1, "applied_at": values["applied_at"],
              "last_error": None, "updated_at": now, **_rederived(stmt)},
        where=table.c.status == "failed",
    )
    result = session.execute(stmt.returning(table.c.id))
    return result.first() is not None


def record_failure(session: Session, payload: dict[str, Any], source: str, error: str) -> None:
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    now = utcnow()
    table = WebhookEvent.__table__
    stmt = insert(table).values(**_derived(payload), received_at=now, status="failed", source=source, attempts=1,
                                last_error=error, created_at=now, updated_at=now)
    stmt = stmt.on_conflict_do_update(
        index_elements=["event_id"],
        set_={"status": "failed", "attempts": table.c.attempts + 1, "last_error": error, "updated_at": now,
              **_rederived(stmt)},
        where=table.c.status.in_(("failed", "received")),
    )
    session.execute(stmt)


def apply_event(session: Session, client: WorkOSClient, payload: dict[str, Any], cause: Cause, *,
                source: str = "webhook", fanout_chunk: int | None = None,
                budget: fanout_jobs.MemberBudget | None = None, scope: EventScope | None = None) -> EventContext:
    """Apply one stored event with its type's handler in *session*'s transaction (the caller commits or rolls
    back); the context says the outcome. Raises what the handler raises (:class:`PayloadError` for bad data).

    A row of our own internal work (*source* ``internal``, written only by ``fanout_jobs.insert_job``) goes to the
    internal handlers and acts with the cause it stored; *fanout_chunk* is ``HATIDATA_FANOUT_CHUNK``; *budget*,
    what the caller's transaction may still recompute (an applier's batch shares one chunk); *scope*, what the
    applier's batch has established in its transaction (``events.batch_scope``). Sessions it ends are
    ended at WorkOS afterwards, by a queued job (``services.workos_revocations``), whoever applies it: an applier,
    the acknowledging webhook, the Events API poller, a replay."""
    with workos_revocations.deferred_in(session):  # no WorkOS revocation inside an event's transaction
        return _apply_event(session, client, payload, cause, source, fanout_chunk, budget, scope)


def _apply_event(session: Session, client: WorkOSClient, payload: dict[str, Any], cause: Cause, source: str,
                 fanout_chunk: int | None, budget: fanout_jobs.MemberBudget | None,
                 scope: EventScope | None) -> EventContext:
    chunk = fanout_jobs.chunk_size(fanout_chunk)
    if source == INTERNAL_SOURCE:
        return apply_internal(session, client, payload, chunk, budget)
    handler = handler_for(payload["event"])
    ctx = EventContext(session=session, client=client, event_id=payload["id"], event_type=payload["event"],
                       event_time=parse_time(payload.get("created_at")) or utcnow(), actor=cause.actor,
                       request=cause.request, fanout_chunk=chunk, member_budget=budget, scope=scope)
    if handler is None:
        ctx.ignore("event type not handled")
        return ctx
    data = payload["data"]
    if event_source.is_directory_event(ctx.event_type):
        data = event_source.bind(ctx, data)  # None: refused or ignored (recorded on ctx and audited)
    if data is not None:
        handler(ctx, data)
    return ctx


ERROR_SUMMARY_CHARS = 300
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


def error_summary(exc: BaseException, limit: int = ERROR_SUMMARY_CHARS) -> str:
    """``"<ExceptionType>: <first line of its message>"``, control characters removed, at most *limit* characters.

    What tenants may see of a failure (``last_error``, API answers); never a traceback, a statement or its
    parameters (SQLAlchemy puts those after the first line).
    """
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else ""
    text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return _CONTROL.sub(" ", text)[:limit]


def receive(session: Session, client: WorkOSClient, payload: dict[str, Any], *, source: str = "webhook",
            cause: Cause | None = None, on_result: OnResult | None = None) -> InboxResult:
    """Store and apply one verified event exactly once (by WorkOS unless *cause* says who); commits (or rolls back
    and records the failure). *on_result* is called with the result in the transaction that records it, before its
    commit (a replay's audit event); for a duplicate, after the rollback (the caller commits what it writes). With
    *on_result*, a failure that cannot be recorded is raised (no redelivery would record it), not only logged.

    Raises :class:`PayloadError` (nothing stored) when the envelope or the data has the wrong shape.
    """
    done = on_result or (lambda result: None)
    validate_envelope(payload)
    cause = cause or Cause.by(Actor.workos())
    event_id, event_type = payload["id"], payload["event"]
    handled = handler_for(event_type) is not None
    now = utcnow()
    try:
        inserted = _insert(session, {
            **_derived(payload), "received_at": now, "status": "applied" if handled else "ignored",
            "source": source, "attempts": 1, "applied_at": now if handled else None, "created_at": now,
            "updated_at": now,
        })
        if not inserted:  # known id, and not a failed one this delivery could claim: a duplicate
            session.rollback()
            return reported(done, InboxResult(event_id, event_type, "duplicate"))
        if not handled:
            result = reported(done, InboxResult(event_id, event_type, "ignored", note="event type not handled"))
            session.commit()
            return result
        ctx = apply_event(session, client, payload, cause)
        if ctx.outcome != "applied" or ctx.note:
            session.execute(update(WebhookEvent).where(WebhookEvent.event_id == event_id)
                            .values(status=ctx.outcome, last_error=ctx.note))
        result = reported(done, InboxResult(event_id, event_type, ctx.outcome, note=ctx.note))
        session.commit()
        return result
    except PayloadError:
        session.rollback()
        raise
    except Exception as exc:
        session.rollback()
        if is_connection_error(exc):
            raise  # the database is unreachable: nothing can be recorded; the caller answers 503
        error = error_summary(exc)
        # The traceback goes to the server log only: tenants see the stored summary through the API.
        log.warning("applying WorkOS event %s (%s) failed: %s", event_id, event_type, error, exc_info=exc)
        failed = InboxResult(event_id, event_type, "failed", error=error)
        try:
            record_failure(session, payload, source, error)
            done(failed)
            session.commit()
        except Exception:  # the database itself is down: WorkOS retries anyway
            session.rollback()
            if on_result is not None:
                raise  # a replay is never sent again: its caller answers the error, nothing done or audited
            log.exception("could not record the failure of event %s", event_id)
        return failed


def reported(on_result: OnResult, result: InboxResult) -> InboxResult:
    """*result*, once *on_result* has been told of it."""
    on_result(result)
    return result


def concerning(org: Organization) -> ColumnElement[bool]:
    """SQL condition: the stored event concerns *org* (its ``organization_id``, or when that is unknown, the
    WorkOS organization, directory or connection named in its ``data``). The only test of an event's tenant, so
    that it filters in the query, before any limit."""
    ours = [ref for ref in (org.workos_organization_id, org.directory_id, org.connection_id) if ref]
    named = [WebhookEvent.payload[("data", name)].as_string().in_(ours)
             for name in ("organization_id", "directory_id", "connection_id")]
    itself = and_(WebhookEvent.event_type.startswith("organization."),
                  WebhookEvent.payload[("data", "id")].as_string().in_(ours))
    return or_(WebhookEvent.organization_id == org.id,
               and_(WebhookEvent.organization_id.is_(None), or_(*named, itself)))


def failed_of(org: Organization) -> Select[tuple[WebhookEvent]]:
    """The query of *org*'s failed events (order and limit it; filtered before either)."""
    return select(WebhookEvent).where(status_is("failed"), concerning(org))


def counts(session: Session) -> dict[str, int]:
    """Events per status."""
    rows = session.execute(select(WebhookEvent.status, func.count()).group_by(WebhookEvent.status))
    return {status: int(n) for status, n in rows}


def event_time(payload: dict[str, Any]) -> datetime | None:
    """The event's ``created_at``."""
    return parse_time(payload.get("created_at"))
