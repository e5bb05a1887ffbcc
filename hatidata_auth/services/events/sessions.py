"""``session.revoked``: a session ended at WorkOS."""

from __future__ import annotations

from typing import Any

from ...unit_of_work import invalidate_after_commit
from .. import sessions as sessions_service
from .context import EventContext, require
from .registry import handles


@handles("session.revoked", revokes=True)
def on_session_revoked(ctx: EventContext, data: dict[str, Any]) -> None:
    """``session.revoked``: revoke our record and evict it from the cache (no call back to WorkOS)."""
    require(data, "id")
    done = bool(sessions_service.revoke_by_workos_session_id(
        ctx.session, ctx.client, workos_session_id=data["id"],
        cause=ctx.cause.with_reason("revoked_at_workos"), call_workos=False))
    invalidate_after_commit(ctx.session, "session", str(data["id"]))
    if not done:
        ctx.note = "no live local session"
