"""Applying WorkOS events to our state: directory users, groups and memberships, and the other event types.

Ordering rules (WorkOS does not deliver webhooks in order):

- Users and groups carry a version: the object's ``updated_at`` (falling back to the event time). An event
  older than the stored version is a no-op; an equal one re-applies the same state (idempotent).
- Deletion leaves a tombstone (``deleted_at``) that is final: WorkOS never reuses ids, so any later-arriving
  create or update for a deleted id is stale and cannot resurrect it. A delete that arrives before the
  create stores the tombstone straight away.
- Group memberships are versioned by (event time, event id) and kept even when the user or group is not
  known yet: a membership only counts once both exist, so early arrivals take effect when they can.
- A deleted directory (``dsync.deleted``) is final for its id: later events for it are ignored.

Every handler runs inside the caller's transaction (see :mod:`services.inbox`) and audits what it changes
with the WorkOS event id as ``source_event_id``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ..context import NO_REQUEST, Actor, RequestInfo
from ..models import (
    DirectoryGroup,
    DirectoryGroupMembership,
    DirectoryUser,
    Membership,
    Organization,
    User,
    new_id,
    utcnow,
)
from ..unit_of_work import invalidate_after_commit
from ..workos import WorkOSClient
from . import audit, connection_events, domains, role_mapping
from . import directory_people as people
from .domains import domain_states
from .provisioning import set_access

log = logging.getLogger(__name__)

DEPROVISIONED_STATES = ("inactive", "suspended")


class PayloadError(ValueError):
    """The event's data does not have the shape its type needs."""


def parse_time(value: Any) -> datetime | None:
    """Parse a WorkOS timestamp (``2024-01-15T09:00:00.000Z`` or ``2023-04-28 20:05:31.093``)."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value
    text = str(value).strip().replace(" ", "T", 1).replace("Z", "+00:00")
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        from datetime import UTC

        parsed = parsed.replace(tzinfo=UTC)
    return parsed


@dataclass
class EventContext:
    """One event being applied: the session, the WorkOS client, who acts and the event's identity."""

    session: Session
    client: WorkOSClient | None
    event_id: str | None
    event_type: str
    event_time: datetime
    actor: Actor = field(default_factory=Actor.workos)
    request: RequestInfo = NO_REQUEST
    outcome: str = "applied"
    note: str | None = None
    organization: Organization | None = None
    # Set by the last user upsert: whether anything that decides access (state, email, existence) or is mirrored
    # onto the person (names) changed.
    access_changed: bool = False
    _mappings: dict[str, list[role_mapping.MappingSpec]] = field(default_factory=dict)
    # Lookups already made in this unit of work (the resync preloads them a page at a time).
    users_by_email: dict[str, User | None] = field(default_factory=dict)
    memberships_by_user: dict[str, Membership | None] | None = None
    # Users this unit of work has just created and that have no membership yet (none can exist: the row is
    # not visible to any other transaction), so the membership lookup is skipped for them.
    new_user_ids: set[str] = field(default_factory=set)

    def record(self, action: str, *, organization_id: str | None, target_type: str | None = None,
               target_id: str | None = None, details: dict[str, Any] | None = None,
               outcome: str = "success") -> None:
        """Audit one change caused by this event."""
        audit.record(self.session, action=action, actor=self.actor, organization_id=organization_id,
                     target_type=target_type, target_id=target_id, outcome=outcome, request=self.request,
                     source_event_id=self.event_id, details=details)

    def mappings(self, organization_id: str) -> list[role_mapping.MappingSpec]:
        """The organization's role mappings, read once per event."""
        if organization_id not in self._mappings:
            self._mappings[organization_id] = role_mapping.list_mappings(self.session, organization_id)
        return self._mappings[organization_id]

    def ignore(self, note: str) -> None:
        """Mark the event as acknowledged but not applied."""
        self.outcome = "ignored"
        self.note = note


