"""The inbox appliers of one app process: an :class:`~hatidata_auth.services.applier_pool.ApplierPool` bound to
the app (each batch in an app context, with ``db.session`` and the WorkOS client).

Settings: ``HATIDATA_INBOX_APPLIERS`` threads per process (unset: 1, none under ``TESTING``; 0: none, for
deployments that run ``hatidata inbox work`` instead), ``HATIDATA_INBOX_BATCH`` events per transaction,
``HATIDATA_INBOX_POLL_INTERVAL`` seconds between polls when no wake-up comes,
``HATIDATA_INBOX_LINGER`` seconds an applier waits after a short batch (``services.applier_pool.Linger``; 0: never),
``HATIDATA_INBOX_GIVE_WAY`` seconds at most an applier thread of a web process waits for a pause in its requests
before it claims, per backlog (``services.applier_pool.GiveWay``; 0: never; the requests are counted by a WSGI
middleware, :class:`CountRequests`),
``HATIDATA_FANOUT_CHUNK`` members per recompute job (``services.fanout_jobs``). The threads start
with the first request or gunicorn's ``post_worker_init`` (never in a CLI command, never before a fork).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from flask import Flask, current_app, has_app_context
from sqlalchemy import event, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from . import metrics, tracing
from .causes import Cause
from .config import DEFAULTS
from .extensions import FlaskAppSession, db
from .models.inbox import INBOX_CHANNEL, REVOKING_NOTE, about_one_person
from .services.applier_pool import ApplierPool, RequestGauge
from .services.fanout_jobs import QUEUED_REVOKING, chunk_size, queued_revoking_job
from .services.inbox import entity_key
from .services.inbox_claim import waiting_behind
from .services.inbox_worker import apply_batch, apply_entity_now, revokes_access

log = logging.getLogger(__name__)

EXTENSION = "hatidata_inbox_appliers"
GAUGE = "hatidata_request_gauge"


class CountRequests:
    """WSGI middleware: each request through *wsgi_app* entered and left on *gauge* (whatever it answers or
    raises), so that the process's appliers can give way to its requests."""

    def __init__(self, wsgi_app: Any, gauge: RequestGauge) -> None:
        self.wsgi_app, self.gauge = wsgi_app, gauge

    def __call__(self, environ: Any, start_response: Any) -> Any:
        self.gauge.enter()
        try:
            return self.wsgi_app(environ, start_response)
        finally:
            self.gauge.leave()


def applier_threads(app: Flask) -> int:
    """How many applier threads this process runs (``HATIDATA_INBOX_APPLIERS``, or the default)."""
    configured = app.config.get("HATIDATA_INBOX_APPLIERS")
    if configured is not None:
        return max(0, int(configured))
    if app.config.get("TESTING"):
        return 0
    # One per app process: each gunicorn worker runs one, and with the linger a lone thread fills its batches
    # (20 events a batch under bench.dsync_bench's load, against 6-8 with two threads a process, which split the
    # arriving events between them; a batch's fixed cost is then shared by fewer events).
    return 1


def default_threads(app: Flask) -> int:
    """Applier threads of a separate ``hatidata inbox work`` process: 2 on PostgreSQL (the only appliers: a batch
    waiting on WorkOS does not hold up the rest), 1 on SQLite (whose writers take turns anyway)."""
    return 2 if _is_postgresql(app) else 1


def _is_postgresql(app: Flask) -> bool:
    return str(app.config.get("SQLALCHEMY_DATABASE_URI") or "").startswith("postgresql")


def listen_dsn(app: Flask) -> str | None:
    """The libpq connection string of the app's PostgreSQL database (``None`` for another database), with the
    engine's ``connect_timeout`` (``HATIDATA_DB_CONNECT_TIMEOUT``)."""
    if not _is_postgresql(app):
        return None
    with app.app_context():
        url = db.engine.url
    timeout = ((app.config.get("SQLALCHEMY_ENGINE_OPTIONS") or {}).get("connect_args") or {}).get("connect_timeout")
    if timeout is not None and "connect_timeout" not in url.query:  # bounded as the engine's connections are
        url = url.update_query_dict({"connect_timeout": str(timeout)})
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def run_batch(app: Flask, revoking_only: bool = False) -> int:
    """Apply one batch in an app context (only events that take access away with *revoking_only*); returns how
    many events it claimed."""
    with app.app_context():
        client = app.extensions["hatidata_workos"].client
        report = apply_batch(db.session(), client, limit=batch_size(app), revoking_only=revoking_only,
                             fanout_chunk=fanout_chunk(app), tracer=tracing.tracer(app))
    _last_batch.rows = report.rows
    if report.claimed:
        metrics.inbox_batch(report.claimed, revoking_only=revoking_only)
    return report.claimed


