"""The demo organizations' group -> role mappings (``hatidata seed-demo``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..causes import Actor, Cause
from ..models import DirectoryGroup, Organization
from ..roles import Role
from . import role_mapping

DEMO_GROUP_ROLES = {"HatiData Admins": Role.ADMIN.value, "HatiData Developers": Role.DEVELOPER.value,
                    "HatiData Viewers": Role.VIEWER.value}


def ensure_demo_mappings(session: Session, client: Any, *, organization_id: str, actor: Actor) -> bool:
    """Give a demo organization mappings for its HatiData groups (object ids for Entra), once; caller commits."""
    if role_mapping.list_mappings(session, organization_id):
        return False
    org = session.get(Organization, organization_id)
    if org is None:
        return False
    by_guid = (org.directory_type or "").startswith("azure")
    specs = []
    for group in session.scalars(select(DirectoryGroup).where(DirectoryGroup.organization_id == organization_id,
                                                              DirectoryGroup.deleted_at.is_(None))):
        role = DEMO_GROUP_ROLES.get(group.name)
        if role is None:
            continue
        if by_guid and group.idp_id:
            specs.append(role_mapping.MappingSpec("object_id", group.idp_id, role))
        else:
            specs.append(role_mapping.MappingSpec("name", group.name, role))
    if not specs:
        return False
    role_mapping.replace_mappings(session, client, organization_id=organization_id, specs=specs, cause=Cause.by(actor))
    return True