def _require(data: Any, *keys: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise PayloadError("data must be an object")
    missing = [k for k in keys if k not in data]
    if missing:
        raise PayloadError(f"data lacks {', '.join(missing)}")
    return data


# --- organizations ------------------------------------------------------------------------------------------


def find_organization(session: Session, workos_organization_id: str | None = None,
                      directory_id: str | None = None) -> Organization | None:
    """Our tenant for a WorkOS organization id (or, failing that, a directory id)."""
    if workos_organization_id:
        org = session.scalar(select(Organization).where(
            Organization.workos_organization_id == workos_organization_id))
        if org is not None:
            return org
    if directory_id:
        return session.scalar(select(Organization).where(Organization.directory_id == directory_id).limit(1))
    return None


def resolve_organization(ctx: EventContext, workos_organization_id: str | None,
                         directory_id: str | None = None) -> Organization | None:
    """Find the tenant; mirror it from WorkOS first if we have never seen it."""
    org = find_organization(ctx.session, workos_organization_id, directory_id)
    if org is None and workos_organization_id and ctx.client is not None:
        from ..workos import WorkOSNotFound
        from .organizations import mirror_organization

        try:
            mirror_organization(ctx.session, ctx.client, workos_organization_id, ctx.actor)
        except WorkOSNotFound:  # WorkOS does not know it: unknown here too
            return None
        org = find_organization(ctx.session, workos_organization_id, directory_id)
    ctx.organization = org
    return org


# --- directory users ------------------------------------------------------------------------------------------


def _user_fields(data: dict[str, Any]) -> dict[str, Any]:
    email = data.get("email")
    if not email:
        for item in data.get("emails") or []:
            if isinstance(item, dict) and item.get("primary") and item.get("value"):
                email = item["value"]
                break
    return {
        "directory_id": data["directory_id"],
        "idp_id": None if data.get("idp_id") is None else str(data["idp_id"]),
        "email": email.strip().lower() if isinstance(email, str) and email.strip() else None,
        "first_name": data.get("first_name"),
        "last_name": data.get("last_name"),
        "state": data.get("state") or "active",
        "attributes": data.get("custom_attributes") or {},
    }


def _directory_deleted(org: Organization, directory_id: str | None) -> bool:
    return bool(directory_id) and org.directory_id == directory_id and org.directory_state == "deleted"


_LOOKUP: Any = object()  # "look the row up" (the default), as opposed to a row (or None) the caller preloaded


def _insert_dialect(session: Session) -> Any:
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def _locked_directory_user(ctx: EventContext, org: Organization, workos_id: str) -> DirectoryUser | None:
    # FOR UPDATE: concurrent events for one user are applied one after the other, so the version guard
    # compares against the committed state (no lost update when two workers race).
    return ctx.session.scalar(select(DirectoryUser).where(DirectoryUser.organization_id == org.id,
                                                         DirectoryUser.workos_id == workos_id).with_for_update())


def _audit_directory_user(ctx: EventContext, org: Organization, du: DirectoryUser, action: str,
                          changed_fields: list[str] | None = None) -> None:
    details: dict[str, Any] = {"workos_id": du.workos_id, "email": du.email, "state": du.state}
    if changed_fields is not None:
        details["changed"] = changed_fields
    ctx.record(action, organization_id=org.id, target_type="directory_user", target_id=du.workos_id,
               details=details)


def upsert_directory_user(ctx: EventContext, org: Organization, data: dict[str, Any], *,  # noqa: C901 - moves to services/events/ (issue #12, item 2)
                          deleted: bool = False, existing: Any = _LOOKUP,
                          known_absent: bool = False) -> tuple[DirectoryUser | None, bool]:
    """Apply a user snapshot (or a deletion) under the version guard; returns (row, changed).

    *existing*: the stored row (or ``None``) when the caller has already loaded it (the resync does, a page
    at a time); otherwise the row is read with ``FOR UPDATE`` and a new one is inserted with
    ``ON CONFLICT DO NOTHING`` (a concurrent first event for the same user wins, this one then applies after it).
    *known_absent*: this transaction has just looked the row up (with ``FOR UPDATE``) and found none, so the
    insert is tried straight away (a concurrent insert since then is handled by the conflict path).
    """
    _require(data, "id", "directory_id")
    version = parse_time(data.get("updated_at")) or ctx.event_time
    fields = _user_fields(data)
    if existing is _LOOKUP:
        du = None if known_absent else _locked_directory_user(ctx, org, data["id"])
        if du is None:
            values = {**fields, "organization_id": org.id, "workos_id": data["id"], "version_at": version,
                      "deleted_at": ctx.event_time if deleted else None}
            stmt = (_insert_dialect(ctx.session)(DirectoryUser).values(id=new_id("du"), **values)
                    .on_conflict_do_nothing(index_elements=["organization_id", "workos_id"])
                    .returning(DirectoryUser))
            du = ctx.session.scalars(stmt).first()
            if du is not None:
                ctx.access_changed = True
                _audit_directory_user(ctx, org, du, "directory_user.deleted" if deleted else "directory_user.created")
                return du, True
            du = _locked_directory_user(ctx, org, data["id"])  # created concurrently: apply on top of it
    else:
        du = existing
    if du is not None and du.deleted_at is not None:
        return du, False  # tombstone: never resurrected
    if du is not None and du.version_at is not None and version < du.version_at and not deleted:
        return du, False  # stale
    created = du is None
    if du is None:
        du = DirectoryUser(id=new_id("du"), organization_id=org.id, workos_id=data["id"], **fields)
        ctx.session.add(du)
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
    ctx.access_changed = created or deleted or any(before.get(k) != getattr(du, k)
                                                   for k in ("state", *people.PERSON_FIELDS))
    if changed:
        action = "directory_user.deleted" if deleted else (
            "directory_user.created" if created else "directory_user.updated")
        _audit_directory_user(ctx, org, du, action, None if created or deleted else changed_fields)
    return du, changed


def sync_member(ctx: EventContext, org: Organization, du: DirectoryUser, *, reason: str,  # noqa: C901 - moves to services/events/ (issue #12, item 2)
                groups: list[role_mapping.GroupRef] | None = None, repair_split: bool = False) -> None:
    """Bring the directory user's membership in line: provision, recompute the role, or deprovision; mirror
    the person (:mod:`services.directory_people`).

    *groups*: the user's live groups when the caller knows them (the resync); read from the database otherwise.
    *repair_split*: look for other memberships hanging on the directory user even in a batched unit of work.
    """
    session = ctx.session
    wants_access = (du.deleted_at is None and du.state == "active" and org.status == "active"
                    and not _directory_deleted(org, du.directory_id))
    refused: str | None = None
    if wants_access and du.email and domains.foreign_owner(session, org.id, du.email) is not None:
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
               actor=ctx.actor, reason=reason, source_event_id=ctx.event_id, request=ctx.request,
               details={"directory_user_id": du.workos_id, **role_mapping._decision_details(decision)})
    # A batched unit of work (the resync) checks for splits only where it found one or the person changed.
    if repair_split or link.relinked or ctx.memberships_by_user is None:
        people.retire_other_memberships(ctx, org, du, keep=membership)
    if link.freed_email:
        for waiting in people.waiting_for(ctx, org, du, link.freed_email):
            sync_member(ctx, org, waiting, reason="email_freed")


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
                   actor=ctx.actor, reason=why, source_event_id=ctx.event_id, request=ctx.request,
                   details={"directory_user_id": du.workos_id})
    keep = next((m for m in held if m.user_id == du.user_id), None) if len(held) > 1 else None
    if keep is not None:  # a split: the directory user keeps its person's membership only
        people.retire_other_memberships(ctx, org, du, keep=keep)