_last_batch = threading.local()  # .rows: the inbox rows of this thread's last batch (for events_behind)


def events_behind(app: Flask) -> bool:
    """Whether events are pending on the entity keys of the calling thread's last :func:`run_batch` (the pool asks
    before it lingers: the next batch takes them at once, one per key, however long it waits)."""
    rows = getattr(_last_batch, "rows", ())
    if not rows:
        return False
    with app.app_context():
        return waiting_behind(db.session(), rows)


def batch_size(app: Flask) -> int:
    """``HATIDATA_INBOX_BATCH``: the events one applier transaction takes at most."""
    return int(app.config.get("HATIDATA_INBOX_BATCH") or DEFAULTS["HATIDATA_INBOX_BATCH"])


def fanout_chunk(app: Flask) -> int:
    """``HATIDATA_FANOUT_CHUNK``: the members one transaction recomputes at most."""
    return chunk_size(app.config.get("HATIDATA_FANOUT_CHUNK"))


def make_pool(app: Flask, threads: int) -> ApplierPool:
    """An applier pool of *threads* threads for *app* (not started)."""
    poll = float(app.config.get("HATIDATA_INBOX_POLL_INTERVAL") or DEFAULTS["HATIDATA_INBOX_POLL_INTERVAL"])
    linger = app.config.get("HATIDATA_INBOX_LINGER")
    give_way = app.config.get("HATIDATA_INBOX_GIVE_WAY")
    return ApplierPool(lambda revoking_only: run_batch(app, revoking_only), threads=threads, poll_interval=poll,
                       listen_dsn=listen_dsn(app), batch=batch_size(app),
                       linger=float(DEFAULTS["HATIDATA_INBOX_LINGER"] if linger is None else linger),
                       behind=lambda: events_behind(app), gauge=app.extensions.get(GAUGE),
                       give_way=float(DEFAULTS["HATIDATA_INBOX_GIVE_WAY"] if give_way is None else give_way),
                       on_give_way=metrics.inbox_gave_way)


def init_app(app: Flask) -> None:
    """Give *app* its applier pool, started on the first request (when any threads are configured)."""
    threads = applier_threads(app)
    if threads <= 0:
        return
    gauge = app.extensions[GAUGE] = RequestGauge()  # a separate `inbox work` process has none: no requests
    app.wsgi_app = CountRequests(app.wsgi_app, gauge)  # type: ignore[method-assign]
    pool = make_pool(app, threads)
    app.extensions[EXTENSION] = pool

    @app.before_request
    def _start_appliers() -> None:
        if not pool.running:
            pool.start()


def start(app: Any) -> None:
    """Start *app*'s appliers now if it has any (gunicorn's ``post_worker_init`` calls this)."""
    pool = getattr(app, "extensions", {}).get(EXTENSION)
    if pool is not None:
        pool.start()


def stop(app: Any) -> None:
    """Stop *app*'s appliers (a batch in progress finishes)."""
    pool = getattr(app, "extensions", {}).get(EXTENSION)
    if pool is not None:
        pool.stop()


def wake(app: Flask, revoking: bool = True) -> None:
    """An event was stored: wake this process's appliers (its revoking thread only if *revoking*: the event may take
    access away). Other processes' appliers are woken by ``NOTIFY`` when this one runs none (:func:`wakes_itself`),
    else they poll."""
    pool = app.extensions.get(EXTENSION)
    if pool is not None:
        pool.wake(revoking)


def wakes_itself(app: Flask) -> bool:
    """Whether this process runs appliers (started) that :func:`wake` wakes: its webhooks then store events
    without a ``NOTIFY`` (``services.inbox.store``). One per event woke every listening process and cost the
    database a signal to each; their appliers take such an event at their next poll if this one's are busy."""
    pool = app.extensions.get(EXTENSION)
    return pool is not None and pool.running


