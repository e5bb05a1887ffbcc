"""The demo organizations' group -> role mappings (``hatidata seed-demo``)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..causes import Actor, Cause
from ..idp import IdPPlugin
from ..models import DirectoryGroup, Organization
from ..roles import Role
from ..workos import WorkOSClient
from . import role_mapping

DEMO_GROUP_ROLES = {"HatiData Admins": Role.ADMIN.value, "HatiData Developers": Role.DEVELOPER.value,
                    "HatiData Viewers": Role.VIEWER.value}


def group_identifier_kind(plugins: Iterable[IdPPlugin], directory_type: str | None) -> str:
    """What the SSO groups of the IdP behind *directory_type* carry (its plugin says; ``name`` when no loaded
    plugin serves that directory type)."""
    for plugin in plugins:
        if directory_type and plugin.directory_type == directory_type:
            return plugin.group_identifier_kind
    return "name"


def ensure_demo_mappings(session: Session, client: WorkOSClient, *, organization_id: str, actor: Actor,
                         plugins: Iterable[IdPPlugin]) -> bool:
    """Give a demo organization mappings for its HatiData groups, once, by what its IdP's SSO groups carry
    (the *plugins*' ``group_identifier_kind``: object ids for Entra); caller commits."""
    if role_mapping.list_mappings(session, organization_id):
        return False
    org = session.get(Organization, organization_id)
    if org is None:
        return False
    by_object_id = group_identifier_kind(plugins, org.directory_type) == "object_id"
    specs = []
    for group in session.scalars(select(DirectoryGroup).where(DirectoryGroup.organization_id == organization_id,
                                                              DirectoryGroup.deleted_at.is_(None))):
        role = DEMO_GROUP_ROLES.get(group.name)
        if role is None:
            continue
        if by_object_id and group.idp_id:
            specs.append(role_mapping.MappingSpec("object_id", group.idp_id, role))
        else:
            specs.append(role_mapping.MappingSpec("name", group.name, role))
    if not specs:
        return False
    role_mapping.replace_mappings(session, client, organization_id=organization_id, specs=specs, cause=Cause.by(actor))
    return True