# --- directory groups -------------------------------------------------------------------------------------------


def upsert_directory_group(ctx: EventContext, org: Organization, data: dict[str, Any], *,
                           deleted: bool = False) -> tuple[DirectoryGroup | None, bool]:
    """Apply a group snapshot (or deletion) under the version guard; returns (row, identity changed)."""
    _require(data, "id", "directory_id", "name")
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


def _resync_group_members(ctx: EventContext, org: Organization, group_workos_id: str, reason: str) -> None:
    user_ids = list(ctx.session.scalars(select(DirectoryGroupMembership.user_workos_id).where(
        DirectoryGroupMembership.organization_id == org.id,
        DirectoryGroupMembership.group_workos_id == group_workos_id,
        DirectoryGroupMembership.present.is_(True))))
    if not user_ids:
        return
    users = ctx.session.scalars(select(DirectoryUser).where(DirectoryUser.organization_id == org.id,
                                                            DirectoryUser.workos_id.in_(user_ids)))
    for du in users:
        sync_member(ctx, org, du, reason=reason)


def set_group_membership(ctx: EventContext, org: Organization, group_workos_id: str, user_workos_id: str,
                         present: bool, version_at: datetime, version_event_id: str | None, *,
                         existing: Any = _LOOKUP) -> bool:
    """Record that a user is (not) in a group, unless a newer fact is stored; returns whether it changed.

    *existing*: the stored row (or ``None``) when the caller has already loaded it (the resync).
    """
    if existing is _LOOKUP:
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
        if existing is _LOOKUP:
            ctx.session.flush()
        return True
    if row.version_at is not None:
        stored = (row.version_at, row.version_event_id or "")
        if (version_at, version_event_id or "") < stored:
            return False
    changed = row.present != present
    row.present, row.version_at, row.version_event_id = present, version_at, version_event_id
    return changed


