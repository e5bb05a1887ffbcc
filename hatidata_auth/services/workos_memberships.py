"""WorkOS's word on a person's membership of an organization, and what an admin's removal here keeps from it.

Rules (``docs/directory-sync.md``, the ``organization_membership.*`` row of the events table):

- **The newest word decides** (:func:`superseded`). WorkOS's ``organization_membership.*`` events carry the
  membership's ``updated_at``; the row keeps the newest it applied (``details.workos_version``) and the WorkOS ids it
  saw deleted (``details.workos_deleted_ids``: WorkOS gives a member it adds again a new id, so news of a deleted id
  is old news). A deletion's payload is the membership as it was, so it wins a tie with the event it ends.
- **An admin's removal here holds against every membership WorkOS had made before it** (:func:`remove_here`,
  :func:`held_by_removal`): WorkOS's later changes of one (a role change, a late ``created``, a listing at a
  sign-in) do not bring the person back. A membership WorkOS creates after the removal (it re-added the person) is a
  new decision and is applied, as is an admin here making them a member again. The removal's time is ours and the
  membership's ``created_at`` WorkOS's (clocks a few milliseconds apart at most, in practice); the removed id, when
  the row knows it, is held whatever the clocks say.
- **A sign-in is not refused on old news** (:func:`caught_up`): a row WorkOS's events made inactive is brought up to
  what WorkOS says now when it is newer (a re-added member signing in before the ``created`` event is applied).
  The rules above decide it, as they would decide the event: nothing an event could not do.

Functions here flush nothing and commit nothing: the caller's transaction holds the row (``FOR UPDATE``) and
records the change with its audit events.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from ..causes import Cause
from ..models import Membership, Organization, User
from ..roles import is_role
from ..workos import WorkOSFailure, translate_errors
from .events.context import parse_time
from .provisioning import REMOVED_HERE, set_access

if TYPE_CHECKING:
    from ..workos import WorkOSClient

log = logging.getLogger(__name__)

DELETED_IDS = "workos_deleted_ids"
KEPT_DELETED_IDS = 20
"""The WorkOS membership ids a row has seen deleted (the newest last, at most this many)."""


def superseded(membership: Membership, workos_membership_id: str, version: datetime, *, deleted: bool) -> bool:
    """Whether what *membership* holds is newer than WorkOS's word (an event's, or WorkOS's present list's) of
    *workos_membership_id* at *version* (its ``updated_at``): an older version; an equal one the row holds as a
    deletion, for a ``created``/``updated``; or a ``created``/``updated`` of a membership id the row saw deleted."""
    details = membership.details or {}
    if not deleted and workos_membership_id in (details.get(DELETED_IDS) or []):
        return True
    seen = parse_time(details.get("workos_version"))
    if seen is None or version > seen:
        return False
    return version < seen or (not deleted and details.get("workos_status") == "deleted")


def held_by_removal(membership: Membership, workos_membership_id: str, created_at: datetime | None) -> bool:
    """Whether an admin's removal here holds against WorkOS's word of *workos_membership_id* (created at
    *created_at*, WorkOS's ``created_at``): the membership existed when the admin removed the person (or is the one
    removed, or its creation time is unknown). A deletion is never held (it takes access, it gives none)."""
    mark = (membership.details or {}).get(REMOVED_HERE)
    if not isinstance(mark, dict):
        return False
    removed_at = parse_time(mark.get("at"))
    return (workos_membership_id == mark.get("id") or created_at is None or removed_at is None
            or created_at <= removed_at)


def apply(session: Session, client: WorkOSClient | None, org: Organization, membership: Membership, *,
          workos_membership_id: str, version: datetime, status: str | None, role: Any, deleted: bool,
          cause: Cause, audit_details: dict[str, Any] | None = None) -> None:
    """Record WorkOS's word (not :func:`superseded`: the caller checked) on *membership* and give it the access it
    grants: a deletion deprovisions, any other status than ``active`` deactivates, ``active`` in an active
    organization reactivates with WorkOS's role (a role we do not know keeps the member's, else the organization's
    default). Directory-managed members keep what the directory and our mappings decide; only the record changes."""
    details = {**(membership.details or {}), "workos_version": version.isoformat(),
               "workos_status": "deleted" if deleted else status}
    if deleted:
        details[DELETED_IDS] = [*(details.get(DELETED_IDS) or [])[-(KEPT_DELETED_IDS - 1):], workos_membership_id]
    membership.workos_membership_id = None if deleted else workos_membership_id
    membership.details = details
    if membership.source == "directory":
        return
    active = not deleted and (status or "active") == "active" and org.status == "active"
    if not is_role(role):
        role = membership.role or org.default_role
    set_access(session, client, membership, role=role, role_source="idp", active=active, cause=cause,
               inactive_status="deprovisioned" if deleted else "inactive", details=audit_details)


def remove_here(membership: Membership, *, now: datetime) -> None:
    """Mark an admin's removal of *membership* at *now* (before its ``set_access``; again when the member was
    deprovisioned already: the admin's decision is the newest): WorkOS's later word on a membership it had made by
    then does not bring the person back (:func:`held_by_removal`). Cleared when the member is active again."""
    membership.details = {**(membership.details or {}),
                          REMOVED_HERE: {"at": now.isoformat(), "id": membership.workos_membership_id}}


def caught_up(session: Session, client: WorkOSClient | None, org: Organization, person: User,
              membership: Membership, *, cause: Cause) -> bool:
    """At a sign-in, bring a *membership* WorkOS's events left inactive up to WorkOS's present word; returns
    whether it is active now. *membership* is held (``FOR UPDATE``) by the caller.

    Asks WorkOS (one list call) only for a row the directory does not manage and whose status WorkOS's word can
    answer (:func:`_answerable`). WorkOS unreachable, or nothing newer: the row is left as it is (the sign-in is
    refused, as before)."""
    if (membership.status == "active" or membership.source == "directory" or client is None
            or not person.workos_user_id or not org.workos_organization_id or not _answerable(membership)):
        return membership.status == "active"
    try:
        listed = _active_memberships(client, person.workos_user_id, org.workos_organization_id)
    except WorkOSFailure as failure:
        log.warning("could not ask WorkOS for the memberships of %s: %s", person.id, failure)
        return False
    for item in listed:
        caught = from_listing(session, client, org, membership, item, cause=cause)
        if caught:
            return True
    return False


def from_listing(session: Session, client: WorkOSClient | None, org: Organization, membership: Membership, item: Any,
                 *, cause: Cause) -> bool:
    """Apply WorkOS's listed membership *item* (an SDK ``OrganizationMembership``) to *membership* (held) when it is
    active, newer than what the row holds from WorkOS's events, not held by an admin's removal here, WorkOS's to
    answer (:func:`_answerable`), and *org* is active (nothing to give back otherwise); returns whether it was
    applied."""
    version = parse_time(getattr(item, "updated_at", None))
    seen = parse_time((membership.details or {}).get("workos_version"))
    # Newer news only: an equal version is what the row already holds (an admin's removal may have followed it).
    if (version is None or org.status != "active" or not _answerable(membership)
            or (seen is not None and version <= seen) or getattr(item, "status", None) != "active"
            or superseded(membership, item.id, version, deleted=False)
            or held_by_removal(membership, item.id, parse_time(getattr(item, "created_at", None)))):
        return False
    slug = getattr(getattr(item, "role", None), "slug", None)
    apply(session, client, org, membership, workos_membership_id=item.id, version=version, status="active",
          role=slug, deleted=False, cause=cause.with_reason("workos_membership_active"),
          audit_details={"workos_membership_id": item.id, "workos_version": version.isoformat()})
    return True


def _answerable(membership: Membership) -> bool:
    """Whether WorkOS's present word can answer what left *membership* inactive: WorkOS's events (the row holds a
    version of theirs), or an admin's removal (a membership WorkOS made since is a new decision). Any other (a
    directory's, an organization's deletion) is not WorkOS's to undo."""
    details = membership.details or {}
    return parse_time(details.get("workos_version")) is not None or isinstance(details.get(REMOVED_HERE), dict)


@translate_errors()
def _active_memberships(client: WorkOSClient, workos_user_id: str, workos_organization_id: str) -> list[Any]:
    """WorkOS's active memberships of the person in the organization (one at most, in WorkOS's model)."""
    listed = client.organization_membership.list_organization_memberships(
        user_id=workos_user_id, organization_id=workos_organization_id, statuses=["active"], limit=10)
    return list(listed.data)
