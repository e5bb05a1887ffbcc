"""The ``hatidata inbox`` commands: the WorkOS event inbox (failed events, replay, retention, separate appliers)."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext

from .extensions import db


@click.group("inbox")
def inbox_cli() -> None:
    """The inbox of WorkOS events (webhooks and Events API)."""


@inbox_cli.command("list-failed")
@click.option("--limit", default=100, show_default=True)
@with_appcontext
def inbox_list_failed(limit: int) -> None:
    """List events that failed to apply, oldest first."""
    from .services import inbox_replay

    rows = inbox_replay.list_failed(db.session(), limit)
    for row in rows:
        error = (row.last_error or "").splitlines()[0] if row.last_error else ""
        click.echo(f"{row.event_id}  {row.event_type:40}  attempts={row.attempts}  {row.received_at:%Y-%m-%d %H:%M:%S}"
                   f"  {error}")
    click.echo(f"{len(rows)} failed event(s)")


@inbox_cli.command("replay")
@click.argument("event_id", required=False)
@click.option("--all-failed", is_flag=True, help="Replay every failed event.")
@with_appcontext
def inbox_replay(event_id: str | None, all_failed: bool) -> None:
    """Apply a stored event again (EVENT_ID), or every failed one (--all-failed)."""
    from .services import inbox_replay as replaying

    if bool(event_id) == all_failed:
        raise click.UsageError("give exactly one of EVENT_ID or --all-failed")
    client = current_app.extensions["hatidata_workos"].client
    session = db.session()
    try:
        results = (replaying.replay_failed(session, client) if all_failed
                   else [replaying.replay(session, client, event_id or "")])
    except LookupError as exc:
        raise click.ClickException(str(exc)) from exc
    for result in results:
        click.echo(f"{result.event_id}  {result.event_type:40}  {result.status}  {result.error or ''}")
    if any(r.status == "failed" for r in results):
        raise click.exceptions.Exit(1)


@inbox_cli.command("expire")
@click.option("--older-than-days", type=click.IntRange(min=1),
              help="Retention in days (default: HATIDATA_INBOX_RETENTION_DAYS).")
@with_appcontext
def inbox_expire(older_than_days: int | None) -> None:
    """Delete applied, ignored and duplicate events older than the retention (never failed ones); audited."""
    from .causes import Cause
    from .config import DEFAULTS
    from .services.inbox_retention import InvalidRetention, expire

    days = older_than_days or int(current_app.config.get("HATIDATA_INBOX_RETENTION_DAYS",
                                                         DEFAULTS["HATIDATA_INBOX_RETENTION_DAYS"]))
    try:
        report = expire(db.session(), retention_days=days, cause=Cause.system("inbox retention", name="cli"))
    except InvalidRetention as exc:
        raise click.ClickException(f"{exc.message} (HATIDATA_INBOX_RETENTION_DAYS={days})") from exc
    click.echo(f"{report.deleted} event(s) settled before {report.cutoff:%Y-%m-%d %H:%M:%S} UTC deleted "
               f"({report.retention_days} days' retention, {report.chunks} chunk(s))")


@inbox_cli.command("work")
@click.option("--threads", type=click.IntRange(min=1), help="Applier threads (default: 2 on PostgreSQL, 1 on SQLite).")
@click.option("--drain", is_flag=True, help="Apply every pending event, then exit.")
@with_appcontext
def inbox_work(threads: int | None, drain: bool) -> None:
    """Apply stored events until stopped (SIGTERM or Ctrl-C), for deployments with separate applier workers."""
    import signal
    import threading

    from . import inbox_runtime, tracing
    from .services import inbox_worker

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if drain:
        client = app.extensions["hatidata_workos"].client
        applied = inbox_worker.drain(db.session(), client, limit=int(app.config["HATIDATA_INBOX_BATCH"]),
                                     fanout_chunk=inbox_runtime.fanout_chunk(app), tracer=tracing.tracer(app))
        click.echo(f"{applied} event(s) claimed; {inbox_worker.pending(db.session())} pending")
        return
    pool = inbox_runtime.make_pool(app, threads or inbox_runtime.default_threads(app))
    app.extensions[inbox_runtime.EXTENSION] = pool  # what its batches' commits wake (inbox_runtime.wake)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    pool.start()
    click.echo(f"inbox appliers running ({threads or inbox_runtime.default_threads(app)} threads); SIGTERM stops")
    while not stopping.wait(1.0):
        pass
    pool.stop()
