"""What every CLI command shares: a missing dependency as one clear line (what failed, where, what to do) and an
exit code of 1, never a traceback. The dependencies: WorkOS (unreachable or refusing), the database (unreachable,
or not migrated: run ``flask --app wsgi db upgrade``) and Redis when ``REDIS_URL`` is set (unreachable).

Used by the ``hatidata`` group (``flask --app wsgi hatidata …``) and by the ``hatidata-auth`` console script,
which offers the same commands at its top level (see :mod:`hatidata_auth.__main__`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from flask.cli import ScriptInfo
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError

from .errors import is_connection_error
from .workos import WorkOSFailure, WorkOSNotFound, WorkOSRejected, WorkOSUnavailable, translate_errors

EXPORT_HINT = ("export WORKOS_BASE_URL=<the WorkOS API URL> (the emulator `make run` started: "
               "http://127.0.0.1:<its port>, or export WORKOS_EMULATOR_PORT=<its port>)")


def workos_base_url(ctx: click.Context) -> str:
    """The WorkOS API the command's app talks to (the SDK's default when none is configured)."""
    info = ctx.find_object(ScriptInfo)
    config = info.load_app().config if info is not None else {}
    return str(config.get("WORKOS_BASE_URL") or "https://api.workos.com")


def unreachable_message(base_url: str, reason: str) -> str:
    """The one line a command prints when WorkOS cannot be reached at *base_url*."""
    return f"WorkOS is unreachable at {base_url} ({reason}); is it running? {EXPORT_HINT}."


def workos_failure_message(exc: WorkOSFailure, base_url: str) -> str:
    """The one line for any :class:`WorkOSFailure` from the WorkOS API at *base_url*."""
    if isinstance(exc, WorkOSUnavailable):
        return unreachable_message(base_url, exc.reason)
    if isinstance(exc, WorkOSNotFound | WorkOSRejected):
        return f"WorkOS at {base_url} refused: {exc.message} ({exc.reason})."
    return (f"the WorkOS client could not be used ({exc.message}); check WORKOS_API_KEY, WORKOS_CLIENT_ID and "
            f"WORKOS_BASE_URL ({base_url}).")


UPGRADE_HINT = "run `flask --app wsgi db upgrade` (or `hatidata-auth db upgrade`)"
# SQLSTATEs of a statement naming a table or column the schema lacks (PostgreSQL's undefined_table/_column).
_MISSING_SCHEMA_STATES = frozenset({"42P01", "42703"})
_MISSING_SCHEMA_SQLITE = ("no such table", "no such column", "has no column named")


def _config(ctx: click.Context) -> dict[str, Any]:
    info = ctx.find_object(ScriptInfo)
    try:
        return dict(info.load_app().config) if info is not None else {}
    except Exception:  # noqa: BLE001 - only naming a URL in the message; the original error is the one reported
        return {}


def _safe_url(url: Any) -> str:
    """*url* without its password (secrets are never printed)."""
    try:
        return make_url(str(url)).render_as_string(hide_password=True)
    except ArgumentError:
        return "<the configured URL>"


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def is_missing_schema(exc: BaseException) -> bool:
    """Whether *exc* is a statement on a table or column the database lacks: the schema is not migrated."""
    if not isinstance(exc, DBAPIError):
        return False
    if getattr(exc.orig, "sqlstate", None) in _MISSING_SCHEMA_STATES:
        return True
    return isinstance(exc, OperationalError) and str(exc.orig).lower().startswith(_MISSING_SCHEMA_SQLITE)


def dependency_message(exc: BaseException, ctx: click.Context) -> str | None:
    """The one line for a missing dependency behind *exc* (``None``: not one, a fault to show as it is)."""
    if isinstance(exc, WorkOSFailure):
        return workos_failure_message(exc, workos_base_url(ctx))
    config = _config(ctx)
    if is_missing_schema(exc):
        database = _safe_url(config.get("SQLALCHEMY_DATABASE_URI"))
        return (f"the database at {database} is not migrated ({_first_line(getattr(exc, 'orig', exc))}); "
                f"{UPGRADE_HINT}.")
    if not is_connection_error(exc):
        return None
    if isinstance(exc, DBAPIError):
        database = _safe_url(config.get("SQLALCHEMY_DATABASE_URI"))
        return (f"the database at {database} is unreachable ({_first_line(exc.orig or exc)}); is it running? "
                "export DATABASE_URL=<its URL>.")
    return (f"Redis is unreachable at {_safe_url(config.get('REDIS_URL'))} ({_first_line(exc)}); is it running? "
            "export REDIS_URL=<its URL>, or unset it to run without Redis.")


def invoke_guarded(invoke: Callable[[click.Context], Any], ctx: click.Context) -> Any:
    """Run a group's *invoke*; a missing dependency (WorkOS failing, the SDK's error translated or ours; the
    database unreachable or not migrated; Redis unreachable) becomes one line and exit 1. ``db`` commands are
    left alone: a migration's own error is the one to read."""
    try:
        with translate_errors():
            return invoke(ctx)
    except _guarded_errors() as exc:
        message = None if ctx.invoked_subcommand == "db" else dependency_message(exc, ctx)
        if message is None:
            raise
        raise click.ClickException(message) from None


def _guarded_errors() -> tuple[type[Exception], ...]:
    """What may be a missing dependency: WorkOS's failures, the database's errors, Redis's connection errors."""
    guarded: tuple[type[Exception], ...] = (WorkOSFailure, DBAPIError)
    try:
        import redis
    except ImportError:  # pragma: no cover - redis is a dependency
        return guarded
    return (*guarded, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


class WorkOSAwareGroup(click.Group):
    """A command group whose commands turn a missing dependency into one line and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the subcommand through :func:`invoke_guarded`."""
        return invoke_guarded(super().invoke, ctx)
