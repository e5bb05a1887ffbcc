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
  membership's ``created_at`` WorkOS's: one created up to :data:`CLOCK_TOLERANCE` after the removal is held too;
  the removed id, when the row knows it, is held whatever the clocks say. Removals made before the mark existed
  are marked by migration 0023.
- **A sign-in is not refused on old news** (:func:`listing_for_sign_in`, :func:`caught_up`): a row WorkOS's events
  (or an admin's removal) left inactive is brought up to what WorkOS says now when it is newer (a re-added member
  signing in before the ``created`` event is applied). The rules above decide it, as they would decide the event:
  nothing an event could not do.
- **Old news that in-order delivery would have applied** (a re-add's word before its predecessor's, an older event
  naming a role of ours) is :mod:`~.workos_late_word`'s; the records it reads are kept here (:func:`apply`,
  :func:`left_by_workos`).

Functions here flush nothing and commit nothing: the caller's transaction holds the row (``FOR UPDATE``) and
records the change with its audit events.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..causes import Cause
from ..models import Membership, Organization, User
from ..roles import is_role
from ..workos import WorkOSFailure, translate_errors
from . import workos_role_push
from .events import context as events_context
from .events.context import parse_time
from .provisioning import ACCESS_SEQ, REMOVED_HERE, set_access

if TYPE_CHECKING:
    from ..workos import WorkOSClient

log = logging.getLogger(__name__)

DELETED_IDS = "workos_deleted_ids"
HELD = "workos_held"
"""The row's :data:`~.provisioning.ACCESS_SEQ` as WorkOS's word (an event, :func:`~.workos_late_word.restart`) last left
it: when it differs, something else (an admin here, a sign-in) decided the access since, and that decision is not
WorkOS's older word's to take back (:func:`~.workos_late_word.late_named_role`, :func:`~.workos_late_word.restart`)."""
DELETED_AT = "workos_deleted_at"
"""The version of the latest deletion the row applied: WorkOS's word not newer than it was, in order, old news."""
DECIDED_AT = "decided_here_at"
"""The ``workos_version`` the row held when something other than WorkOS's word last decided its access (seen at
WorkOS's next word): WorkOS's events older than it came before that decision."""
ROLE_DECIDED = "role_decided_here_at"
"""Our time of an admin's latest decision of the role here (a role change, ``grant-admin``): WorkOS's word of a
version not after it came before that decision, which in order would have followed it, so its role does not replace
the role decided. Its status and a deletion still apply: taking access away is never held back (a deletion's
version is the membership's last ``updated_at``, older than a decision made before the deletion itself; a break-it
review), and WorkOS's status is the access it gives (a pending invitation is an admin once accepted):
:func:`decide_role_here`."""
DECIDED_HERE = "decided here"
""":data:`HELD` once an admin decided here: never equal to the access sequence, so :func:`only_workos_since` is false
from then on (something other than WorkOS's word decided), even when the decision changed nothing."""
NAMED_AT = "workos_named_at"
"""``{"id", "at"}``: the membership and the version of WorkOS's latest event whose role of ours the row took."""
TRUSTED = "workos_trusted"
"""What an active row that knew no WorkOS membership id took on trust (:func:`continues`), while it holds it and
nothing but WorkOS's word decided its access since: ``{"id": the membership's id, "named": the latest role of ours
WorkOS named for it, or None}`` (:func:`~.workos_late_word.predecessor_seen`, :func:`~.workos_late_word.restart`)."""
KEPT_DELETED_IDS = 20
"""The WorkOS membership ids a row has seen deleted (the newest last, at most this many)."""
CLOCK_TOLERANCE = events_context.CLOCK_TOLERANCE
"""How far WorkOS's clock may run ahead of ours: a membership WorkOS created up to this long after an admin's removal
(by the two clocks) is held as made before it. Erring this way keeps a removed person out when the clocks drift; a
person WorkOS re-adds within it is let in by an admin here."""


LISTING_TIMEOUT = 5.0
"""Seconds the sign-in's list call (:func:`listing_for_sign_in`) waits, once (not retried): the person waits on it,
and a sign-in WorkOS does not answer goes on without it."""


def when(value: Any) -> datetime | None:
    """A WorkOS timestamp (a string, or a datetime the SDK parsed) as an aware UTC datetime; one without a zone is
    UTC (as :func:`~hatidata_auth.services.events.context.parse_time` reads strings)."""
    moment = parse_time(value)
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def removal_mark(membership: Membership) -> dict[str, Any] | None:
    """The admin's removal *membership* carries (``{"at", "id"}``), or ``None``; a mark of the form a development
    version wrote (the id alone) holds everything, its time unknown."""
    mark = (membership.details or {}).get(REMOVED_HERE)
    if isinstance(mark, str):
        return {"at": None, "id": None if mark == "*" else mark}
    return mark if isinstance(mark, dict) else None