# --- handlers -----------------------------------------------------------------------------------------------------


Handler = Callable[[EventContext, dict[str, Any]], None]


def _dsync_org(ctx: EventContext, data: dict[str, Any]) -> Organization | None:
    org = resolve_organization(ctx, data.get("organization_id"), data.get("directory_id"))
    if org is None:
        ctx.ignore("unknown organization")
        return None
    if _directory_deleted(org, data.get("directory_id")):
        ctx.ignore("directory deleted")
        return None
    return org


def _org_and_locked_user(ctx: EventContext, data: dict[str, Any]) -> tuple[Organization, DirectoryUser] | None:
    """The tenant and its stored directory user, the user row locked, in one statement (``None`` when either
    is not stored yet: the caller then takes the general path)."""
    workos_org_id = data.get("organization_id")
    if not workos_org_id:
        return None
    row = ctx.session.execute(
        select(Organization, DirectoryUser)
        .join(DirectoryUser, DirectoryUser.organization_id == Organization.id)
        .where(Organization.workos_organization_id == workos_org_id, DirectoryUser.workos_id == data["id"])
        .with_for_update(of=DirectoryUser)
    ).first()
    return None if row is None else (row[0], row[1])


def on_user_upsert(ctx: EventContext, data: dict[str, Any]) -> None:
    """``dsync.user.created`` / ``dsync.user.updated``."""
    _require(data, "id", "directory_id", "state")
    found = _org_and_locked_user(ctx, data)
    if found is not None:  # the common case, an update of a known user: one round trip for both rows
        org, existing = found
        ctx.organization = org
        if _directory_deleted(org, data.get("directory_id")):
            ctx.ignore("directory deleted")
            return
        du, changed = upsert_directory_user(ctx, org, data, existing=existing)
    else:
        org_or_none = _dsync_org(ctx, data)
        if org_or_none is None:
            return
        org = org_or_none
        # The joined lookup above found no such user in the organization with this WorkOS id: skip looking again.
        known_absent = bool(data.get("organization_id")) and org.workos_organization_id == data["organization_id"]
        du, changed = upsert_directory_user(ctx, org, data, known_absent=known_absent)
    if du is not None and changed and ctx.access_changed:  # a name change alone needs no access work
        sync_member(ctx, org, du, reason=ctx.event_type)


def on_user_deleted(ctx: EventContext, data: dict[str, Any]) -> None:
    """``dsync.user.deleted``: tombstone and deprovision."""
    _require(data, "id", "directory_id")
    org = _dsync_org(ctx, data)
    if org is None:
        return
    du, changed = upsert_directory_user(ctx, org, data, deleted=True)
    if du is not None and changed:
        sync_member(ctx, org, du, reason="directory_user_deleted")


def on_group_upsert(ctx: EventContext, data: dict[str, Any]) -> None:
    """``dsync.group.created`` / ``dsync.group.updated`` (a rename recomputes every member's role)."""
    org = _dsync_org(ctx, _require(data, "id", "directory_id", "name"))
    if org is None:
        return
    group, changed = upsert_directory_group(ctx, org, data)
    if group is not None and changed:
        _resync_group_members(ctx, org, group.workos_id, reason=ctx.event_type)


def on_group_deleted(ctx: EventContext, data: dict[str, Any]) -> None:
    """``dsync.group.deleted``: tombstone; members lose what the group gave them."""
    org = _dsync_org(ctx, _require(data, "id", "directory_id", "name"))
    if org is None:
        return
    group, changed = upsert_directory_group(ctx, org, data, deleted=True)
    if group is not None and changed:
        _resync_group_members(ctx, org, group.workos_id, reason="directory_group_deleted")


