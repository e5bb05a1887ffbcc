"""Mirroring WorkOS organizations, with their SSO connection and directory, into our tenants.

:func:`mirror_organization` is the one way a WorkOS organization becomes (or updates) our tenant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from ..causes import Actor, Cause
from ..models import Organization, WizardProgress, utcnow
from ..workos import WorkOSClient, WorkOSNotFound, translate_errors
from . import audit
from .domains import domain_states, verified_owners


@dataclass(frozen=True, slots=True)
class SyncResult:
    """What a sync from WorkOS created and changed."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Mirrored:
    """One mirrored organization: our ``organization_id``, WorkOS's ``workos_organization_id``, its ``name``
    and the ``outcome`` (``created``, ``updated`` or ``unchanged``)."""

    organization_id: str
    workos_organization_id: str
    name: str
    outcome: str


def _as_dt(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _enum_value(value: Any) -> str | None:
    return None if value is None else str(getattr(value, "value", value))


# The progress-data key listing every connection a setup wizard created, kept when the wizard is reset.
CREATED_CONNECTIONS = "created_connection_ids"


def wizard_connection_ids(session: Session, organization_id: str) -> set[str]:
    """Every connection a setup wizard of the organization created or holds, finished, unfinished or reset."""
    ids: set[str] = set()
    for data in session.scalars(select(WizardProgress.data).where(WizardProgress.organization_id == organization_id)):
        data = data or {}
        ids.update(str(i) for i in data.get(CREATED_CONNECTIONS) or [])
        if data.get("connection_id"):
            ids.add(str(data["connection_id"]))
    return ids


def may_adopt(current_connection_id: str | None, connection_id: str, state: str | None, ours: set[str]) -> bool:
    """Whether a connection WorkOS reports may become the organization's sign-in connection without our wizard.

    The rule (docs/plugins.md, "not used until tested"): only a wizard activation after a passed test sign-in
    through that connection (``sso_setup.activate``) makes a connection the sign-in connection, except that an
    organization with no connection at all (never had one; a deleted one still counts as one) adopts an *active*
    connection no wizard of ours created or holds (*ours*, :func:`wizard_connection_ids`): one set up outside
    this app, e.g. in the WorkOS dashboard, before the organization was mirrored or with no wizard run.
    """
    return current_connection_id is None and state == "active" and connection_id not in ours


def _connection_fields(session: Session, client: WorkOSClient, workos_org_id: str,
                       org: Organization | None) -> dict[str, Any]:
    """The sign-in connection's fields: the one we hold, refreshed from WorkOS (never replaced), or, with none,
    the oldest connection :func:`may_adopt` allows."""
    if org is not None and org.connection_id:
        try:
            with translate_errors():
                conn = client.sso.get_connection(org.connection_id)
        except WorkOSNotFound:
            return {"connection_state": "deleted"}
        return {"connection_type": _enum_value(conn.connection_type), "connection_state": _enum_value(conn.state)}
    ours = wizard_connection_ids(session, org.id) if org is not None else set()
    connections = client.sso.list_connections(organization_id=workos_org_id, limit=100, order="asc").data
    for conn in connections:
        if may_adopt(None, conn.id, _enum_value(conn.state), ours):
            return {"connection_id": conn.id, "connection_type": _enum_value(conn.connection_type),
                    "connection_state": _enum_value(conn.state)}
    return {}


def organization_fields(session: Session, client: WorkOSClient, workos_org: Any,
                        org: Organization | None) -> dict[str, Any]:
    """Read an organization's name, domains, sign-in connection (:func:`_connection_fields`) and first directory
    from WorkOS; *org* is our tenant for it, ``None`` when not mirrored yet."""
    fields: dict[str, Any] = {
        "name": workos_org.name,
        "domains": sorted(d.domain for d in workos_org.domains or []),
        "domain_states": domain_states(workos_org.domains),
        "workos_updated_at": _as_dt(workos_org.updated_at),
    }
    fields.update(_connection_fields(session, client, workos_org.id, org))
    directories = client.directory_sync.list_directories(organization_id=workos_org.id, limit=10, order="asc").data
    if directories:
        directory = directories[0]
        fields.update(directory_id=directory.id, directory_type=_enum_value(directory.type),
                      directory_state=_enum_value(directory.state))
    return fields


def _upsert(session: Session, workos_org_id: str, org: Organization | None, fields: dict[str, Any],
            actor: Actor) -> tuple[Organization, str]:
    if org is None:
        org = Organization(workos_organization_id=workos_org_id, **fields)
        session.add(org)
        session.flush()
        audit.record(session, action="organization.created", cause=Cause.by(actor), organization_id=org.id,
                     target_type="organization", target_id=org.id,
                     details={"workos_organization_id": workos_org_id, "name": org.name})
        return org, "created"
    changed = {k: v for k, v in fields.items() if getattr(org, k) != v and k != "workos_updated_at"}
    if not changed:
        return org, "unchanged"
    for key, value in fields.items():
        setattr(org, key, value)
    org.updated_at = utcnow()
    audit.record(session, action="organization.updated", cause=Cause.by(actor), organization_id=org.id,
                 target_type="organization", target_id=org.id,
                 details={"changed": sorted(changed)})
    return org, "updated"


@translate_errors()
def mirror_organization(session: Session, client: WorkOSClient, workos_organization: str | Any,
                        actor: Actor) -> Mirrored:
    """Create or update our tenant for one WorkOS organization (its id, read from WorkOS, or the SDK's
    ``Organization`` already read), with its sign-in connection and first directory; audited, flushed, not committed.

    Raises :class:`~hatidata_auth.workos.WorkOSNotFound` when WorkOS does not know the id, other
    :class:`~hatidata_auth.workos.WorkOSFailure` subclasses when WorkOS fails.
    """
    workos_org = (client.organizations.get_organization(workos_organization)
                  if isinstance(workos_organization, str) else workos_organization)
    org = session.scalar(select(Organization).where(Organization.workos_organization_id == workos_org.id))
    org, outcome = _upsert(session, workos_org.id, org, organization_fields(session, client, workos_org, org), actor)
    return Mirrored(org.id, workos_org.id, workos_org.name, outcome)


def ensure_organization(session: Session, client: WorkOSClient, workos_organization_id: str) -> Organization:
    """Our tenant for a WorkOS organization, mirrored from WorkOS on first sight."""
    org = session.scalar(select(Organization).where(Organization.workos_organization_id == workos_organization_id))
    if org is not None:
        return org
    mirrored = mirror_organization(session, client, workos_organization_id, Actor.system())
    org = session.get(Organization, mirrored.organization_id)
    assert org is not None
    return org


def find_organization(session: Session, value: str) -> Organization | None:
    """The tenant named by our id or by its WorkOS organization id."""
    return session.scalar(select(Organization).where(
        or_(Organization.id == value, Organization.workos_organization_id == value)))


def find_organization_for_email(session: Session, email: str) -> Organization | None:
    """Home-realm discovery: the active organization that alone verified the email's domain (or a parent of it).

    Pending or failed domains route nobody, and neither does a domain two organizations verified: the sign-in is
    then pinned to no organization (the policy trusts the same verified owner, ``domains.verified_owner``).
    """
    owners = verified_owners(session, email)
    if len(owners) != 1:
        return None
    org = session.get(Organization, owners[0])
    return org if org is not None and org.live else None


@translate_errors()
def sync_from_workos(session: Session, client: WorkOSClient, actor: Actor) -> SyncResult:
    """Mirror every WorkOS organization into a tenant; idempotent, one transaction per organization."""
    result = SyncResult()
    for workos_org in client.organizations.list_organizations(limit=100, order="asc").auto_paging_iter():
        mirrored = mirror_organization(session, client, workos_org, actor)
        session.commit()
        getattr(result, mirrored.outcome).append(mirrored.name)
    return result
