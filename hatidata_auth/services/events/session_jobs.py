"""The internal handler of ``services.workos_revocations.JOB_TYPE``: end one session at WorkOS, after our side
ended it, and audit the outcome (``session.revoked_at_workos``, details ``workos``: ``revoked``, ``not_found``
or ``failed:<error>``). WorkOS unreachable raises, so the appliers retry it (then keep it ``failed``, replayable)."""

from __future__ import annotations

from typing import Any

from ...models import AuthSession
from .. import workos_revocations
from ..sessions import revoke_at_workos
from .context import EventContext, PayloadError


def apply_revocation(ctx: EventContext, data: dict[str, Any]) -> None:
    """Revoke the job's session at WorkOS (no client: nothing to call, ``skipped``)."""
    try:
        job = workos_revocations.parse(data)
    except (KeyError, TypeError) as exc:
        raise PayloadError(f"not a WorkOS revocation job: {exc}") from exc
    record = ctx.session.get(AuthSession, job["session_id"])
    if record is None or record.organization_id != job["organization_id"]:
        outcome = "skipped"  # the session row is gone (or not the job's organization's): nothing to name
    else:
        outcome = revoke_at_workos(ctx.client, record.workos_session_id, raise_unavailable=True)
    ctx.record("session.revoked_at_workos", organization_id=job["organization_id"], target_type="session",
               target_id=job["session_id"],
               details={"user_id": job["user_id"], "session_id": job["session_id"], "workos": outcome})
