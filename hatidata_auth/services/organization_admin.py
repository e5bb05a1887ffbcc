"""An organization as its admins manage it: settings changes, the SSO and directory status, an on-demand resync.

Every function takes the organization's id (ours) and raises :class:`~hatidata_auth.services.tenant_admin.NotFound`
for an unknown or deleted one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..causes import Cause
from ..errors import AppError, ServiceUnavailable
from ..models import DirectoryGroup, DirectoryUser
from ..workos import WorkOSClient, WorkOSNotFound, WorkOSUnavailable, translate_errors
from . import audit, fanout_jobs, mapping_admin, reconcile, tenant_admin


@dataclass(frozen=True, slots=True)
class ConnectionStatus:
    """The organization's SSO connection, as last mirrored from WorkOS."""

    id: str
    type: str | None
    state: str | None


@dataclass(frozen=True, slots=True)
class DirectoryStatus:
    """The organization's directory, as last mirrored from WorkOS, with the live users and groups we hold."""

    id: str
    type: str | None
    state: str | None
    users: int
    groups: int


@dataclass(frozen=True, slots=True)
class SsoStatus:
    """The organization's IdP plugin, SSO enforcement, connection and directory (``None`` when it has none)."""

    organization_id: str
    idp_plugin: str | None
    sso_enforced: bool
    connection: ConnectionStatus | None
    directory: DirectoryStatus | None


@dataclass(frozen=True, slots=True)
class Resynced:
    """A directory resync run on demand: the organization and what the resync fixed."""

    organization_id: str
    report: reconcile.ResyncReport


def change_settings(session: Session, client: WorkOSClient, *, organization_id: str, changes: dict[str, Any],
                    cause: Cause, chunk: int = fanout_jobs.DEFAULT_CHUNK,
                    ) -> tenant_admin.OrganizationSettings:
    """Apply settings *changes* (keys of :data:`~hatidata_auth.services.tenant_admin.SETTINGS_FIELDS`); both audited,
    flushed, not committed; returns the settings as they now are. A ``default_role`` that differs goes through the
    role-mapping service, which recomputes the members in no mapped group in the same transaction (or queues a
    recompute job when they are more than *chunk*)."""
    settings = {name: value for name, value in changes.items() if name != "default_role"}
    org = tenant_admin.update_settings(session, organization_id=organization_id, changes=settings, cause=cause)
    if "default_role" in changes and changes["default_role"] != org.default_role:
        mapping_admin.set_default_role(session, client, organization_id=org.id,
                                       default_role=changes["default_role"], cause=cause, chunk=chunk)
    session.flush()
    return tenant_admin.settings_view(org)


def _live_count(session: Session, model: type[DirectoryUser] | type[DirectoryGroup], organization_id: str) -> int:
    return int(session.scalar(select(func.count()).select_from(model).where(
        model.organization_id == organization_id, model.deleted_at.is_(None))) or 0)


def sso_status(session: Session, organization_id: str) -> SsoStatus:
    """The organization's SSO connection and directory, as last mirrored from WorkOS."""
    org = tenant_admin.get_organization(session, organization_id)
    directory = None
    if org.directory_id:
        directory = DirectoryStatus(org.directory_id, org.directory_type, org.directory_state,
                                    users=_live_count(session, DirectoryUser, org.id),
                                    groups=_live_count(session, DirectoryGroup, org.id))
    connection = None
    if org.connection_id:
        connection = ConnectionStatus(org.connection_id, org.connection_type, org.connection_state)
    return SsoStatus(org.id, org.idp_plugin, org.sso_enforced, connection, directory)


def resync_directory(session: Session, client: WorkOSClient, *, organization_id: str, cause: Cause) -> Resynced:
    """Audit the request (committed first, so it stays whatever happens), then run a full resync from WorkOS,
    which commits as it goes.

    Raises 409 ``directory_not_found`` when WorkOS does not know the directory and :class:`ServiceUnavailable`
    (``Retry-After: 30``) when WorkOS is unavailable; either way the resync's open transaction is rolled back.
    """
    org = tenant_admin.get_organization(session, organization_id)
    org_id, directory_id = org.id, org.directory_id
    audit.record(session, action="directory.resync_requested", cause=cause, organization_id=org_id,
                 target_type="directory", target_id=directory_id)
    session.commit()
    try:
        with translate_errors():
            report = reconcile.full_resync(session, client, organization_id=org_id, actor=cause.actor)
    except WorkOSNotFound as exc:
        session.rollback()
        raise AppError("WorkOS does not know this organization's directory.", status=409,
                       code="directory_not_found", details={"directory_id": directory_id}) from exc
    except WorkOSUnavailable as exc:
        session.rollback()
        raise ServiceUnavailable("WorkOS is unavailable; retry the resync shortly.",
                                 headers={"Retry-After": "30"}) from exc
    session.commit()
    return Resynced(org_id, report)
