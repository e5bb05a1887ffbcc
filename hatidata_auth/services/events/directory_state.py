"""Directory state under the ordering rules: users, groups and group memberships applied from snapshots under
their version guards, and a directory user's membership kept in line (:func:`sync_member`).

Shared by the ``dsync.*`` handlers and the full resync (:mod:`services.reconcile`).
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from sqlalchemy import Select, bindparam, select

from ...models import (
    DirectoryGroup,
    DirectoryGroupMembership,
    DirectoryUser,
    Membership,
    Organization,
    User,
    new_id,
    utcnow,
)
from ...unit_of_work import NO_AUTOFLUSH
from .. import directory_names, freed_email_jobs, role_mapping
from .. import directory_people as people
from ..provisioning import end_credentials_before, set_access
from . import batch_users
from .context import CLOCK_TOLERANCE, EventContext, directory_deleted, parse_time, require
from .directory_insert import insert_directory_user

DEPROVISIONED_STATES = ("inactive", "suspended")
NAME_FIELDS = frozenset({"first_name", "last_name"})  # mirrored onto the person; they decide no access


def directory_user_email(data: dict[str, Any]) -> str | None:
    """The email of a WorkOS directory user object, normalised (lower case): its ``email``, else the primary of its
    ``emails``; ``None`` without one."""
    email = data.get("email")
    if not email:
        for item in data.get("emails") or []:
            if isinstance(item, dict) and item.get("primary") and item.get("value"):
                email = item["value"]
                break
    return email.strip().lower() if isinstance(email, str) and email.strip() else None


def user_fields(data: dict[str, Any]) -> dict[str, Any]:
    """The ``directory_users`` columns a WorkOS directory user object sets (email normalised, lower case)."""
    return {
        "directory_id": data["directory_id"],
        "idp_id": None if data.get("idp_id") is None else str(data["idp_id"]),
        "email": directory_user_email(data),
        "first_name": data.get("first_name"),
        "last_name": data.get("last_name"),
        "state": data.get("state") or "active",
        "attributes": data.get("custom_attributes") or {},
    }


LOOKUP: Any = object()  # "look the row up" (the default), as opposed to a row (or None) the caller preloaded


def locked_directory_user(ctx: EventContext, org: Organization, workos_id: str) -> DirectoryUser | None:
    """The stored directory user, its row locked (``FOR UPDATE``): concurrent events for one user are applied one
    after the other, so the version guard compares against the committed state (no lost update when two workers
    race). Its linked person and that person's membership of *org* are read by the same statement (not locked):
    the session then has the person, and ``directory_people.person_for`` finds it without a query of its own;
    the membership is kept in ``ctx.linked_memberships`` for :func:`mirror_settled_names`."""
    batched = ctx.scope.locked_user(org, workos_id) if ctx.scope is not None else None
    if batched is not None:  # locked and read with the batch's other users of the organization (``batch_users``)
        if batched.person is not None:
            ctx.people_read.append(batched.person)
        ctx.linked_memberships[workos_id] = batched.membership
        return batched.directory_user
    # Without autoflush: the row is found by its key, which never changes, and an object the session holds keeps
    # its unflushed values; the batch's earlier events' changes are sent together at its commit. A membership
    # added and not flushed yet is not found: the caller then takes the general path, which flushes.
    row = ctx.session.execute(_locked_directory_user_statement(), {"organization_id": org.id, "workos_id": workos_id},
                              execution_options=NO_AUTOFLUSH).first()
    if row is None:
        return None
    if row[1] is not None:
        ctx.people_read.append(row[1])
    ctx.linked_memberships[workos_id] = row[2]
    return row[0]


@functools.cache
def _locked_directory_user_statement() -> Select[DirectoryUser, User, Membership]:
    # Built once (bound parameters): a reused statement keeps its cache key; per event only the values bind.
    return (batch_users.with_people().where(DirectoryUser.organization_id == bindparam("organization_id"),
                                            DirectoryUser.workos_id == bindparam("workos_id"))
            .with_for_update(of=DirectoryUser))


def _audit_directory_user(ctx: EventContext, org: Organization, du: DirectoryUser, action: str,
                          changed_fields: list[str] | None = None) -> None:
    details: dict[str, Any] = {"workos_id": du.workos_id, "email": du.email, "state": du.state}
    if changed_fields is not None:
        details["changed"] = changed_fields
    ctx.record(action, organization_id=org.id, target_type="directory_user", target_id=du.workos_id,
               details=details)


def upsert_directory_user(ctx: EventContext, org: Organization, data: dict[str, Any], *,  # noqa: C901 - one version-guarded upsert; to be split into named steps (issue #12)
                          deleted: bool = False, existing: Any = LOOKUP,
                          known_absent: bool = False) -> tuple[DirectoryUser | None, bool]:
    """Apply a user snapshot (or a deletion) under the version guard; returns (row, changed).

    *existing*: the stored row (or ``None``) when the caller has already loaded it (the resync does, a page
    at a time); otherwise the row is read with ``FOR UPDATE`` and a new one is inserted with
    ``ON CONFLICT DO NOTHING`` (a concurrent first event for the same user wins, this one then applies after it).
    *known_absent*: this transaction has just looked the row up (with ``FOR UPDATE``) and found none, so the
    insert is tried straight away (a concurrent insert since then is handled by the conflict path).
    """
    require(data, "id", "directory_id")
    version = parse_time(data.get("updated_at")) or ctx.event_time
    fields = user_fields(data)
    if existing is LOOKUP:
        du = None if known_absent else locked_directory_user(ctx, org, data["id"])
        if du is None:
            now = utcnow()
            values = {**fields, "id": new_id("du"), "organization_id": org.id, "workos_id": data["id"],
                      "version_at": version, "deleted_at": ctx.event_time if deleted else None, "user_id": None,
                      "resync_run_id": None, "created_at": now, "updated_at": now}
            du = insert_directory_user(ctx, values)
            if du is not None:
                ctx.access_changed, ctx.names_only = True, False
                ctx.new_directory_user_ids.add(du.workos_id)
                _audit_directory_user(ctx, org, du, "directory_user.deleted" if deleted else "directory_user.created")
                return du, True
            du = locked_directory_user(ctx, org, data["id"])  # created concurrently: apply on top of it
    else:
        du = existing
    if du is not None and du.deleted_at is not None:
        return du, False  # tombstone: never resurrected
    if du is not None and du.version_at is not None and version < du.version_at and not deleted:
        if fields.get("state") != "active":
            _late_deprovisioning(ctx, org, du, version, str(fields.get("state")))
        return du, False  # stale
    created = du is None
    if du is None:
        du = DirectoryUser(id=new_id("du"), organization_id=org.id, workos_id=data["id"], **fields)
        ctx.session.add(du)
        ctx.new_directory_user_ids.add(du.workos_id)
    before = {k: getattr(du, k) for k in fields} if not created else {}
    if not deleted or created:
        for key, value in fields.items():
            if created or before[key] != value:
                setattr(du, key, value)
    new_version = max(version, du.version_at) if du.version_at else version
    if du.version_at != new_version:
        du.version_at = new_version
    if deleted:
        du.deleted_at = ctx.event_time
    changed_fields = sorted(k for k in fields if before.get(k) != getattr(du, k))
    changed = created or deleted or bool(changed_fields)
    moved = {k for k in ("state", *people.PERSON_FIELDS) if before.get(k) != getattr(du, k)}
    ctx.access_changed = created or deleted or bool(moved)
    ctx.names_only = not (created or deleted) and bool(moved) and moved <= NAME_FIELDS
    if changed:
        action = "directory_user.deleted" if deleted else (
            "directory_user.created" if created else "directory_user.updated")
        _audit_directory_user(ctx, org, du, action, None if created or deleted else changed_fields)
    return du, changed


def sync_member(ctx: EventContext, org: Organization, du: DirectoryUser, *, reason: str,  # noqa: C901 - provision, recompute or deprovision; to be split (issue #12)
                groups: list[role_mapping.GroupRef] | None = None, repair_split: bool = False) -> None:
    """Bring the directory user's membership in line: provision, recompute the role, or deprovision; mirror
    the person (:mod:`services.directory_people`). When that takes an email off the person, the organization's
    directory users waiting for it are not synced here: one job each is queued in this transaction under that
    user's entity key (:mod:`services.freed_email_jobs`), so this transaction holds no other member's key.

    *groups*: the user's live groups when the caller knows them (the resync); read from the database otherwise.
    *repair_split*: look for other memberships hanging on the directory user even in a batched unit of work.
    """
    session = ctx.session
    wants_access = (du.deleted_at is None and du.state == "active" and org.live
                    and not directory_deleted(org, du.directory_id))
    refused: str | None = None
    if wants_access and du.email and ctx.foreign_owner(org.id, du.email) is not None:
        # A directory speaks only for its organization: an email on a domain another organization verified
        # is never linked to a person (who may have access there), and loses any access it had here.
        refused = reason = "domain_verified_by_another_organization"
    link = people.person_for(ctx, org, du) if wants_access and refused is None else None
    if link is not None and link.refused:
        refused = reason = link.refused
    if refused is not None:
        ctx.record("directory_user.link_refused", organization_id=org.id, target_type="directory_user",
                   target_id=du.workos_id, outcome="failure", details={"email": du.email, "reason": refused})
        wants_access = False
    if not wants_access:
        _deprovision_directory_user(ctx, org, du, reason)
        return
    assert link is not None
    user = link.user
    if user is None:
        return
    # A batched unit of work (the resync) checks for splits only where it found one or the person changed.
    # A directory user this unit of work inserted has no other membership to retire (``new_directory_user_ids``).
    check_split = repair_split or link.relinked or (ctx.memberships_by_user is None
                                                    and du.workos_id not in ctx.new_directory_user_ids)
    hanging: list[Membership] | None = None
    if check_split and ctx.memberships_by_user is None:  # both lookups in one query
        membership, hanging = people.membership_and_hanging(ctx, org, user.id, du)
    else:
        membership = people.membership_of(ctx, org, user.id)
    if groups is None:
        groups = role_mapping.directory_groups_of(session, org.id, du.workos_id)
    # Without groups no mapping can match: the role mappings need not be read.
    decision = role_mapping.resolve_role(groups, ctx.mappings(org.id) if groups else (), org.default_role)
    if membership is None:
        # The id is assigned here, so the row is inserted once, with its final role, when the event commits.
        membership = Membership(id=new_id("mem"), organization_id=org.id, user_id=user.id, role=None,
                                role_source=decision.source, source="directory", status="pending",
                                directory_user_id=du.workos_id, details={})
        session.add(membership)
        if ctx.memberships_by_user is not None:
            ctx.memberships_by_user[user.id] = membership
    elif membership.source != "directory" or membership.directory_user_id != du.workos_id:
        previous = {"source": membership.source, "directory_user_id": membership.directory_user_id}
        membership.source = "directory"
        membership.directory_user_id = du.workos_id
        ctx.record("membership.directory_linked", organization_id=org.id, target_type="membership",
                   target_id=membership.id, details={"user_id": user.id, "previous": previous,
                                                     "directory_user_id": du.workos_id})
    set_access(session, ctx.client, membership, role=decision.role, role_source=decision.source, active=True,
               cause=ctx.cause.with_reason(reason),
               details={"directory_user_id": du.workos_id, **role_mapping.decision_details(decision)})
    if check_split:
        people.retire_other_memberships(ctx, org, du, keep=membership, hanging=hanging)
    if link.freed_email:
        for waiting in people.waiting_for(ctx, org, du, link.freed_email):
            freed_email_jobs.queue(session, freed_email_jobs.FreedEmailJob(
                org.id, waiting.workos_id, link.freed_email, ctx.cause.with_reason(freed_email_jobs.REASON)))


def mirror_settled_names(ctx: EventContext, org: Organization, du: DirectoryUser) -> bool:
    """Mirror a name change onto the directory user's person without recomputing its membership, when the link
    is settled: the user is active and linked, its organization and directory live, no other organization verified
    its email's domain, and its person already has its email (not refused, no email move pending). Returns whether
    it did; otherwise the caller runs :func:`sync_member`, which also retries a refused link.

    The membership must be settled too: the person's membership of the organization, active, managed by this
    directory user, its role from the mappings or the default role. One an admin changed by hand (a role set
    by hand, a removal) takes the full recompute, which applies the overwrite rule (the directory wins at its next
    event) exactly as before.

    Sound because names decide nothing :func:`sync_member` computes (the role follows the groups and mappings, the
    status the state, the person the email): for a settled link and membership it would mirror the names and
    leave the membership as the last access-changing event, fan-out or resync left it. The person and the
    membership were read with the directory user's lock (``locked_directory_user``): no query."""
    if (du.user_id is None or du.deleted_at is not None or du.state != "active" or not org.live
            or directory_deleted(org, du.directory_id)):
        return False
    membership = ctx.linked_memberships.get(du.workos_id)
    if (membership is None or membership.status != "active" or membership.source != "directory"
            or membership.directory_user_id != du.workos_id or membership.role_source not in ("mapping", "default")):
        return False
    if du.email and ctx.foreign_owner(org.id, du.email) is not None:
        return False
    user = ctx.session.get(User, du.user_id)
    if user is None or (du.email and user.email != du.email):
        return False
    directory_names.mirror_names(ctx, org, du, user)
    return True


