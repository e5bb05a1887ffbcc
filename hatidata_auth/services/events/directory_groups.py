"""``dsync.group.created|updated|deleted``: directory groups; a change of identity recomputes members' roles."""

from __future__ import annotations

from typing import Any

from .context import EventContext, dsync_org, require
from .directory_state import upsert_directory_group
from .member_fanout import fan_out
from .registry import handles


@handles("dsync.group.created", "dsync.group.updated", revokes=lambda t, d: t.endswith(".updated"))
def on_group_upsert(ctx: EventContext, data: dict[str, Any]) -> None:
    """``dsync.group.created`` / ``dsync.group.updated`` (a rename recomputes every member's role, in chunks when
    they are many: :func:`~.member_fanout.fan_out`)."""
    org = dsync_org(ctx, require(data, "id", "directory_id", "name"))
    if org is None:
        return
    group, changed = upsert_directory_group(ctx, org, data)
    if group is not None and changed:
        fan_out(ctx, org, f"group:{group.workos_id}", reason=ctx.event_type)


@handles("dsync.group.deleted", revokes=True)
def on_group_deleted(ctx: EventContext, data: dict[str, Any]) -> None:
    """``dsync.group.deleted``: tombstone at once; members lose what the group gave them (in chunks when many)."""
    org = dsync_org(ctx, require(data, "id", "directory_id", "name"))
    if org is None:
        return
    group, changed = upsert_directory_group(ctx, org, data, deleted=True)
    if group is not None and changed:
        fan_out(ctx, org, f"group:{group.workos_id}", reason="directory_group_deleted")
