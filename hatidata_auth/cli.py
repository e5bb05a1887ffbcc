"""Command-line interface: ``flask --app wsgi hatidata …`` or the ``hatidata-auth`` console script."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import FlaskGroup, with_appcontext

from .context import Actor
from .extensions import db


@click.group("hatidata")
def hatidata_cli() -> None:
    """HatiData Auth administration."""


@hatidata_cli.command("sync-organizations")
@with_appcontext
def sync_organizations() -> None:
    """Mirror every WorkOS organization (and its connection and directory) into a tenant; idempotent."""
    from .services.organizations import sync_from_workos

    client = current_app.extensions["hatidata_workos"].client
    result = sync_from_workos(db.session(), client, Actor.system("cli"))
    click.echo(f"organizations: {len(result.created)} created, {len(result.updated)} updated, "
               f"{len(result.unchanged)} unchanged")


@hatidata_cli.command("seed-demo")
@with_appcontext
def seed_demo() -> None:
    """Load the demo organizations from WorkOS (the emulator's demo seed); safe to run again."""
    from .services.organizations import sync_from_workos

    client = current_app.extensions["hatidata_workos"].client
    result = sync_from_workos(db.session(), client, Actor.system("seed"))
    click.echo(f"demo data: {len(result.created)} organizations created, {len(result.updated)} updated, "
               f"{len(result.unchanged)} already up to date")


@hatidata_cli.command("list-organizations")
@with_appcontext
def list_organizations() -> None:
    """List the tenants."""
    from sqlalchemy import select

    from .models import Organization

    for org in db.session.scalars(select(Organization).order_by(Organization.name)):
        click.echo(f"{org.id}  {org.workos_organization_id or '-':32}  {org.name}  "
                   f"[{', '.join(org.domains)}]  {org.status}")


def main() -> None:
    """Entry point of the ``hatidata-auth`` console script."""
    from .app import create_app

    cli = FlaskGroup(create_app=lambda: create_app())
    cli.main(prog_name="hatidata-auth")
