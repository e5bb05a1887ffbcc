"""What every CLI command shares: WorkOS failures as one clear line (what failed, where, what to export) and an
exit code of 1, never a traceback.

Used by the ``hatidata`` group (``flask --app wsgi hatidata …``) and by the ``hatidata-auth`` console script,
which offers the same commands at its top level (see :mod:`hatidata_auth.__main__`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from flask.cli import ScriptInfo

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


def invoke_guarded(invoke: Callable[[click.Context], Any], ctx: click.Context) -> Any:
    """Run a group's *invoke*; a WorkOS failure (the SDK's, translated, or ours) becomes one line and exit 1."""
    try:
        with translate_errors():
            return invoke(ctx)
    except WorkOSFailure as exc:
        raise click.ClickException(workos_failure_message(exc, workos_base_url(ctx))) from None


class WorkOSAwareGroup(click.Group):
    """A command group whose commands turn a WorkOS failure into one line and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the subcommand through :func:`invoke_guarded`."""
        return invoke_guarded(super().invoke, ctx)