def acknowledged(app: Flask, payload: dict[str, Any], cause: Cause) -> None:
    """A webhook stored *payload* for the appliers: an event that takes access away from one person (a deactivated
    or deleted directory user, a removed group member, a deactivated membership, a revoked session) is applied now,
    in this request, after that person's older pending events
    (:func:`~hatidata_auth.services.inbox_worker.apply_entity_now`), so that deprovisioning never waits behind a
    backlog. Events that take access away from many (a group, directory, connection or organization: work that
    grows with its members) are claimed first by the appliers but never applied in the request. Every other
    event is left to the appliers, which are woken.

    The event is stored (committed) before this runs: a failure here is logged and left to the appliers, never
    turned into an error answer (WorkOS would deliver again what is already kept).

    Deprovisioning threads (a person's event is not announced to them when stored): settled here, the event leaves
    them nothing to take (its WorkOS revocation job is the batch appliers'), so none is woken, unless it queued
    work that takes access away (a rename's fan-out): then this process's is. Left pending, it is announced to
    every process's, and this process's is woken. Each needless wake cost an empty claim."""
    key = entity_key(payload)
    revoking = revokes_access(str(payload["event"]), payload)
    if not (revoking and about_one_person(key)):
        wake(app, revoking)
        return
    settled = apply_now(app, str(payload["id"]), key, cause)
    wake(app, not settled or queued_revoking_job(db.session()))
    if not settled:
        announce_revoking(app)


@event.listens_for(FlaskAppSession, "after_commit")
def _wake_for_work_taking_access_away(session: Session) -> None:
    """A commit that queued work taking access away (a fan-out job: ``fanout_jobs.insert_job`` with ``revokes``)
    wakes this process's deprovisioning thread, whoever wrote it (an admin's mapping edit, an applier's batch, a
    webhook's request, ``hatidata inbox work``'s pool). On PostgreSQL the job's ``NOTIFY`` does so for every process
    and nothing is done here; on SQLite no ``NOTIFY`` exists and the thread waited for its poll
    (``HATIDATA_INBOX_POLL_INTERVAL``, 1 s). A job queued in a savepoint rolled back since still counts (one
    needless wake: an empty claim)."""
    if session.in_nested_transaction() or not session.info.get(QUEUED_REVOKING) or not has_app_context():
        return
    if session.get_bind().dialect.name == "postgresql":
        return
    session.info.pop(QUEUED_REVOKING, None)
    wake(current_app, revoking=True)


@event.listens_for(FlaskAppSession, "after_rollback")
def _forget_work_rolled_back(session: Session) -> None:
    # The jobs went with the transaction: the next commit must not wake for them (nor a webhook's request read it).
    if not session.in_nested_transaction():
        session.info.pop(QUEUED_REVOKING, None)


def announce_revoking(app: Flask) -> None:
    """``NOTIFY`` every process's deprovisioning thread (PostgreSQL; nothing on SQLite), on a connection of its own
    (the request's may be in a failed transaction). A failure is logged: the poll is the fallback."""
    engine = db.engine
    if engine.dialect.name != "postgresql":
        return
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(select(func.pg_notify(INBOX_CHANNEL, REVOKING_NOTE)))
    except SQLAlchemyError:
        log.warning("announcing a pending deprovisioning failed; the appliers' poll will find it", exc_info=True)


SETTLED = frozenset({"applied", "ignored", "duplicate", "failed"})
"""Outcomes of an event that leave nothing pending (``received``: a transient failure, retried later)."""


def apply_now(app: Flask, event_id: str, key: str, cause: Cause) -> bool:
    """Apply the stored (committed) event or job *event_id* of entity *key* in this request, after the key's older
    pending events (:func:`~hatidata_auth.services.inbox_worker.apply_entity_now`); whether it is settled now
    (:data:`SETTLED`). A failure (the database's, the shared cache's) is logged and the event left to the appliers
    (``False``), never turned into an error answer (what it applies is committed already)."""
    client = app.extensions["hatidata_workos"].client
    try:
        result = apply_entity_now(db.session(), client, event_id, key, cause=cause, fanout_chunk=fanout_chunk(app),
                                  tracer=tracing.tracer(app))
    except Exception:  # apply_batch rolled back: the stored event waits for the appliers
        log.warning("applying %s at once failed; the appliers will apply it", event_id, exc_info=True)
        return False
    return result is not None and result.status in SETTLED
