"""``organization_membership.*``: membership changes made on the WorkOS side (version-guarded by ``updated_at``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from ...models import Membership, User
from ...roles import is_role
from .. import domains, membership_rows, person_email, workos_late_word, workos_memberships, workos_role_push
from .context import EventContext, parse_time, require, resolve_organization
from .registry import handles


def _user_by_workos_id(ctx: EventContext, workos_user_id: str, organization_id: str) -> User | None:
    by_id = select(User).where(User.workos_user_id == workos_user_id)
    user = ctx.session.scalar(by_id)
    if user is not None or ctx.client is None:
        return user
    remote = ctx.client.user_management.get_user(workos_user_id)
    email = str(remote.email).strip().lower()
    linkable = domains.foreign_owner(ctx.session, organization_id, email) is None  # email links only on own domains
    # A person another WorkOS user claimed is never handed over (as at a sign-in: ``services.person_email``).
    by_email = select(User).where(User.email == email, User.workos_user_id.is_(None)).order_by(User.created_at) \
        .limit(1)
    user = ctx.session.scalar(by_email) if linkable else None
    if user is None and person_email.hold_email(ctx.session, email, organization_id=organization_id):
        # One person per email (and per WorkOS user): the look that decides to create is made under the lock.
        user = ctx.session.scalar(by_id) or (ctx.session.scalar(by_email) if linkable else None)
    if user is None:
        user = User(email=email, first_name=remote.first_name, last_name=remote.last_name)
        ctx.session.add(user)
    if user.workos_user_id is None:
        user.workos_user_id = workos_user_id
    ctx.session.flush()
    return user


# A change may lower the role or deactivate: every change counts (a creation only adds).
@handles("organization_membership.created", "organization_membership.updated", "organization_membership.deleted",
         revokes=lambda t, d: not t.endswith(".created"))
def on_organization_membership(ctx: EventContext, data: dict[str, Any]) -> None:
    """``organization_membership.created|updated|deleted``: changes made on the WorkOS side."""
    require(data, "id", "user_id", "organization_id")
    org = resolve_organization(ctx, data["organization_id"])
    if org is None:
        ctx.ignore("unknown organization")
        return
    found = org  # for the closure below
    user = _user_by_workos_id(ctx, data["user_id"], org.id)
    if user is None:
        ctx.ignore("unknown user")
        return
    # Locked before it is compared: events of one person's memberships are keyed by membership id, so a deletion
    # and the re-add's ``created`` (a new id) may be applied at once; deciding on an unlocked read, the one that
    # waited wrote over the other's committed change (a break-it review).
    membership = ctx.session.scalar(select(Membership).where(Membership.organization_id == org.id,
                                                             Membership.user_id == user.id)
                                    .with_for_update().execution_options(populate_existing=True))
    role = (data.get("role") or {}).get("slug") if isinstance(data.get("role"), dict) else None
    version = parse_time(data.get("updated_at")) or ctx.event_time
    deleted = ctx.event_type.endswith("deleted")
    created_at = workos_memberships.when(data.get("created_at"))

    def old_news(m: Membership) -> bool:
        if workos_memberships.superseded(m, data["id"], version, deleted=deleted):
            if workos_late_word.predecessor_seen(m, data["id"]):
                ctx.record(f"workos.{ctx.event_type}", organization_id=m.organization_id, target_type="membership",
                           target_id=m.id, details={"user_id": m.user_id, "predecessor_of": m.workos_membership_id})
                workos_late_word.restart(ctx.session, ctx.client, found, m, deleted_id=data["id"] if deleted
                                           else None, cause=ctx.cause.with_reason(ctx.event_type))
            elif not deleted and is_role(role) and workos_role_push.holds_role(m, data["id"]):
                workos_role_push.note_held(m, version, str(role))  # old news, given at the lift if newer than it
            elif not deleted and workos_late_word.late_named_role(m, data["id"], version, role):
                ctx.record(f"workos.{ctx.event_type}", organization_id=m.organization_id, target_type="membership",
                           target_id=m.id, details={"user_id": m.user_id, "late_role": role})
                workos_late_word.apply_late_role(ctx.session, ctx.client, found, m, version=version,
                                                   role=str(role), cause=ctx.cause.with_reason(ctx.event_type))
            return True
        if not deleted and workos_memberships.held_by_removal(m, data["id"], created_at):
            ctx.ignore("held by an admin's removal here")  # seen in the inbox, no change to audit
            return True
        return False

    if membership is not None and old_news(membership):
        return
    if membership is None:
        # A deletion of a membership we have no row of is kept as a deprovisioned one (its version with it): a first
        # sign-in creating the row meanwhile is waited for and deprovisioned, one after it finds the row and is
        # refused, and an older ``created``/``updated`` delivered late finds a newer version and changes nothing.
        membership, new = membership_rows.created_or_locked(
            ctx.session, organization_id=org.id, user_id=user.id, role=None, role_source="idp", source="sso",
            status="deprovisioned" if deleted else "pending", workos_membership_id=None if deleted else data["id"])
        if not new and old_news(membership):
            return
    ctx.record(f"workos.{ctx.event_type}", organization_id=org.id, target_type="membership",
               target_id=membership.id, details={"user_id": user.id, "role": role, "status": data.get("status"),
                                                 "directory_managed": data.get("directory_managed")})
    # The directory and our mappings decide directory-managed members (documented overwrite rule): ``apply`` then
    # only records WorkOS's word.
    workos_memberships.apply(ctx.session, ctx.client, org, membership, workos_membership_id=data["id"],
                             version=version, status=data.get("status"), role=role, deleted=deleted,
                             cause=ctx.cause.with_reason(ctx.event_type))
