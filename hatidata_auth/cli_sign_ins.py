"""The ``hatidata sign-ins`` commands: the SSO sign-in attempts kept for organizations' admins."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext

from .extensions import db


@click.group("sign-ins")
def sign_ins_cli() -> None:
    """SSO sign-in attempts (the admins' sign-ins page)."""


@sign_ins_cli.command("expire")
@click.option("--older-than-days", type=click.IntRange(min=1),
              help="Retention in days (default: HATIDATA_SIGN_IN_ATTEMPTS_RETENTION_DAYS).")
@with_appcontext
def sign_ins_expire(older_than_days: int | None) -> None:
    """Delete sign-in attempts older than the retention, in every organization; audited."""
    from .causes import Cause
    from .config import DEFAULTS
    from .services.sign_in_retention import InvalidRetention, expire

    key = "HATIDATA_SIGN_IN_ATTEMPTS_RETENTION_DAYS"
    days = older_than_days or int(current_app.config.get(key, DEFAULTS[key]))
    try:
        deleted = expire(db.session(), retention_days=days, cause=Cause.system("sign-in attempts retention",
                                                                               name="cli"))
    except InvalidRetention as exc:
        raise click.ClickException(f"{exc.message} ({key}={days})") from exc
    click.echo(f"{deleted} sign-in attempt(s) older than {days} days deleted")