def superseded(membership: Membership, workos_membership_id: str, version: datetime, *, deleted: bool) -> bool:
    """Whether what *membership* holds is newer than WorkOS's word (an event's, or WorkOS's present list's) of
    *workos_membership_id* at *version* (its ``updated_at``): an older version; a ``created``/``updated`` of a
    membership id the row saw deleted; or, at an equal version, a ``created``/``updated`` of the membership the
    row holds at it (applied already: again, it would undo a change made here since) or while the row holds a
    deletion. A deletion wins every tie (its payload is the membership as it was), but the same one again, not
    newer than the row, is old news."""
    details = membership.details or {}
    seen_deleted = workos_membership_id in (details.get(DELETED_IDS) or [])
    if not deleted and seen_deleted:
        return True
    seen = when(details.get("workos_version"))
    if seen is None or version > seen:
        return False
    if deleted and seen_deleted:  # the same deletion again (a break-it review: it undid a grant made since)
        return True
    if version < seen:
        return True
    # Two memberships at one version (a removal and a re-add within a millisecond) are not ordered: the deletion
    # wins and the person is kept out until WorkOS's next word (a break-it review: ordering them by the row's id
    # let a deleted membership's late created make an admin again).
    return not deleted and (details.get("workos_status") == "deleted"
                            or membership.workos_membership_id == workos_membership_id)


def held_by_removal(membership: Membership, workos_membership_id: str, created_at: datetime | None) -> bool:
    """Whether an admin's removal here holds against WorkOS's word of *workos_membership_id* (created at
    *created_at*, WorkOS's ``created_at``): the membership existed when the admin removed the person (within
    :data:`CLOCK_TOLERANCE`), or is the one removed, or its creation time is unknown. A deletion is never held (it
    takes access, it gives none)."""
    mark = removal_mark(membership)
    if mark is None:
        return False
    removed_at, created = when(mark.get("at")), when(created_at)
    return (workos_membership_id == mark.get("id") or created is None or removed_at is None
            or created <= removed_at + CLOCK_TOLERANCE)


def apply(session: Session, client: WorkOSClient | None, org: Organization, membership: Membership, *,
          workos_membership_id: str, version: datetime, status: str | None, role: Any, deleted: bool,
          cause: Cause, audit_details: dict[str, Any] | None = None) -> None:
    """Record WorkOS's word (not :func:`superseded`: the caller checked) on *membership* and give it the access it
    grants: a deletion deprovisions, and so does any word in an organization deleted here (its members end
    deprovisioned, holding the role they would have held, whichever of the two was applied first: a break-it
    review); any other
    status than ``active`` deactivates, ``active`` in an active organization reactivates with WorkOS's role (a
    membership not active holds a role of ours WorkOS names for when it is active again). A role we do not know
    keeps the member's role (and how it was decided) only while the membership goes on (:func:`continues`); a
    membership WorkOS made anew (a re-add) starts at the organization's default, active or not, so it never
    restores a role its predecessor held. Directory-managed members keep what the directory and our mappings
    decide; only the record changes."""
    goes_on = continues(membership, workos_membership_id)
    details = {**(membership.details or {}), "workos_version": version.isoformat(),
               "workos_status": "deleted" if deleted else status}
    trusted = details.pop(TRUSTED, None)
    if not only_workos_since(membership):  # decided here since WorkOS's last word: that decision came after it
        details[DECIDED_AT] = (membership.details or {}).get("workos_version")
        trusted = None
    if goes_on and not deleted and (membership.workos_membership_id is None
                                    or (trusted or {}).get("id") == workos_membership_id):
        trusted = {"id": workos_membership_id,  # completed below, once access is given
                   "named": role if is_role(role) else (trusted or {}).get("named")}
    else:
        trusted = None
    if deleted:
        note_deleted(details, workos_membership_id)
        details[DELETED_AT] = version.isoformat()
    membership.workos_membership_id = None if deleted else workos_membership_id
    membership.details = details
    if membership.source == "directory":
        return
    gone = not org.live  # deleted here: its members stay deprovisioned
    active = not deleted and (status or "active") == "active" and not gone
    source, named = "idp", is_role(role)
    if not named:
        kept = membership.role if goes_on else None
        role, source = (kept, membership.role_source) if kept else (org.default_role, "default")
    decided = when(details.get(ROLE_DECIDED))
    held = (decided is not None and version <= decided) or workos_role_push.holds_role(membership,
                                                                                      workos_membership_id)
    if not deleted and held and membership.role is not None:  # decided here after this word, or not at WorkOS yet
        if workos_role_push.holds_role(membership, workos_membership_id):
            workos_role_push.note_held(membership, version, role if named else None)
        role, source, named = membership.role, membership.role_source, False
    # A new membership seen inactive (pending, deactivated) holds its own role until it is active: the
    # predecessor's would count as its own then (a break-it review: a re-add first seen inactive, then
    # reactivated, was an admin again). So does one WorkOS names a role of ours for: dropped, its role depended
    # on whether an older event of another membership had been delivered first (a break-it review). So does a row
    # with no role to keep (made by this event: a break-it review found it holding none).
    set_access(session, client, membership, role=role, role_source=source, active=active, cause=cause,
               inactive_status="deprovisioned" if deleted or gone else "inactive", details=audit_details,
               dormant_role=not deleted and (not goes_on or named or membership.role is None))
    left_by_workos(membership, trusted=trusted,
                   named_at={"id": workos_membership_id, "at": version.isoformat()} if named and not deleted else None)


