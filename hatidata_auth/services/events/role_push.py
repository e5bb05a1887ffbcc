"""The internal handler of ``services.workos_role_push.JOB_TYPE``: give WorkOS the role an admin decided here, then
lift the membership's mark (the rule in :mod:`services.workos_role_push`). WorkOS unreachable raises, so the
appliers retry it (then keep it ``failed``, replayable, the mark still on)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from workos.organization_membership import RoleSingle

from ...models import Membership
from ...workos import WorkOSFailure, WorkOSUnavailable, translate_errors
from .. import workos_memberships, workos_role_push
from .context import EventContext, PayloadError


def apply_role_push(ctx: EventContext, data: dict[str, Any]) -> None:
    """Set the membership's role (as it stands here) at WorkOS, without holding its row across WorkOS's answer;
    ignored with a note when the row is gone, carries no mark of this decision (a newer one's job pushes), or
    WorkOS's membership is another one by then (the mark is lifted). Raises :class:`PayloadError` on a payload of
    another shape, ``WorkOSUnavailable`` when WorkOS does not answer."""
    try:
        job = workos_role_push.parse(data)
    except (KeyError, TypeError) as exc:
        raise PayloadError(f"not a WorkOS role job: {exc}") from exc
    membership = ctx.session.get(Membership, job["membership_id"])
    if membership is None or membership.organization_id != job["organization_id"]:
        ctx.ignore("membership gone")
        return
    mark = workos_role_push.pending(membership)
    if mark is None or mark.get("at") != job["at"]:
        ctx.ignore("a newer role decision's job sets it" if mark else "set at WorkOS already")
        return
    workos_membership_id, role = str(mark.get("id")), membership.role
    if membership.workos_membership_id != workos_membership_id or role is None or ctx.client is None:
        _lift(ctx, membership, job, version=None)
        ctx.ignore("the WorkOS membership decided for is gone")
        return
    try:
        with translate_errors():
            at_workos = ctx.client.organization_membership.update_organization_membership(
                workos_membership_id, role=RoleSingle(role_slug=role))
        outcome, version = "set", workos_memberships.when(getattr(at_workos, "updated_at", None))
    except WorkOSUnavailable:
        raise
    except WorkOSFailure as exc:  # refused (a slug WorkOS does not know, a membership it no longer holds)
        outcome, version = f"failed:{exc.reason}", None
    _lift(ctx, membership, job, version=version)
    ctx.record("membership.role_set_at_workos", organization_id=job["organization_id"], target_type="membership",
               target_id=membership.id, outcome="success" if version else "failure",
               details={"role": role, "workos_membership_id": workos_membership_id, "workos": outcome})


def _lift(ctx: EventContext, membership: Membership, job: dict[str, str], *, version: Any) -> None:
    # Under the row's lock, read again: a newer decision made meanwhile keeps its own mark (its job follows).
    locked = ctx.session.scalars(select(Membership).where(Membership.id == membership.id).with_for_update()
                                 .execution_options(populate_existing=True)).one()
    mark = workos_role_push.pending(locked)
    if mark is None or mark.get("at") != job["at"]:
        return
    workos_role_push.lift(locked)
    decided_key = workos_memberships.ROLE_DECIDED
    decided = workos_memberships.when((locked.details or {}).get(decided_key))
    if version is not None and (decided is None or version > decided):
        # WorkOS's word not newer than its own version after the change came before WorkOS took the role.
        locked.details = {**(locked.details or {}), decided_key: version.isoformat()}
