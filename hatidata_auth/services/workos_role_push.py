"""A role an admin changes here is made at WorkOS by a queued job, and held here against WorkOS's word until it is.

A role change (``PATCH /api/v1/members/{id}``) is committed here first; WorkOS's later word on the membership (its
next event, a deactivation say, or a sign-in's token) carries WorkOS's role, so WorkOS must hold the role decided
here or that word gives the old one back (a break-it review: a demoted admin stayed an admin at WorkOS). The call was
made once, after the commit: with WorkOS unavailable it was lost, and WorkOS's next word of a newer version than the
decision (an unrelated deactivation and reactivation) gave the demoted admin their role back.

Now the change queues one internal inbox row (:data:`JOB_TYPE`) in its own transaction, so the job exists exactly when
the change committed, and marks the membership (``details.role_push_pending``: the WorkOS membership and the
decision's time). While the mark is on, WorkOS's word on that membership does not change the role here (its status
and a deletion still apply: ``workos_memberships.apply``); the job, applied at once by the request and otherwise by
the appliers with their retries (:data:`ATTEMPTS`, then :func:`give_up`; replayable), gives WorkOS the membership's
role as it stands here and lifts the mark, recording WorkOS's version after the change as the decision's
(``details.role_decided_here_at``): WorkOS's word not newer than that came before WorkOS took the role, and its word
the mark held that is newer is given then (:func:`note_held`). WorkOS refusing the role, the membership being
another one by then (WorkOS removed and re-added the person), or the member removed, lifts the mark with nothing
changed at WorkOS; WorkOS's newer word then decides as before. Audited as ``membership.role_set_at_workos`` (details
``workos``: ``set``, ``failed:<error>`` or ``gave_up:<error>``).

This module is low in the layers (models, causes, audit and the WorkOS client); ``services.events.role_push``
applies the job.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..causes import Cause
from ..models import Membership, Organization, User, utcnow
from ..workos import WorkOSClient, translate_errors
from . import audit
from .fanout_jobs import insert_job

JOB_TYPE = "hatidata.push_workos_role"
PENDING = "role_push_pending"
"""``{"id", "at"}`` in a membership's details: the WorkOS membership an admin's role decision is still to be made at,
and the decision's time (the job that carries it names the same time)."""
KEY_KIND = "workos_role"
GAVE_UP = "gave_up"
ATTEMPTS = 24
"""Tries (the request's, then the appliers' every ``RETRY_DELAY``, 5 s) before the job gives up: WorkOS down for
about two minutes. Until then WorkOS's word keeps off the role, a decision here that it would undo (a break-it
review: five tries, about 20 s of outage, then WorkOS's next word gave a demoted admin the role back)."""


@dataclass(frozen=True, slots=True)
class QueuedPush:
    """A queued job: its inbox event id and entity key (``workos_role:<membership id>``: one membership's pushes in
    order; not WorkOS's membership key, so WorkOS's events, a deactivation among them, never wait for WorkOS's API)."""

    event_id: str
    entity_key: str


def queue(session: Session, *, organization_id: str, membership_id: str, cause: Cause) -> QueuedPush | None:
    """Mark the membership *membership_id* of our organization *organization_id* (its role just decided here, in
    *session*'s transaction, which holds its row) and queue the job in that transaction. ``None`` (nothing queued,
    no mark) when the row is not there or the organization is not at WorkOS. For a row that knows no WorkOS
    membership (WorkOS did not answer its sign-in's listing) the job finds the person's membership at WorkOS
    (:func:`find_at_workos`; a break-it review: the demotion was changed here only, and WorkOS's next word gave the
    role back); its mark names none, so it holds nothing until then."""
    membership = session.get(Membership, membership_id)
    org = session.get(Organization, organization_id)
    if membership is None or membership.organization_id != organization_id or org is None \
            or not org.workos_organization_id:
        return None
    workos_membership_id = membership.workos_membership_id  # none known: the job looks (find_at_workos)
    at = utcnow().isoformat()
    membership.details = {**(membership.details or {}), PENDING: {"id": workos_membership_id, "at": at}}
    key = f"{KEY_KIND}:{membership.id}"
    data = {"organization_id": membership.organization_id, "membership_id": membership.id, "at": at,
            "cause": cause.to_dict()}
    event_id = insert_job(session, JOB_TYPE, organization_id=membership.organization_id, data=data, entity_key=key,
                          revokes=False)
    return QueuedPush(event_id, key)


def pending(membership: Membership) -> dict[str, Any] | None:
    """The membership's mark (``{"id", "at"}``), or ``None``."""
    mark = (membership.details or {}).get(PENDING)
    return mark if isinstance(mark, dict) else None