def on_group_membership(ctx: EventContext, data: dict[str, Any]) -> None:
    """``dsync.group.user_added`` / ``dsync.group.user_removed``."""
    _require(data, "user", "group")
    user, group = _require(data["user"], "id", "directory_id"), _require(data["group"], "id", "directory_id", "name")
    org = _dsync_org(ctx, {"organization_id": user.get("organization_id") or group.get("organization_id"),
                           "directory_id": data.get("directory_id") or group["directory_id"]})
    if org is None:
        return
    # The embedded snapshots are full objects: apply them under the same version guard.
    du, _ = upsert_directory_user(ctx, org, user) if "state" in user else (None, False)
    group_row, group_changed = upsert_directory_group(ctx, org, group)
    if group_row is not None and group_changed:
        # The snapshot may carry a rename whose own dsync.group.updated has not arrived yet.
        _resync_group_members(ctx, org, group_row.workos_id, reason="dsync.group.updated")
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


def on_directory_activated(ctx: EventContext, data: dict[str, Any]) -> None:
    """``dsync.activated``: the organization's directory is linked."""
    _require(data, "id")
    org = resolve_organization(ctx, data.get("organization_id"), data["id"])
    if org is None:
        ctx.ignore("unknown organization")
        return
    if _directory_deleted(org, data["id"]):
        ctx.ignore("directory deleted")
        return
    before = (org.directory_id, org.directory_state, org.directory_type)
    org.directory_id, org.directory_state = data["id"], "linked"
    org.directory_type = data.get("type") or org.directory_type
    if before != (org.directory_id, org.directory_state, org.directory_type):
        ctx.record("directory.activated", organization_id=org.id, target_type="directory", target_id=data["id"],
                   details={"type": org.directory_type, "name": data.get("name")})


def on_directory_deleted(ctx: EventContext, data: dict[str, Any]) -> None:
    """``dsync.deleted``: one event for the whole directory; deactivate everything it owned."""
    _require(data, "id")
    directory_id = data["id"]
    org = resolve_organization(ctx, data.get("organization_id"), directory_id)
    if org is None:
        ctx.ignore("unknown organization")
        return
    now = ctx.event_time
    users = list(ctx.session.scalars(select(DirectoryUser).where(
        DirectoryUser.organization_id == org.id, DirectoryUser.directory_id == directory_id,
        DirectoryUser.deleted_at.is_(None))))
    if org.directory_id in (None, directory_id):
        org.directory_id, org.directory_state = directory_id, "deleted"
    for du in users:
        du.deleted_at = now
        sync_member(ctx, org, du, reason="directory_deleted")
    groups = ctx.session.execute(update(DirectoryGroup).where(
        DirectoryGroup.organization_id == org.id, DirectoryGroup.directory_id == directory_id,
        DirectoryGroup.deleted_at.is_(None)).values(deleted_at=now))
    ctx.record("directory.deleted", organization_id=org.id, target_type="directory", target_id=directory_id,
               details={"users_deactivated": len(users), "groups_deleted": int(getattr(groups, "rowcount", 0))})


def on_organization_updated(ctx: EventContext, data: dict[str, Any]) -> None:
    """``organization.updated``: name and domains (version-guarded by ``updated_at``)."""
    _require(data, "id", "name")
    org = find_organization(ctx.session, data["id"])
    if org is None:
        resolve_organization(ctx, data["id"])
        return
    version = parse_time(data.get("updated_at")) or ctx.event_time
    if org.workos_updated_at is not None and version < org.workos_updated_at:
        return
    if org.status == "deleted":
        ctx.ignore("organization deleted")
        return
    domains = sorted(str(d.get("domain") if isinstance(d, dict) else d) for d in data.get("domains") or [])
    changed = {}
    if org.name != data["name"]:
        changed["name"] = [org.name, data["name"]]
        org.name = data["name"]
    if "domains" in data and org.domains != domains:
        changed["domains"] = [org.domains, domains]
        org.domains = domains
    states = domain_states(data.get("domains"))
    if "domains" in data and (org.domain_states or {}) != states:
        changed["domain_states"] = [org.domain_states, states]
        org.domain_states = states
    org.workos_updated_at = version
    if changed:
        ctx.record("organization.updated", organization_id=org.id, target_type="organization", target_id=org.id,
                   details={"changed": changed})


