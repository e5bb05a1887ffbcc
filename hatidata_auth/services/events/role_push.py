"""The internal handler of ``services.workos_role_push.JOB_TYPE``: give WorkOS the role an admin decided here, then
lift the membership's mark (the rule in :mod:`services.workos_role_push`). WorkOS unreachable raises, so the
appliers retry it (``workos_role_push.ATTEMPTS`` tries, then ``failed`` and given up: the mark no longer holds, and
a replay sets the role)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from workos.organization_membership import RoleSingle

from ...models import Membership
from ...workos import WorkOSFailure, WorkOSUnavailable, translate_errors
from .. import workos_memberships, workos_role_push
from ..provisioning import REMOVED_HERE, set_access
from .context import EventContext, PayloadError


def apply_role_push(ctx: EventContext, data: dict[str, Any]) -> None:
    """Set the membership's role (as it stands here) at WorkOS, without holding its row across WorkOS's answer;
    ignored with a note when the row is gone, carries no mark of this decision (a newer one's job pushes), or
    WorkOS's membership is another one by then, or the member was removed (the mark is lifted). Once WorkOS took
    it, WorkOS's word the mark held meanwhile that is newer than WorkOS's version after the change is given (it raced
    the job). Raises :class:`PayloadError` on a payload of another shape, ``WorkOSUnavailable`` when WorkOS does not
    answer (the appliers retry; spent, ``workos_role_push.give_up``)."""
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
    role, client = membership.role, ctx.client
    workos_membership_id = mark.get("id")
    if workos_membership_id is None and client is not None:  # the row knew none: WorkOS's of the person, if any
        decided_at = datetime.fromisoformat(str(mark["at"]))
        workos_membership_id = workos_role_push.find_at_workos(ctx.session, client, membership, decided_at)
    gone = workos_membership_id is None or role is None \
        or (membership.workos_membership_id or workos_membership_id) != workos_membership_id
    if gone or workos_membership_id is None or role is None or client is None \
            or membership.status == "deprovisioned":
        # Removed here or by WorkOS: no role to give (a break-it review: a member promoted, then removed, was made
        # an admin at WorkOS).
        _lift(ctx, membership, job, version=None)
        ctx.ignore("the WorkOS membership decided for is gone" if gone else
                   "no WorkOS client" if client is None else "the member was removed")
        return
    try:
        with translate_errors():
            at_workos = client.organization_membership.update_organization_membership(
                workos_membership_id, role=RoleSingle(role_slug=role))
        outcome, version = "set", workos_memberships.when(getattr(at_workos, "updated_at", None))
    except WorkOSUnavailable:
        raise
    except WorkOSFailure as exc:  # refused (a slug WorkOS does not know, a membership it no longer holds)
        outcome, version = f"failed:{exc.reason}", None
    _lift(ctx, membership, job, version=version)
    ctx.record("membership.role_set_at_workos", organization_id=job["organization_id"], target_type="membership",
               target_id=membership.id, outcome="success" if outcome == "set" else "failure",
               details={"role": role, "workos_membership_id": workos_membership_id, "workos": outcome})


def _lift(ctx: EventContext, membership: Membership, job: dict[str, str], *, version: Any) -> None:
    # Under the row's lock, read again: a newer decision made meanwhile keeps its own mark (its job follows).
    locked = ctx.session.scalars(select(Membership).where(Membership.id == membership.id).with_for_update()
                                 .execution_options(populate_existing=True)).one()
    mark = workos_role_push.pending(locked)
    if mark is None or mark.get("at") != job["at"]:
        return
    workos_role_push.lift(locked)
    if version is not None:
        # WorkOS's word not newer than its own version after the change came before WorkOS took the role, and any
        # newer one after: on WorkOS's clock, whichever way ours drifts (a break-it review: our time, ahead, held
        # WorkOS's later demotion).
        locked.details = {**(locked.details or {}), workos_memberships.ROLE_DECIDED: version.isoformat()}
    newer = workos_role_push.newer_held(mark, version) if version is not None else None
    removed = locked.status == "deprovisioned" or REMOVED_HERE in (locked.details or {})
    if newer is not None and newer != locked.role and not removed:  # WorkOS decided again after it took the role
        set_access(ctx.session, ctx.client, locked, role=newer, role_source="idp", active=locked.status == "active",
                   cause=ctx.cause.with_reason("workos_word_after_the_role_was_set"),
                   inactive_status=str(locked.status), dormant_role=locked.status != "active")
