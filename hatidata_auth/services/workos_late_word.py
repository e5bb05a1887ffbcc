"""WorkOS's word on a membership delivered after newer word: what in-order delivery would have made of it.

The inbox orders one person's events in one organization, but an event can still arrive after a newer one (WorkOS
retries, an event stored under an earlier key). :func:`~.workos_memberships.superseded` drops old news; two kinds of
old news still change the row, because in order they would have (``docs/directory-sync.md``, the
``organization_membership.*`` row; ``tests/test_membership_trust_order.py`` is their contract: any subset of a
history in any order ends as the same subset delivered in order):

- **word of a membership before the one the row took on trust** (:func:`predecessor_seen`, :func:`restart`): the
  membership the row holds was a re-add, and gets the role WorkOS named for it, else the default;
- **an older event naming a role of ours** after a newer one whose slug we do not know kept the role
  (:func:`late_named_role`, :func:`apply_late_role`).

Neither undoes a decision made here since WorkOS's word (:func:`~.workos_memberships.only_workos_since`), nor
reactivates a member removed here or deprovisioned. Functions here flush nothing and commit nothing: the caller
holds the row (``FOR UPDATE``) and records the change with its audit events.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from ..causes import Cause
from ..models import Membership, Organization
from ..roles import is_role
from . import workos_memberships as word  # the module: it imports the event handlers, which import this
from . import workos_role_push
from .provisioning import REMOVED_HERE, set_access

if TYPE_CHECKING:
    from ..workos import WorkOSClient


def predecessor_seen(membership: Membership, workos_membership_id: str) -> bool:
    """Whether WorkOS's word on *workos_membership_id*, old news by its version
    (:func:`~.workos_memberships.superseded`), is of a membership before the one *membership* took on trust (an active
    row that knew no id: :func:`~.workos_memberships.continues`): the one taken was then a re-add, and the role kept for
    it its predecessor's. Delivered in order, the predecessor's word is taken on trust instead (or its deletion
    deprovisions the row) and the re-add starts at the role WorkOS named for it, else the default; delivered after the
    re-add, it must come to the same (a break-it review: ``grant-admin``'s admin, removed and re-added at WorkOS, stayed
    an admin). Word of the id the row holds, or of one it saw deleted, is not this."""
    details = membership.details or {}
    trusted = details.get(word.TRUSTED)
    return isinstance(trusted, dict) and trusted.get("id") == membership.workos_membership_id \
        and membership.workos_membership_id != workos_membership_id \
        and workos_membership_id not in (details.get(word.DELETED_IDS) or [])


def restart(session: Session, client: WorkOSClient | None, org: Organization, membership: Membership, *,
            deleted_id: str | None, cause: Cause) -> None:
    """Apply late word of a membership before the one *membership* took on trust (:func:`predecessor_seen`; its
    id *deleted_id* when the word is its deletion): the membership the row holds is a re-add, known from now on,
    and gets the role in-order delivery would have given it (the latest of ours WorkOS named for it, else the
    organization's default) with the status WorkOS's latest word gives (never reactivating a row removed here or
    deprovisioned); unless something but WorkOS's word decided its access since (an admin here, a sign-in): that
    decision stands. Directory-managed members keep what the directory decides."""
    details = dict(membership.details or {})
    trusted = details.pop(word.TRUSTED, None) or {}
    if deleted_id is not None:
        word.note_deleted(details, deleted_id)
    membership.details = details
    if membership.source == "directory" or not word.only_workos_since(membership):
        return
    named = trusted.get("named")
    role, source = (named, "idp") if is_role(named) else (org.default_role, "default")
    set_access(session, client, membership, role=role, role_source=source, active=_workos_active(org, membership),
               cause=cause, inactive_status=_inactive_status(membership), dormant_role=True)
    word.left_by_workos(membership, trusted=None, named_at=None)


def _workos_active(org: Organization, membership: Membership) -> bool:
    """Whether WorkOS's latest word applied to *membership* lets it be active (given a role): never a row an admin
    removed here or that was deprovisioned, whatever WorkOS says (only an event or a sign-in's catch-up decides
    that, under :func:`~.workos_memberships.held_by_removal`)."""
    details = membership.details or {}
    return details.get("workos_status") == "active" and org.live and REMOVED_HERE not in details \
        and membership.status != "deprovisioned"


def _inactive_status(membership: Membership) -> str:
    return "inactive" if membership.status == "active" else str(membership.status)


def late_named_role(membership: Membership, workos_membership_id: str, version: datetime, role: Any) -> bool:
    """Whether WorkOS's event of the membership *membership* holds, older than the row's version (old news:
    :func:`~.workos_memberships.superseded`), names a role of ours (*role*) that in-order delivery would have left in
    place: no later event named one of ours (:data:`~.workos_memberships.NAMED_AT`), and since WorkOS's newer events,
    which only kept the row's role (slugs we do not know), nothing else decided it (:data:`~.workos_memberships.HELD`:
    an admin here, a sign-in). Applied late, it gives that role (a break-it review: a granted admin WorkOS made a
    developer stayed an admin when the developer event arrived after the next one, whose slug we do not know). Not for a
    row an admin removed here, nor for a deleted membership or a directory-managed member."""
    details = membership.details or {}
    seen, named_at = word.when(details.get("workos_version")), details.get(word.NAMED_AT) or {}
    later = word.when(named_at.get("at")) if named_at.get("id") == workos_membership_id else None
    decided = word.when(details.get(word.DECIDED_AT))
    # In order, a word tied with a deletion came after it and was old news (a break-it review: a re-add's created
    # in the deletion's millisecond, delivered late, made an admin).
    deleted_at = word.when(details.get(word.DELETED_AT))
    # Nor a word not newer than an admin's decision of the role here, or made while WorkOS did not have it yet
    # (a break-it review: the later of two such words held, the earlier, delivered after it, gave the role back).
    role_decided = word.when(details.get(word.ROLE_DECIDED))
    return is_role(role) and membership.source != "directory" \
        and (role_decided is None or role_decided < version) \
        and not workos_role_push.holds_role(membership, workos_membership_id) \
        and membership.workos_membership_id == workos_membership_id and seen is not None and version < seen \
        and (later is None or later < version) and word.only_workos_since(membership) \
        and (decided is None or decided < version) and (deleted_at is None or deleted_at < version) \
        and REMOVED_HERE not in details \
        and details.get("workos_status") != "deleted"


def apply_late_role(session: Session, client: WorkOSClient | None, org: Organization, membership: Membership, *,
                    version: datetime, role: str, cause: Cause) -> None:
    """Give *membership* the role of ours a late event named (:func:`late_named_role`), with the status WorkOS's
    latest word gives (held for when it is active again, when that is not active)."""
    set_access(session, client, membership, role=role, role_source="idp", active=_workos_active(org, membership),
               cause=cause, inactive_status=_inactive_status(membership), dormant_role=True)
    trusted = (membership.details or {}).get(word.TRUSTED)
    word.left_by_workos(membership, trusted={**trusted, "named": role} if isinstance(trusted, dict) else None,
                    named_at={"id": str(membership.workos_membership_id), "at": version.isoformat()})
