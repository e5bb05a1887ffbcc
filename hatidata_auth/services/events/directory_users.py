"""``dsync.user.*``: directory users, versioned by ``updated_at``; a deletion leaves a final tombstone."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from ...models import DirectoryUser, Organization
from .context import EventContext, directory_deleted, dsync_org, require
from .directory_insert import inserted_user
from .directory_state import locked_directory_user, mirror_settled_names, sync_member, upsert_directory_user
from .registry import handles


def _org_and_locked_user(ctx: EventContext, data: dict[str, Any]) -> tuple[Organization, DirectoryUser] | None:
    """The tenant and its stored directory user, the user row locked, in one statement (``None`` when either
    is not stored yet: the caller then takes the general path)."""
    workos_org_id = data.get("organization_id")
    if not workos_org_id:
        return None
    org = ctx.locked_organizations.get(workos_org_id)
    if org is not None:  # the binding has locked the tenant's row already: only the user's is left to lock
        du = locked_directory_user(ctx, org, data["id"])
        return None if du is None else (org, du)
    row = ctx.session.execute(
        select(Organization, DirectoryUser)
        .join(DirectoryUser, DirectoryUser.organization_id == Organization.id)
        .where(Organization.workos_organization_id == workos_org_id, DirectoryUser.workos_id == data["id"])
        .with_for_update(of=DirectoryUser)
    ).first()
    return None if row is None else (row[0], row[1])


@handles("dsync.user.created", "dsync.user.updated", revokes=lambda t, d: d.get("state") != "active",
         snapshot=True)
def on_user_upsert(ctx: EventContext, data: dict[str, Any]) -> None:
    """``dsync.user.created`` / ``dsync.user.updated``."""
    require(data, "id", "directory_id", "state")
    # A created user is new as a rule: with its tenant's row held already, the insert is tried first (a user stored
    # before, by a replay or a resync, is then locked and updated by its conflict path), which saves the lookup.
    expect_new = ctx.event_type == "dsync.user.created" and data.get("organization_id") in ctx.locked_organizations
    found = None if expect_new else _org_and_locked_user(ctx, data)
    if found is not None:  # the common case, an update of a known user: one round trip for both rows
        org, existing = found
        ctx.organization = org
        if directory_deleted(org, data.get("directory_id")):
            ctx.ignore("directory deleted")
            return
        du, changed = upsert_directory_user(ctx, org, data, existing=existing)
    else:
        org_or_none = dsync_org(ctx, data)
        if org_or_none is None:
            return
        org = org_or_none
        # The joined lookup above found no such user in the organization with this WorkOS id (or, for a created user,
        # the insert is tried first): skip looking again.
        known_absent = bool(data.get("organization_id")) and org.workos_organization_id == data["organization_id"]
        du, changed = upsert_directory_user(ctx, org, data, known_absent=known_absent)
    # A change of custom attributes alone needs no access work; one of names alone only their mirroring.
    settled = du is not None and changed and ctx.names_only and mirror_settled_names(ctx, org, du)
    if du is not None and changed and ctx.access_changed and not settled:
        # A directory user this event has just inserted: its insert found whether a person holds its email and
        # whether it is in a live group, and nothing was written since (the two lookups are saved). The group answer
        # only where the sync creates the person: linking a stored one may first wait on a lock (its names, its
        # email), and a group committed during that wait must count (tests/test_inserted_user_race.py).
        inserted = inserted_user(ctx, du)
        email = du.email
        creates_person = (inserted is not None and inserted.no_person and bool(email)
                          and email not in ctx.users_by_email)
        if creates_person and email:
            ctx.users_by_email[email] = None
            ctx.held_emails.add(email)  # the insert's function looked under the email's lock (migration 0022)
        no_group = creates_person and inserted is not None and inserted.no_group
        sync_member(ctx, org, du, reason=ctx.event_type, groups=[] if no_group else None)


@handles("dsync.user.deleted", revokes=True)
def on_user_deleted(ctx: EventContext, data: dict[str, Any]) -> None:
    """``dsync.user.deleted``: tombstone and deprovision."""
    require(data, "id", "directory_id")
    org = dsync_org(ctx, data)
    if org is None:
        return
    du, changed = upsert_directory_user(ctx, org, data, deleted=True)
    if du is not None and changed:
        sync_member(ctx, org, du, reason="directory_user_deleted")
