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
from ..models import Organization, utcnow
from ..workos import WorkOSClient, translate_errors
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


def organization_fields(client: WorkOSClient, workos_org: Any) -> dict[str, Any]:
    """Read an organization's name, domains, first SSO connection and first directory from WorkOS."""
    fields: dict[str, Any] = {
        "name": workos_org.name,
        "domains": sorted(d.domain for d in workos_org.domains or []),
        "domain_states": domain_states(workos_org.domains),
        "workos_updated_at": _as_dt(workos_org.updated_at),
    }
    connections = client.sso.list_connections(organization_id=workos_org.id, limit=10, order="asc").data
    if connections:
        conn = connections[0]
        fields.update(connection_id=conn.id, connection_type=_enum_value(conn.connection_type),
                      connection_state=_enum_value(conn.state))
    directories = client.directory_sync.list_directories(organization_id=workos_org.id, limit=10, order="asc").data
    if directories:
        directory = directories[0]
        fields.update(directory_id=directory.id, directory_type=_enum_value(directory.type),
                      directory_state=_enum_value(directory.state))
    return fields


def _upsert(session: Session, workos_org_id: str, fields: dict[str, Any], actor: Actor) -> tuple[Organization, str]:
    org = session.scalar(select(Organization).where(Organization.workos_organization_id == workos_org_id))
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
    ``Organization`` already read), with its first connection and directory; audited, flushed, not committed.

    Raises :class:`~hatidata_auth.workos.WorkOSNotFound` when WorkOS does not know the id, other
    :class:`~hatidata_auth.workos.WorkOSFailure` subclasses when WorkOS fails.
    """
    workos_org = (client.organizations.get_organization(workos_organization)
                  if isinstance(workos_organization, str) else workos_organization)
    org, outcome = _upsert(session, workos_org.id, organization_fields(client, workos_org), actor)
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
    return org if org is not None and org.status == "active" and org.deleted_at is None else None


@translate_errors()
def sync_from_workos(session: Session, client: WorkOSClient, actor: Actor) -> SyncResult:
    """Mirror every WorkOS organization into a tenant; idempotent, one transaction per organization."""
    result = SyncResult()
    for workos_org in client.organizations.list_organizations(limit=100, order="asc").auto_paging_iter():
        mirrored = mirror_organization(session, client, workos_org, actor)
        session.commit()
        getattr(result, mirrored.outcome).append(mirrored.name)
    return result