def _deprovision_directory_user(ctx: EventContext, org: Organization, du: DirectoryUser, reason: str) -> None:
    """Deprovision every membership hanging on the directory user (whatever person it is on now)."""
    if du.user_id is None:
        return  # never linked (or already unlinked when refused): no membership hangs on it
    why = reason if du.deleted_at is None else "directory_user_deleted"
    if reason == "domain_verified_by_another_organization":
        du.user_id = None
    elif du.deleted_at is None and du.state in DEPROVISIONED_STATES:
        why = f"directory_user_{du.state}"
    held = people.memberships_of_directory_user(ctx, org, du)
    for membership in held:
        set_access(ctx.session, ctx.client, membership, role=None, role_source="mapping", active=False,
                   cause=ctx.cause.with_reason(why),
                   details={"directory_user_id": du.workos_id})
    keep = next((m for m in held if m.user_id == du.user_id), None) if len(held) > 1 else None
    if keep is not None:  # a split: the directory user keeps its person's membership only
        people.retire_other_memberships(ctx, org, du, keep=keep)


def _late_deprovisioning(ctx: EventContext, org: Organization, du: DirectoryUser, version: datetime,
                         state: str) -> None:
    """A snapshot that takes access away, older than the row's (delivered after a newer one: suspended, then restored
    at the IdP, the two delivered in reverse order) changes no state, yet ends what it ended in order: the sessions
    begun and keys created by its time (``provisioning.end_credentials_before``), our clock against WorkOS's allowed
    ``context.CLOCK_TOLERANCE``: drifting clocks end a credential too many, never one too few. Skipped as
    stale, a session from before the suspension lived on (a break-it review)."""
    if du.user_id is None:
        return
    why = f"directory_user_{state}_delivered_late"
    revoked, suspended = end_credentials_before(ctx.session, ctx.client, organization_id=org.id, user_id=du.user_id,
                                                by=version + CLOCK_TOLERANCE, cause=ctx.cause.with_reason(why))
    if revoked or suspended:
        ctx.record("directory_user.deprovisioned_late", organization_id=org.id, target_type="directory_user",
                   target_id=du.workos_id, details={"user_id": du.user_id, "state": state, "reason": why,
                                                    "version": version.isoformat(), "sessions_revoked": revoked,
                                                    "keys_suspended": suspended})