def note_deleted(details: dict[str, Any], workos_membership_id: str) -> None:
    """Add *workos_membership_id* to the ids *details* saw deleted (the newest last, :data:`KEPT_DELETED_IDS`)."""
    details[DELETED_IDS] = [*(details.get(DELETED_IDS) or [])[-(KEPT_DELETED_IDS - 1):], workos_membership_id]


def left_by_workos(membership: Membership, *, trusted: dict[str, Any] | None,
                   named_at: dict[str, str] | None) -> None:
    """Record the access WorkOS's word left *membership* with (:data:`HELD`, :data:`TRUSTED`, :data:`NAMED_AT`)."""
    extra: dict[str, Any] = {HELD: (membership.details or {}).get(ACCESS_SEQ)}
    if trusted is not None:
        extra[TRUSTED] = trusted
    if named_at is not None:
        extra[NAMED_AT] = named_at
    membership.details = {**(membership.details or {}), **extra}


def continues(membership: Membership, workos_membership_id: str) -> bool:
    """Whether WorkOS's membership *workos_membership_id* is the one *membership*'s role belongs to: the id the row
    knows, or, when it knows none, any while the row is active (a grant here: ``grant-admin``, an admin, a
    sign-in that could not ask WorkOS). A deleted membership's row knows no id and is not active: a re-add is a
    new membership. A sign-in that creates a row records the id of WorkOS's membership it is made from
    (:func:`listing_for_sign_in`, :func:`made_from_listing`), so a re-add delivered before that membership's
    events is a new one too."""
    known = membership.workos_membership_id
    return known == workos_membership_id or (known is None and membership.status == "active")


def only_workos_since(membership: Membership) -> bool:
    """Whether nothing but WorkOS's word changed *membership*'s access since WorkOS's word last did (a row WorkOS
    has not spoken of yet: whether anything did)."""
    details = membership.details or {}
    return details.get(HELD) == details.get(ACCESS_SEQ)


def claim_outdated(membership: Membership, issued_at: Any) -> bool:
    """Whether a sign-in token issued at *issued_at* (its JWT ``iat``, whole seconds) may be older than WorkOS's
    word *membership* holds (``workos_version``, the membership's ``updated_at``): then the token's role claim is
    old news (a demotion applied from its event before the sign-in that began under the old role) and the row's
    role stands. In doubt (the same second) the row's word wins; unknown either way, the claim stands."""
    seen = when((membership.details or {}).get("workos_version"))
    try:  # as the verifier reads it (PyJWT takes a numeric string too)
        issued = None if isinstance(issued_at, bool) or issued_at is None else float(issued_at)
    except (TypeError, ValueError):
        issued = None
    return seen is not None and issued is not None and seen.timestamp() >= issued


def made_from_listing(membership: Membership, listed: Sequence[Any]) -> str | None:
    """A row a sign-in (or its mirroring) has just created, held, is made from WorkOS's one active membership of
    the person in the organization (*listed*, asked before the sign-in wrote anything): it records the membership's
    id and version (its events up to that version are old news: :func:`superseded`) and returns its role slug,
    which decides over the token's (WorkOS's present word: the person may have been removed and added again since
    the code was exchanged). ``None`` (the token decides, the row knows no id) when WorkOS did not answer or lists
    none or several."""
    if membership.workos_membership_id is not None or len(listed) != 1 \
            or getattr(listed[0], "status", None) != "active":
        return None
    item = listed[0]
    membership.workos_membership_id = str(item.id)
    version = when(getattr(item, "updated_at", None))
    if version is not None:
        membership.details = {**(membership.details or {}), "workos_version": version.isoformat(),
                              "workos_status": "active"}
    return str(getattr(getattr(item, "role", None), "slug", None) or "")


def decide_role_here(membership: Membership, *, now: datetime) -> None:
    """Mark an admin's decision of *membership*'s role at *now* (:data:`ROLE_DECIDED`), also when it changed nothing:
    WorkOS's word older than the decision, delivered after it, does not take the role back, nor does the late-word
    logic (:data:`DECIDED_HERE`)."""
    membership.details = {**(membership.details or {}), ROLE_DECIDED: now.isoformat(), HELD: DECIDED_HERE}


