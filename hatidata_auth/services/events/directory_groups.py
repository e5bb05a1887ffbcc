"""``dsync.group.created|updated|deleted``: directory groups; a change of identity recomputes members' roles."""

from __future__ import annotations

from typing import Any

from .context import EventContext, dsync_org, require
from .directory_state import resync_group_members, upsert_directory_group
from .registry import handles


@handles("dsync.group.created", "dsync.group.updated", revokes=lambda t, d: t.endswith(".updated"))
def on_group_upsert(ctx: EventContext, data: dict[str, Any]) -> None:
    """``dsync.group.created`` / ``dsync.group.updated`` (a rename recomputes every member's role)."""
    org = dsync_org(ctx, require(data, "id", "directory_id", "name"))
    if org is None:
        return
    group, changed = upsert_directory_group(ctx, org, data)
    if group is not None and changed:
        resync_group_members(ctx, org, group.workos_id, reason=ctx.event_type)


@handles("dsync.group.deleted", revokes=True)
def on_group_deleted(ctx: EventContext, data: dict[str, Any]) -> None:
    """``dsync.group.deleted``: tombstone; members lose what the group gave them."""
    org = dsync_org(ctx, require(data, "id", "directory_id", "name"))
    if org is None:
        return
    group, changed = upsert_directory_group(ctx, org, data, deleted=True)
    if group is not None and changed:
        resync_group_members(ctx, org, group.workos_id, reason="directory_group_deleted")
