"""The ``hatidata sso`` commands: SSO connection upkeep run by cron (certificate expiry forecasts)."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext

from .extensions import db


@click.group("sso")
def sso_cli() -> None:
    """SSO connections (certificate expiry forecasts)."""


@sso_cli.command("forecast-certificates")
@with_appcontext
def forecast_certificates() -> None:
    """Open, move on or resolve the certificate-expiry alerts (90, 30 and 7 days ahead, then "expired") of every
    organization with an SSO connection, from the signing certificates WorkOS holds; audited. Run it daily.

    One organization's failure (WorkOS refuses or fails on its connection) is one stderr line naming it, its
    alerts untouched; the others are still forecast, and the command exits 1 at the end. WorkOS not answering at
    all stops the run with the shared one-line error (exit 1)."""
    from sqlalchemy import select

    from .causes import Cause
    from .models import Organization, utcnow
    from .services.cert_forecasts import forecast
    from .workos import WorkOSFailure, WorkOSNotFound

    client = current_app.extensions["hatidata_workos"].client
    cause = Cause.system("certificate expiry forecast", name="cli")
    session = db.session()
    ids = list(session.scalars(select(Organization.id).where(Organization.connection_id.is_not(None))
                               .order_by(Organization.id)))
    raised = resolved = 0
    failed: list[str] = []
    for org_id in ids:
        org = session.get(Organization, org_id)
        if org is None:
            continue
        connection_id = org.connection_id
        try:
            run = forecast(session, client, org, cause, utcnow())
        except WorkOSNotFound:
            session.rollback()
            click.echo(f"{org_id}: connection {connection_id} not found at WorkOS; skipped")
            continue
        except WorkOSFailure as exc:
            session.rollback()
            if exc.http_status is None:  # no answer at all: every organization would fail the same way
                raise
            failed.append(org_id)
            click.echo(f"{org_id}: connection {connection_id}: WorkOS failed ({exc.reason}: {exc.message}); not "
                       "forecast", err=True)
            continue
        session.commit()
        raised, resolved = raised + len(run.raised), resolved + len(run.resolved)
    click.echo(f"{len(ids)} organization(s) checked: {raised} forecast(s) raised, {resolved} resolved"
               + (f", {len(failed)} failed" if failed else ""))
    if failed:
        raise click.exceptions.Exit(1)