def remove_here(membership: Membership, *, now: datetime) -> None:
    """Mark an admin's removal of *membership* at *now* (before its ``set_access``; again when the member was
    deprovisioned already: the admin's decision is the newest): WorkOS's later word on a membership it had made by
    then does not bring the person back (:func:`held_by_removal`). Cleared when the member is active again."""
    membership.details = {**(membership.details or {}),
                          REMOVED_HERE: {"at": now.isoformat(), "id": membership.workos_membership_id}}


def listing_for_sign_in(session: Session, client: WorkOSClient | None, workos_organization_id: str,
                        person: dict[str, Any]) -> list[Any]:
    """Before a sign-in writes anything (its organization's mirror included) or takes its locks: WorkOS's active
    memberships of *person* (WorkOS's user: ``id``) in the organization (one list call, :data:`LISTING_TIMEOUT`),
    when they hold no row there by WorkOS's id (a first sign-in: the new row is made from it,
    :func:`made_from_listing`; a person linked by email at their first sign-in is asked about too, since the link
    is decided later), or their row is inactive, not the directory's, and WorkOS's word can answer what left it so
    (:func:`_answerable`); nothing (no call) in an organization here that is not active, for a row that is active
    or the directory's, or when WorkOS does not answer (the sign-in is refused as before, or its row knows no
    id). Asked first so that
    nothing waits for WorkOS behind the sign-in (a break-it review); :func:`caught_up` and
    :func:`made_from_listing` check the answer again under the locks."""
    workos_user_id = str(person.get("id") or "")
    if client is None or not workos_user_id or not workos_organization_id:
        return []
    org = session.scalar(select(Organization).where(Organization.workos_organization_id == workos_organization_id))
    if org is not None and not org.live:
        return []  # refused whatever WorkOS says
    held = [] if org is None else session.scalars(select(Membership).join(User, User.id == Membership.user_id).where(
        Membership.organization_id == org.id, User.workos_user_id == workos_user_id)).all()
    if any(m.status == "active" or m.source == "directory" or not _answerable(m) for m in held):
        return []
    try:
        return _active_memberships(client, workos_user_id, workos_organization_id)
    except WorkOSFailure as failure:
        log.warning("could not ask WorkOS for the memberships of %s: %s", workos_user_id, failure)
        return []


def caught_up(session: Session, client: WorkOSClient | None, org: Organization, membership: Membership,
              listed: Sequence[Any], *, cause: Cause) -> bool:
    """At a sign-in, bring a *membership* WorkOS's events (or an admin's removal) left inactive up to WorkOS's
    present word *listed* (:func:`listing_for_sign_in`, asked before the locks); returns whether it is active now.
    *membership* is held (``FOR UPDATE``) by the caller, and read again: each item is applied only as
    :func:`from_listing` allows."""
    if membership.status == "active" or membership.source == "directory":
        return membership.status == "active"
    applied = any(from_listing(session, client, org, membership, item, cause=cause) for item in listed)
    return applied and membership.status == "active"  # applied without a role (no default role): still refused


def from_listing(session: Session, client: WorkOSClient | None, org: Organization, membership: Membership, item: Any,
                 *, cause: Cause) -> bool:
    """Apply WorkOS's listed membership *item* (an SDK ``OrganizationMembership``) to *membership* (held) when it is
    active, newer than what the row holds from WorkOS's events, not held by an admin's removal here, WorkOS's to
    answer (:func:`_answerable`), and *org* is active (nothing to give back otherwise); returns whether it was
    applied."""
    version = when(getattr(item, "updated_at", None))
    seen = when((membership.details or {}).get("workos_version"))
    # Newer news only: an equal version is what the row already holds (an admin's removal may have followed it).
    if (version is None or not org.live or not _answerable(membership)
            or (seen is not None and version <= seen) or getattr(item, "status", None) != "active"
            or superseded(membership, item.id, version, deleted=False)
            or held_by_removal(membership, item.id, when(getattr(item, "created_at", None)))):
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
    return when((membership.details or {}).get("workos_version")) is not None or removal_mark(membership) is not None


@translate_errors()
def _active_memberships(client: WorkOSClient, workos_user_id: str, workos_organization_id: str) -> list[Any]:
    """WorkOS's active memberships of the person in the organization (one at most, in WorkOS's model)."""
    listed = client.organization_membership.list_organization_memberships(
        user_id=workos_user_id, organization_id=workos_organization_id, statuses=["active"], limit=10,
        request_options={"max_retries": 0, "timeout": LISTING_TIMEOUT})
    return list(listed.data)
