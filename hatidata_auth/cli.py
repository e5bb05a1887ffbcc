"""Command-line interface: ``flask --app wsgi hatidata …`` or the ``hatidata-auth`` console script."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext

from .causes import Actor
from .cli_audit import verify_stream_command, work_command
from .cli_inbox import inbox_cli
from .cli_sign_ins import sign_ins_cli
from .cli_sso import sso_cli
from .cli_support import WorkOSAwareGroup
from .extensions import db
from .workos import WorkOSClient


@click.group("hatidata", cls=WorkOSAwareGroup)
def hatidata_cli() -> None:
    """HatiData Auth administration (also the top-level commands of the ``hatidata-auth`` console script)."""


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
    _seed_demo_directories(client)


def _seed_demo_directories(client: WorkOSClient) -> None:
    """Full directory resync of every demo organization (plus default group mappings once); idempotent."""
    from .idp import get_registry
    from .services.reconcile import ensure_demo_mappings, resync_all

    session = db.session()
    plugins = get_registry(current_app)
    for report in resync_all(session, client, actor=Actor.system("seed")):
        if ensure_demo_mappings(session, client, organization_id=report.organization_id,
                                actor=Actor.system("seed"), plugins=plugins):
            session.commit()
        click.echo(f"directory {report.directory_id}: {report.users_seen} users, {report.groups_seen} groups, "
                   f"{report.differences} differences fixed")


@hatidata_cli.command("list-organizations")
@with_appcontext
def list_organizations() -> None:
    """List the tenants."""
    from sqlalchemy import select

    from .models import Organization

    for org in db.session.scalars(select(Organization).order_by(Organization.name)):
        click.echo(f"{org.id}  {org.workos_organization_id or '-':32}  {org.name}  "
                   f"[{', '.join(org.domains)}]  {org.status}")


@hatidata_cli.group("sync")
def sync_cli() -> None:
    """Reconciliation with WorkOS (Events API poller, full directory resync)."""


@sync_cli.command("poll")
@click.option("--max-events", default=100_000, show_default=True)
@with_appcontext
def sync_poll(max_events: int) -> None:
    """Apply WorkOS events after the persisted cursor (ascending order)."""
    from .services.events_poller import poll_events

    client = current_app.extensions["hatidata_workos"].client
    result = poll_events(db.session(), client, max_events=max_events)
    click.echo(f"events: {result.processed} processed, {result.applied} applied, {result.duplicates} duplicates, "
               f"{result.ignored} ignored, {result.failed} failed; cursor {result.cursor}")


@sync_cli.command("resync")
@click.option("--organization", "organizations", multiple=True,
              help="Our organization id, WorkOS organization id or domain (repeatable; default: all).")
@with_appcontext
def sync_resync(organizations: tuple[str, ...]) -> None:
    """Full resync of directories from the WorkOS list endpoints; reports the differences fixed."""
    from sqlalchemy import or_, select

    from .models import Organization
    from .services.reconcile import full_resync, resync_all

    client = current_app.extensions["hatidata_workos"].client
    session = db.session()
    if organizations:
        reports = []
        for ref in organizations:
            org = next((o for o in session.scalars(select(Organization).where(or_(
                Organization.id == ref, Organization.workos_organization_id == ref))) ), None)
            if org is None:
                org = next((o for o in session.scalars(select(Organization)) if ref in (o.domains or [])), None)
            if org is None:
                raise click.ClickException(f"no organization {ref!r}")
            reports.append(full_resync(session, client, organization_id=org.id, actor=Actor.system("cli")))
    else:
        reports = resync_all(session, client, actor=Actor.system("cli"))
    for report in reports:
        click.echo(f"{report.organization_id} directory {report.directory_id}: {report.users_seen} users, "
                   f"{report.groups_seen} groups; {report.differences} differences fixed "
                   f"(users +{report.users_created} ~{report.users_updated} -{report.users_deleted}, "
                   f"groups +{report.groups_created} ~{report.groups_updated} -{report.groups_deleted}, "
                   f"memberships +{report.memberships_added} -{report.memberships_removed}, "
                   f"access repaired {report.access_repaired}) in {report.seconds}s")
        for example in report.examples:
            click.echo(f"  - {example}")


@hatidata_cli.command("new-idp-plugin")
@click.argument("name")
@click.option("--display-name", required=True, help='Shown to admins, e.g. "JumpCloud".')
@click.option("--connection-type", default="GenericSAML", show_default=True,
              help="The WorkOS SAML connection type (e.g. OktaSAML).")
@click.option("--dest", type=click.Path(file_okay=False), default=".", show_default=True)
def new_idp_plugin(name: str, display_name: str, connection_type: str, dest: str) -> None:
    """Create a new IdP plugin package (entry point, plugin class, guide template, contract test)."""
    from pathlib import Path

    from .idp import scaffold_plugin

    try:
        files = scaffold_plugin(Path(dest), name, display_name, connection_type)
    except (ValueError, FileExistsError) as exc:
        raise click.ClickException(str(exc)) from exc
    for path in files:
        click.echo(f"created {path}")
    click.echo("next: pip install -e <package> and run its tests (the contract suite loads as a pytest plugin)")


@hatidata_cli.command("list-idp-plugins")
@with_appcontext
def list_idp_plugins() -> None:
    """List the loaded IdP plugins."""
    from .idp import get_registry

    for plugin in get_registry(current_app):
        click.echo(f"{plugin.name:12} {plugin.display_name:24} {', '.join(plugin.connection_types.values())}  "
                   f"directory: {plugin.directory_type or '-'}")


# --- tenants, first admins, secrets (issue #6) ---------------------------------------------------------------


def _organization_ref(ref: str) -> str:
    from .services.tenant_admin import find_organization

    org = find_organization(db.session(), ref)
    if org is None:
        raise click.ClickException(f"no organization {ref!r} (give our id, the WorkOS id or a domain)")
    return org.id


@hatidata_cli.command("create-organization")
@click.argument("name")
@click.option("--domain", "domains", multiple=True, help="A verified domain of the organization (repeatable).")
@with_appcontext
def create_organization(name: str, domains: tuple[str, ...]) -> None:
    """Create an organization at WorkOS and its tenant here."""
    from .errors import AppError
    from .services.tenant_admin import create_organization as create

    client = current_app.extensions["hatidata_workos"].client
    try:
        org = create(db.session(), client, name=name, domains=list(domains), actor=Actor.system("cli"))
    except AppError as exc:
        raise click.ClickException(exc.message) from exc
    db.session.commit()
    click.echo(f"created {org.id}  {org.workos_organization_id}  {org.name}  [{', '.join(org.domains)}]")


@hatidata_cli.command("grant-admin")
@click.argument("organization")
@click.argument("email")
@with_appcontext
def grant_admin(organization: str, email: str) -> None:
    """Make EMAIL an admin of ORGANIZATION (our id, WorkOS id or domain); e.g. the first admin."""
    from .errors import AppError
    from .services.domains import email_domain, foreign_owner
    from .services.tenant_admin import get_organization
    from .services.tenant_admin import grant_admin as grant
    from .services.workos_admin_grant import ensure_admin_at_workos

    organization_id = _organization_ref(organization)
    if "@" not in email:  # before WorkOS is asked (the grant checks it again)
        raise click.ClickException("Not an email address.")
    try:
        org = get_organization(db.session(), organization_id)  # refused before WorkOS is asked: a deleted one
    except AppError as exc:
        raise click.ClickException(exc.message) from exc
    at = None
    if org.workos_organization_id:  # WorkOS first: a person it does not know cannot sign in
        at = ensure_admin_at_workos(current_app.extensions["hatidata_workos"].client,
                                    workos_organization_id=org.workos_organization_id, email=email.strip().lower())
        click.echo(f"WorkOS: user {at.workos_user_id} {'created' if at.user_created else 'found'}, "
                   f"admin membership {at.membership.replace('_', ' ')}")
        if at.pending:
            click.echo(f"note: {email}'s WorkOS membership is an invitation not accepted yet: they are an admin once "
                       "they accept it (WorkOS then tells us)", err=True)
    try:
        membership = grant(db.session(), organization_id=organization_id, email=email, actor=Actor.system("cli"),
                           workos_version=at.version if at else None)
    except AppError as exc:
        raise click.ClickException(exc.message) from exc
    db.session.commit()
    click.echo(f"{email} is an admin of {membership.organization_id} (membership {membership.id})")
    other = foreign_owner(db.session(), membership.organization_id, email)
    if other is not None:  # an operator's typo would give one tenant's admin to another tenant's person
        click.echo(f"warning: {email_domain(email)} is a domain organization {other} verified: {email} is their "
                   f"person, now also an admin of {membership.organization_id}", err=True)
    if membership.source == "directory":
        click.echo(f"warning: the organization's directory provides {email}: its next event for them, resync or "
                   "mapping change sets the role their groups map to (the overwrite rule, docs/directory-sync.md). "
                   "To keep it, map one of their groups to admin.", err=True)


@hatidata_cli.command("rotate-secret")
@click.argument("which", type=click.Choice(["cookie-key", "secret-key", "webhook-secret"]))
@click.option("--endpoint-url", help="webhook-secret: the app's webhook URL registered with WorkOS.")
@click.option("--register/--no-register", default=True, show_default=True,
              help="webhook-secret: register the new secret with the emulator (not possible at WorkOS itself).")
@with_appcontext
def rotate_secret(which: str, endpoint_url: str | None, register: bool) -> None:
    """Generate a replacement secret and print how to roll it out (the app reads secrets from its settings)."""
    import secrets

    from cryptography.fernet import Fernet

    if which == "cookie-key":
        click.echo(f"HATIDATA_COOKIE_KEY={Fernet.generate_key().decode()}")
        click.echo("Set it on every worker and restart: cookies sealed with the old key stop unsealing, so every "
                   "browser signs in again (their WorkOS sessions are unaffected).")
        return
    if which == "secret-key":
        click.echo(f"SECRET_KEY={secrets.token_urlsafe(48)}")
        click.echo("Set it on every worker and restart: CSRF tokens and pending login states are invalidated.")
        return
    from .services.tenant_admin import new_webhook_secret

    secret = new_webhook_secret()
    base_url = str(current_app.config.get("WORKOS_BASE_URL") or "")
    emulated = bool(base_url) and "api.workos.com" not in base_url
    if emulated and register:
        from .cli_webhook_secret import choose_endpoint, register_with_emulator

        endpoint = choose_endpoint(current_app.extensions["hatidata_workos"].client, named=endpoint_url,
                                   public_url=str(current_app.config.get("HATIDATA_PUBLIC_URL") or ""))
        register_with_emulator(base_url, str(current_app.config.get("WORKOS_API_KEY")), endpoint, secret)
        url = endpoint.url
        click.echo(f"registered the new secret with the emulator for {url}")
    else:
        click.echo("WorkOS generates endpoint secrets itself: in the WorkOS dashboard, roll the endpoint's secret "
                   "(Webhooks > endpoint > Rotate secret) and use the value it shows instead of this one.")
    click.echo(f"WORKOS_WEBHOOK_SECRET={secret}")
    click.echo("Set it on every worker and restart; deliveries signed with the other secret in between fail "
               "and are retried by WorkOS (or recovered by `hatidata sync poll`).")


@hatidata_cli.group("audit")
def audit_cli() -> None:
    """The tamper-evident audit log."""


@audit_cli.command("verify")
@click.option("--organization", "organizations", multiple=True,
              help="Our organization id, WorkOS id or domain (repeatable; default: every chain).")
@click.option("--full", is_flag=True, help="Walk every chain from its first event, not its newest trusted checkpoint.")
@with_appcontext
def audit_verify(organizations: tuple[str, ...], full: bool) -> None:
    """Verify hash chains (from the newest trusted signed checkpoint unless --full); names the first broken link
    and exits 1 when one is broken."""
    from .services.audit_queries import verify_all

    owners = [_organization_ref(ref) for ref in organizations] if organizations else None
    reports = verify_all(db.session(), owners, full=full, signer=_audit_signer(),
                         previous=current_app.config.get("HATIDATA_AUDIT_TRUSTED_KEYS"))
    broken = 0
    for report in reports:
        name = report.organization_id or "(no organization)"
        if report.ok:
            since = f" after checkpoint #{report.from_seq}" if report.from_seq else ""
            click.echo(f"{name}: ok, {report.checked} events{since}")
        else:
            broken += 1
            click.echo(f"{name}: BROKEN at event #{report.first_broken_seq}: {report.problem} "
                       f"({report.checked} events verified before it)")
    click.echo(f"{len(reports)} chain(s) verified, {broken} broken")
    if broken:
        raise click.exceptions.Exit(1)


def _audit_signer() -> object:
    from . import audit_runtime

    return audit_runtime.signer(current_app)


def _parse_time(value: str | None, option: str) -> object:
    from datetime import UTC, datetime

    if not value:
        return None
    from .inputs import utc_instant

    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return utc_instant(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))
    except ValueError as exc:
        raise click.BadParameter(f"an ISO 8601 date or timestamp ({exc})", param_hint=option) from exc


@audit_cli.command("export")
@click.option("--organization", required=True, help="Our organization id, WorkOS id or domain.")
@click.option("--since", help="From this time (inclusive, ISO 8601; naive means UTC).")
@click.option("--until", help="Before this time (exclusive).")
@click.option("--format", "fmt", type=click.Choice(["ndjson", "csv"]), default="ndjson", show_default=True)
@click.option("--output", "-o", type=click.File("w", encoding="utf-8"), default="-", show_default=True)
@with_appcontext
def audit_export(organization: str, since: str | None, until: str | None, fmt: str, output: object) -> None:
    """Stream an organization's events in a time range as NDJSON or CSV (chain order)."""
    from typing import Any, cast

    from .services.audit_queries import EXPORT_FORMATS, AuditFilter

    flt = AuditFilter(since=cast(Any, _parse_time(since, "--since")), until=cast(Any, _parse_time(until, "--until")))
    writer, _ = EXPORT_FORMATS[fmt]
    out = cast(Any, output)
    for chunk in writer(db.session(), _organization_ref(organization), flt):
        out.write(chunk)
    out.flush()


audit_cli.add_command(verify_stream_command)
audit_cli.add_command(work_command)
hatidata_cli.add_command(inbox_cli)
hatidata_cli.add_command(sign_ins_cli)
hatidata_cli.add_command(sso_cli)
