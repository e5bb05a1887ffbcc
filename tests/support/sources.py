"""Helpers for the event-source tests: the emulator's directories, payloads of every directory event type, and
a digest of one organization's state."""

from __future__ import annotations

import itertools
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hatidata_auth.models import (
    AuditEvent,
    DirectoryGroup,
    DirectoryGroupMembership,
    DirectoryUser,
    KnownDirectory,
    Membership,
    Organization,
    User,
)
from hatidata_auth.services.event_source import is_directory_event
from hatidata_auth.services.events import HANDLERS
from tests.support.servers import EmulatorControl, http_json

# Every directory event type we apply, from the dispatch table: a new type is covered (or fails) by itself.
DIRECTORY_EVENT_TYPES = sorted(t for t in HANDLERS if is_directory_event(t))
_serial = itertools.count(1)


def api_get(control: EmulatorControl, path: str) -> Any:
    """A WorkOS REST read (the emulator's public API, with the test API key)."""
    status, body = http_json("GET", f"{control.base_url}{path}", None, control.headers)
    assert status == 200, body
    return body


def directory_of(control: EmulatorControl, workos_org_id: str) -> dict[str, Any]:
    """The organization's (first) live directory at WorkOS."""
    return dict(api_get(control, f"/directories?organization_id={workos_org_id}&limit=10")["data"][0])


def directory_objects(control: EmulatorControl, directory_id: str) -> tuple[list[dict[str, Any]],
                                                                             list[dict[str, Any]]]:
    """The directory's users (with ``groups``) and groups at WorkOS."""
    users = api_get(control, f"/directory_users?directory={directory_id}&limit=100")["data"]
    groups = api_get(control, f"/directory_groups?directory={directory_id}&limit=100")["data"]
    return list(users), list(groups)


def event(event_type: str, data: dict[str, Any], created_at: str = "2031-05-05T10:00:00.000Z") -> dict[str, Any]:
    """A WorkOS event envelope with a fresh id."""
    return {"object": "event", "id": f"event_SRC{next(_serial):06d}", "event": event_type, "data": data,
            "created_at": created_at}


def payload_for(event_type: str, *, directory: dict[str, Any], user: dict[str, Any], group: dict[str, Any],
                organization_id: str) -> dict[str, Any]:
    """The data of *event_type* for an object of *directory*, naming *organization_id* (maybe not its own).

    The user is given a new id and email so that applying it would create something. Fails for a directory
    event type this helper does not know yet: add it here.
    """
    n = next(_serial)
    user = {k: v for k, v in user.items() if k != "groups"}
    user.update(id=f"directory_user_SRC{n:06d}", email=f"src{n}@source.test", organization_id=organization_id,
                directory_id=directory["id"], state="active")
    group = {**group, "organization_id": organization_id, "directory_id": directory["id"]}
    dir_event = {"object": "directory", "id": directory["id"], "organization_id": organization_id,
                 "type": directory["type"], "name": directory["name"], "created_at": directory["created_at"],
                 "updated_at": "2031-05-05T10:00:00.000Z"}
    if event_type == "dsync.activated":
        return {**dir_event, "state": "active", "external_key": directory.get("external_key") or "key",
                "domains": []}
    if event_type == "dsync.deleted":
        return {**dir_event, "state": "deleting"}
    if event_type.startswith("dsync.user."):
        return user
    if event_type.startswith("dsync.group.user_"):
        return {"directory_id": directory["id"], "user": user, "group": group}
    if event_type.startswith("dsync.group."):
        return group
    raise AssertionError(f"no payload for the directory event type {event_type}: add one to payload_for")


def org_state(session: Session, org: Organization) -> dict[str, Any]:
    """Every row of the organization's tenant tables that directory events may change, and its audit count."""
    session.expire_all()
    oid = org.id
    rows: dict[str, Any] = {
        "org": tuple(session.execute(select(Organization.directory_id, Organization.directory_state,
                                      Organization.directory_type, Organization.status)
                               .where(Organization.id == oid)).one()),
        "users": sorted((u.workos_id, u.directory_id, u.email, u.state, u.deleted_at is None)
                        for u in session.scalars(select(DirectoryUser).where(DirectoryUser.organization_id == oid))),
        "groups": sorted((g.workos_id, g.name, g.deleted_at is None) for g in session.scalars(
            select(DirectoryGroup).where(DirectoryGroup.organization_id == oid))),
        "group_members": sorted((m.group_workos_id, m.user_workos_id, m.present) for m in session.scalars(
            select(DirectoryGroupMembership).where(DirectoryGroupMembership.organization_id == oid))),
        "members": sorted((m.user_id, m.role, m.status, m.directory_user_id) for m in session.scalars(
            select(Membership).where(Membership.organization_id == oid))),
        "known": sorted((k.directory_id, k.deleted_at is None) for k in session.scalars(
            select(KnownDirectory).where(KnownDirectory.organization_id == oid))),
        "audit": len(session.scalars(select(AuditEvent.id).where(AuditEvent.organization_id == oid)).all()),
        "people": len(session.scalars(select(User.id)).all()),
    }
    session.rollback()
    return rows


def active_members(session: Session, org: Organization) -> set[str]:
    """Emails of the organization's active directory-managed members."""
    session.expire_all()
    emails = set(session.scalars(select(User.email).join(Membership, Membership.user_id == User.id).where(
        Membership.organization_id == org.id, Membership.status == "active", Membership.source == "directory")))
    session.rollback()
    return emails