def upsert_directory_group(ctx: EventContext, org: Organization, data: dict[str, Any], *,
                           deleted: bool = False) -> tuple[DirectoryGroup | None, bool]:
    """Apply a group snapshot (or deletion) under the version guard; returns (row, identity changed)."""
    require(data, "id", "directory_id", "name")
    version = parse_time(data.get("updated_at")) or ctx.event_time
    group = ctx.session.scalar(select(DirectoryGroup).where(DirectoryGroup.organization_id == org.id,
                                                            DirectoryGroup.workos_id == data["id"]))
    if group is not None and group.deleted_at is not None:
        return group, False
    if group is not None and group.version_at is not None and version < group.version_at and not deleted:
        return group, False
    idp_id = None if data.get("idp_id") is None else str(data["idp_id"])
    created = group is None
    if group is None:
        group = DirectoryGroup(organization_id=org.id, workos_id=data["id"], directory_id=data["directory_id"],
                               idp_id=idp_id, name=data["name"])
        ctx.session.add(group)
    before = (group.name, group.idp_id)
    if not deleted or created:
        group.name, group.idp_id, group.directory_id = data["name"], idp_id, data["directory_id"]
    group.version_at = max(version, group.version_at) if group.version_at else version
    if deleted:
        group.deleted_at = ctx.event_time
    changed = created or deleted or before != (group.name, group.idp_id)
    if changed:
        ctx.session.flush()
        action = "directory_group.deleted" if deleted else (
            "directory_group.created" if created else "directory_group.updated")
        details: dict[str, Any] = {"workos_id": group.workos_id, "name": group.name, "idp_id": group.idp_id}
        if not created and not deleted and before[0] != group.name:
            details["previous_name"] = before[0]
        ctx.record(action, organization_id=org.id, target_type="directory_group", target_id=group.workos_id,
                   details=details)
    return group, changed


