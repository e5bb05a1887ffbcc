"""``dsync.group.user_added|user_removed``: membership facts versioned by (event time, event id), kept even
when the user or group is not known yet (a membership counts once both exist).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from ...models import DirectoryUser
from .context import EventContext, dsync_org, require
from .directory_state import set_group_membership, sync_member, upsert_directory_group, upsert_directory_user
from .member_fanout import fan_out
from .registry import handles


@handles("dsync.group.user_added", "dsync.group.user_removed", revokes=lambda t, d: t.endswith("removed"))
def on_group_membership(ctx: EventContext, data: dict[str, Any]) -> None:
    """``dsync.group.user_added`` / ``dsync.group.user_removed``."""
    require(data, "user", "group")
    user, group = require(data["user"], "id", "directory_id"), require(data["group"], "id", "directory_id", "name")
    org = dsync_org(ctx, {"organization_id": user.get("organization_id") or group.get("organization_id"),
                           "directory_id": data.get("directory_id") or group["directory_id"]})
    if org is None:
        return
    # The embedded snapshots are full objects: apply them under the same version guard.
    du, _ = upsert_directory_user(ctx, org, user) if "state" in user else (None, False)
    group_row, group_changed = upsert_directory_group(ctx, org, group)
    if group_row is not None and group_changed:
        # The snapshot may carry a rename whose own dsync.group.updated has not arrived yet.
        fan_out(ctx, org, f"group:{group_row.workos_id}", reason="dsync.group.updated")
    present = ctx.event_type.endswith("user_added")
    changed = set_group_membership(ctx, org, group["id"], user["id"], present, ctx.event_time, ctx.event_id)
    if changed:
        ctx.record("directory_group.member_added" if present else "directory_group.member_removed",
                   organization_id=org.id, target_type="directory_group", target_id=group["id"],
                   details={"directory_user_id": user["id"], "group": group.get("name")})
    if du is None:
        du = ctx.session.scalar(select(DirectoryUser).where(DirectoryUser.organization_id == org.id,
                                                            DirectoryUser.workos_id == user["id"]))
    if du is not None:
        sync_member(ctx, org, du, reason=ctx.event_type)