def holds_role(membership: Membership, workos_membership_id: str) -> bool:
    """Whether a role decided here, not yet made at WorkOS, holds against WorkOS's word on *workos_membership_id*:
    the mark names that membership (a re-add, another membership, starts as WorkOS says; a mark that names none,
    the row knowing none, holds nothing: a break-it review found it held a re-add's word and set the role on it),
    and its job has not given up (:func:`give_up`)."""
    mark = pending(membership)
    return mark is not None and mark.get("id") == workos_membership_id and not mark.get(GAVE_UP)


def find_at_workos(session: Session, client: WorkOSClient, membership: Membership, decided_at: datetime
                   ) -> str | None:
    """The id of WorkOS's membership of *membership*'s person in its organization (any status) made by the time of
    the decision *decided_at* (WorkOS's ``created_at``, with no tolerance: a re-add made just after the decision,
    by either clock, is not given a role the admin did not decide for it, a promotion included: a break-it review).
    ``None`` when there is none, or the person or the organization is unknown to WorkOS. Raises
    ``WorkOSFailure``."""
    user, org = session.get(User, membership.user_id), session.get(Organization, membership.organization_id)
    if user is None or org is None or not user.workos_user_id or not org.workos_organization_id:
        return None
    with translate_errors():
        listed = client.organization_membership.list_organization_memberships(
            user_id=user.workos_user_id, organization_id=org.workos_organization_id,
            statuses=["active", "inactive", "pending"], limit=1).data
    if not listed:
        return None
    created = listed[0].created_at
    created = datetime.fromisoformat(created.replace("Z", "+00:00")) if isinstance(created, str) else created
    return str(listed[0].id) if created is None or created <= decided_at else None


def note_held(membership: Membership, version: datetime, role: str | None) -> None:
    """Keep WorkOS's word the mark held that named a role of ours (its version and the role), the newest only: one
    made after WorkOS took the role (it raced the job) is given when the mark is lifted (:func:`newer_held`). A word
    naming none (a slug we do not know) keeps the role, as it would in order: it is not kept (a break-it review: it
    replaced a held demotion, and the person stayed an admin)."""
    mark = pending(membership)
    if mark is None or role is None:
        return
    held = mark.get("held") or {}
    if held.get("at") is None or datetime.fromisoformat(held["at"]) < version:
        membership.details = {**(membership.details or {}),
                              PENDING: {**mark, "held": {"at": version.isoformat(), "role": role}}}


def newer_held(mark: dict[str, Any], version: datetime) -> str | None:
    """The role of ours named by WorkOS's word the mark held that is newer than *version* (WorkOS's own, once it
    took the role): WorkOS decided again after it took it (a break-it review: such a word, applied while the job
    waited for WorkOS's answer, was held and then lost). ``None`` when there is none."""
    held = mark.get("held") or {}
    at = datetime.fromisoformat(held["at"]) if held.get("at") else None  # written by note_held
    role = held.get("role")
    return str(role) if at is not None and at > version and role else None


def give_up(session: Session, payload: dict[str, Any], error: str) -> None:
    """The job of *payload* failed for good (its retries spent, or refused): its mark stops holding WorkOS's word
    (a break-it review: a mark left on kept every later role change made at WorkOS off the row for ever), but stays
    for a replay of the job (``inbox replay``), which sets the role then. Audited as
    ``membership.role_set_at_workos`` (``workos``: ``gave_up:<error>``), in *session*'s transaction."""
    try:
        job, cause = parse(payload["data"]), Cause.from_dict(payload["data"]["cause"])
    except (KeyError, TypeError, ValueError):
        return
    membership = session.scalars(select(Membership).where(Membership.id == job["membership_id"]).with_for_update()
                                 .execution_options(populate_existing=True)).one_or_none()
    mark = pending(membership) if membership is not None else None
    if membership is None or mark is None or mark.get("at") != job["at"]:
        return
    membership.details = {**(membership.details or {}), PENDING: {**mark, GAVE_UP: True}}
    audit.record(session, action="membership.role_set_at_workos", cause=cause, organization_id=job["organization_id"],
                 target_type="membership", target_id=membership.id, outcome="failure",
                 details={"role": membership.role, "workos_membership_id": mark.get("id"),
                          "workos": f"gave_up:{error}"[:200]})


def lift(membership: Membership) -> None:
    """Remove the mark."""
    details = dict(membership.details or {})
    details.pop(PENDING, None)
    membership.details = details


def parse(data: Any) -> dict[str, str]:
    """The stored job's fields (:func:`queue` wrote them); raises ``KeyError``/``TypeError`` on another shape."""
    return {name: str(data[name]) for name in ("organization_id", "membership_id", "at")}