def on_organization_deleted(ctx: EventContext, data: dict[str, Any]) -> None:
    """``organization.deleted``: the tenant loses all access."""
    _require(data, "id")
    org = find_organization(ctx.session, data["id"])
    if org is None:
        ctx.ignore("unknown organization")
        return
    if org.status == "deleted":
        return
    org.status = "deleted"
    org.deleted_at = ctx.event_time
    members = list(ctx.session.scalars(select(Membership).where(Membership.organization_id == org.id,
                                                                Membership.status == "active")))
    for membership in members:
        set_access(ctx.session, ctx.client, membership, role=None, role_source=membership.role_source,
                   active=False, actor=ctx.actor, reason="organization_deleted", source_event_id=ctx.event_id,
                   request=ctx.request)
    ctx.record("organization.deleted", organization_id=org.id, target_type="organization", target_id=org.id,
               details={"memberships_deprovisioned": len(members)})


def _user_by_workos_id(ctx: EventContext, workos_user_id: str, organization_id: str) -> User | None:
    user = ctx.session.scalar(select(User).where(User.workos_user_id == workos_user_id))
    if user is not None or ctx.client is None:
        return user
    remote = ctx.client.user_management.get_user(workos_user_id)
    email = str(remote.email).strip().lower()
    user = None
    if domains.foreign_owner(ctx.session, organization_id, email) is None:  # email links only on own domains
        user = ctx.session.scalar(select(User).where(User.email == email).order_by(User.created_at).limit(1))
    if user is None:
        user = User(email=email, first_name=remote.first_name, last_name=remote.last_name)
        ctx.session.add(user)
    if user.workos_user_id is None:
        user.workos_user_id = workos_user_id
    ctx.session.flush()
    return user


def on_organization_membership(ctx: EventContext, data: dict[str, Any]) -> None:
    """``organization_membership.created|updated|deleted``: changes made on the WorkOS side."""
    _require(data, "id", "user_id", "organization_id")
    org = resolve_organization(ctx, data["organization_id"])
    if org is None:
        ctx.ignore("unknown organization")
        return
    user = _user_by_workos_id(ctx, data["user_id"], org.id)
    if user is None:
        ctx.ignore("unknown user")
        return
    membership = ctx.session.scalar(select(Membership).where(Membership.organization_id == org.id,
                                                             Membership.user_id == user.id))
    role = (data.get("role") or {}).get("slug") if isinstance(data.get("role"), dict) else None
    version = parse_time(data.get("updated_at")) or ctx.event_time
    if membership is not None:
        seen = parse_time((membership.details or {}).get("workos_version"))
        if seen is not None and version < seen:
            return
    deleted = ctx.event_type.endswith("deleted")
    if membership is None:
        if deleted:
            return
        membership = Membership(organization_id=org.id, user_id=user.id, role=None, role_source="idp",
                                source="sso", status="pending", workos_membership_id=data["id"])
        ctx.session.add(membership)
        ctx.session.flush()
    membership.workos_membership_id = None if deleted else data["id"]
    membership.details = {**(membership.details or {}), "workos_version": version.isoformat(),
                          "workos_status": "deleted" if deleted else data.get("status")}
    ctx.record(f"workos.{ctx.event_type}", organization_id=org.id, target_type="membership",
               target_id=membership.id, details={"user_id": user.id, "role": role, "status": data.get("status"),
                                                 "directory_managed": data.get("directory_managed")})
    if membership.source == "directory":
        return  # the directory and our mappings decide directory-managed members (documented overwrite rule)
    active = not deleted and data.get("status", "active") == "active" and org.status == "active"
    if role not in role_mapping.ROLE_RANK:
        role = membership.role or org.default_role
    set_access(ctx.session, ctx.client, membership, role=role, role_source="idp", active=active,
               actor=ctx.actor, reason=ctx.event_type, source_event_id=ctx.event_id, request=ctx.request,
               inactive_status="deprovisioned" if deleted else "inactive")


