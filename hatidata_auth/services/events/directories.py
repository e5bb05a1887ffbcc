"""``dsync.activated`` / ``dsync.deleted``: the organization's directory link.

A deleted directory is final for its id: later events for it are ignored.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update

from ...models import DirectoryGroup, DirectoryUser
from .context import EventContext, directory_deleted, require, resolve_organization
from .member_fanout import fan_out
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
    """``dsync.deleted``: one event for the whole directory: the directory, its users and groups are tombstoned at
    once (set-based); its members are deactivated a chunk at a time (:func:`~.member_fanout.fan_out`)."""
    require(data, "id")
    directory_id = data["id"]
    org = resolve_organization(ctx, data.get("organization_id"), directory_id)
    if org is None:
        ctx.ignore("unknown organization")
        return
    now = ctx.event_time
    if org.directory_id in (None, directory_id):
        org.directory_id, org.directory_state = directory_id, "deleted"
    # Set-based, at once: the tombstones make every member's access final before any chunk deactivates them.
    users = ctx.session.execute(update(DirectoryUser).where(
        DirectoryUser.organization_id == org.id, DirectoryUser.directory_id == directory_id,
        DirectoryUser.deleted_at.is_(None)).values(deleted_at=now).execution_options(synchronize_session="fetch"))
    groups = ctx.session.execute(update(DirectoryGroup).where(
        DirectoryGroup.organization_id == org.id, DirectoryGroup.directory_id == directory_id,
        DirectoryGroup.deleted_at.is_(None)).values(deleted_at=now))
    ctx.record("directory.deleted", organization_id=org.id, target_type="directory", target_id=directory_id,
               details={"users_deactivated": int(getattr(users, "rowcount", 0)),
                        "groups_deleted": int(getattr(groups, "rowcount", 0))})
    fan_out(ctx, org, f"directory:{directory_id}", reason="directory_deleted")