def set_group_membership(ctx: EventContext, org: Organization, group_workos_id: str, user_workos_id: str,
                         present: bool, version_at: datetime, version_event_id: str | None, *,
                         existing: Any = LOOKUP) -> bool:
    """Record that a user is (not) in a group, unless a newer fact is stored; returns whether it changed.

    *existing*: the stored row (or ``None``) when the caller has already loaded it (the resync).
    """
    if existing is LOOKUP:
        row = ctx.session.scalar(select(DirectoryGroupMembership).where(
            DirectoryGroupMembership.organization_id == org.id,
            DirectoryGroupMembership.group_workos_id == group_workos_id,
            DirectoryGroupMembership.user_workos_id == user_workos_id))
    else:
        row = existing
    if row is None:
        row = DirectoryGroupMembership(organization_id=org.id, group_workos_id=group_workos_id,
                                       user_workos_id=user_workos_id, present=present, version_at=version_at,
                                       version_event_id=version_event_id)
        ctx.session.add(row)
        if existing is LOOKUP:
            ctx.session.flush()
        return True
    if row.version_at is not None:
        stored = (row.version_at, row.version_event_id or "")
        if (version_at, version_event_id or "") < stored:
            return False
    changed: bool = row.present != present
    row.present, row.version_at, row.version_event_id = present, version_at, version_event_id
    return changed
