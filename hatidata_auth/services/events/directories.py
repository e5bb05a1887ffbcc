"""``dsync.activated`` / ``dsync.deleted``: the organization's directory link.

A deleted directory is final for its id: later events for it are ignored.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from ...models import DirectoryGroup, DirectoryUser
from .context import EventContext, directory_deleted, require, resolve_organization
from .directory_state import sync_member
from .registry import handles


@handles("dsync.activated", revokes=False)
def on_directory_activated(ctx: EventContext, data: dict[str, Any]) -> None:
    """``dsync.activated``: the organization's directory is linked."""
    require(data, "id")
    org = resolve_organization(ctx, data.get("organization_id"), data["id"])
    if org is None:
        ctx.ignore("unknown organization")
        return
    if directory_deleted(org, data["id"]):
        ctx.ignore("directory deleted")
        return
    before = (org.directory_id, org.directory_state, org.directory_type)
    org.directory_id, org.directory_state = data["id"], "linked"
    org.directory_type = data.get("type") or org.directory_type
    if before != (org.directory_id, org.directory_state, org.directory_type):
        ctx.record("directory.activated", organization_id=org.id, target_type="directory", target_id=data["id"],
                   details={"type": org.directory_type, "name": data.get("name")})


@handles("dsync.deleted", revokes=True)
def on_directory_deleted(ctx: EventContext, data: dict[str, Any]) -> None:
    """``dsync.deleted``: one event for the whole directory; deactivate everything it owned."""
    require(data, "id")
    directory_id = data["id"]
    org = resolve_organization(ctx, data.get("organization_id"), directory_id)
    if org is None:
        ctx.ignore("unknown organization")
        return
    now = ctx.event_time
    users = list(ctx.session.scalars(select(DirectoryUser).where(
        DirectoryUser.organization_id == org.id, DirectoryUser.directory_id == directory_id,
        DirectoryUser.deleted_at.is_(None))))
    if org.directory_id in (None, directory_id):
        org.directory_id, org.directory_state = directory_id, "deleted"
    for du in users:
        du.deleted_at = now
        sync_member(ctx, org, du, reason="directory_deleted")
    groups = ctx.session.execute(update(DirectoryGroup).where(
        DirectoryGroup.organization_id == org.id, DirectoryGroup.directory_id == directory_id,
        DirectoryGroup.deleted_at.is_(None)).values(deleted_at=now))
    ctx.record("directory.deleted", organization_id=org.id, target_type="directory", target_id=directory_id,
               details={"users_deactivated": len(users), "groups_deleted": int(getattr(groups, "rowcount", 0))})