def on_session_revoked(ctx: EventContext, data: dict[str, Any]) -> None:
    """``session.revoked``: revoke our record and evict it from the cache (no call back to WorkOS)."""
    from . import sessions as sessions_service

    _require(data, "id")
    done = bool(sessions_service.revoke_by_workos_session_id(
        ctx.session, ctx.client, workos_session_id=data["id"], actor=ctx.actor, reason="revoked_at_workos",
        source_event_id=ctx.event_id, call_workos=False))
    invalidate_after_commit(ctx.session, "session", str(data["id"]))
    if not done:
        ctx.note = "no live local session"


def on_authentication(ctx: EventContext, data: dict[str, Any]) -> None:
    """``authentication.*``: record in the audit log with the source details."""
    if not isinstance(data, dict):
        raise PayloadError("data must be an object")
    org_id: str | None = None
    sso: dict[str, Any] = data["sso"] if isinstance(data.get("sso"), dict) else {}
    workos_org_id = data.get("organization_id") or sso.get("organization_id")
    if workos_org_id:
        org = find_organization(ctx.session, str(workos_org_id))
        org_id = org.id if org else None
    user_id = None
    if data.get("user_id"):
        user = ctx.session.scalar(select(User).where(User.workos_user_id == data["user_id"]))
        user_id = user.id if user else None
        if org_id is None and user is not None:
            orgs = list(ctx.session.scalars(select(Membership.organization_id).where(
                Membership.user_id == user.id, Membership.status == "active").limit(2)))
            org_id = orgs[0] if len(orgs) == 1 else None
    failed = ctx.event_type.endswith(("_failed", "_timed_out", "radar_risk_detected")) or \
        data.get("status") == "failed"
    error = data.get("error") if isinstance(data.get("error"), dict) else None
    ctx.record(ctx.event_type, organization_id=org_id, target_type="user" if user_id else None, target_id=user_id,
               outcome="failure" if failed else "success",
               details={"type": data.get("type"), "status": data.get("status"), "email": data.get("email"),
                        "ip_address": data.get("ip_address"), "user_agent": data.get("user_agent"),
                        "workos_user_id": data.get("user_id"), "error": error,
                        "connection_id": sso.get("connection_id"), "workos_session_id": sso.get("session_id")})


# Every authentication event type WorkOS documents (spec 0.61.0, SDK 10.6 ``EventSchema``), named one by one:
# the Events API filters by exact type, so a type missing here is neither polled nor applied.
AUTHENTICATION_EVENT_TYPES: tuple[str, ...] = (
    "authentication.email_verification_failed", "authentication.email_verification_succeeded",
    "authentication.magic_auth_failed", "authentication.magic_auth_succeeded",
    "authentication.mfa_failed", "authentication.mfa_succeeded",
    "authentication.oauth_failed", "authentication.oauth_succeeded",
    "authentication.passkey_failed", "authentication.passkey_succeeded",
    "authentication.password_failed", "authentication.password_succeeded",
    "authentication.radar_risk_detected", "authentication.reauthentication_succeeded",
    "authentication.sso_failed", "authentication.sso_started", "authentication.sso_succeeded",
    "authentication.sso_timed_out",
)

HANDLERS: dict[str, Handler] = {
    "dsync.activated": on_directory_activated,
    "dsync.deleted": on_directory_deleted,
    "dsync.user.created": on_user_upsert,
    "dsync.user.updated": on_user_upsert,
    "dsync.user.deleted": on_user_deleted,
    "dsync.group.created": on_group_upsert,
    "dsync.group.updated": on_group_upsert,
    "dsync.group.deleted": on_group_deleted,
    "dsync.group.user_added": on_group_membership,
    "dsync.group.user_removed": on_group_membership,
    **connection_events.HANDLERS,
    "organization.updated": on_organization_updated,
    "organization.deleted": on_organization_deleted,
    "organization_membership.created": on_organization_membership,
    "organization_membership.updated": on_organization_membership,
    "organization_membership.deleted": on_organization_membership,
    "session.revoked": on_session_revoked,
    **dict.fromkeys(AUTHENTICATION_EVENT_TYPES, on_authentication),
}


def handler_for(event_type: str) -> Handler | None:
    """The handler of an event type, or ``None`` when the type is stored and ignored."""
    return HANDLERS.get(event_type)


def handled_event_types() -> list[str]:
    """The Events API filter: every type we apply, each named exactly (WorkOS documents no wildcards)."""
    return list(HANDLERS)


def now() -> datetime:
    """The current time (a seam for the clock)."""
    return utcnow()
