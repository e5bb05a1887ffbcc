"""The person a sign-in is (``services.login``): found by WorkOS user id or linked by email, else created, under the
one-person-per-email rule of :mod:`.person_email`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..causes import NO_REQUEST, Actor, Cause, RequestInfo
from ..models import Membership, Organization, User
from . import audit, directory_names, domains, fanout_jobs, membership_rows, person_email, provisioning


@dataclass(frozen=True)
class SigningIn:
    """The person a sign-in is, and their membership of the organization, held (its member key and its row lock)
    and read before the person was written (``None`` for a person new to it): the caller uses it as it is."""

    person: User
    membership: Membership | None


def upsert(db: Session, org: Organization, user: dict[str, Any], now: datetime,
           request: RequestInfo = NO_REQUEST) -> SigningIn:
    """The person signing in to *org* as the WorkOS *user* (``id``, ``email``, names), created when none is found
    (flushed): theirs by WorkOS id, else the unclaimed person their email names on a domain no other organization
    verified. A directory that lists the person speaks for their names and email; otherwise both follow WorkOS (an
    email WorkOS changed moves onto them: :func:`_move_email`).

    Locks in the order of the other writers that wait for them (``services.person_email``): the organization's row
    (key-shared), the key of the directory user the person's membership of *org* hangs on, the email, the
    membership's row; only then is the person written. That membership comes back with the person."""
    workos_user_id = str(user["id"])
    email = str(user.get("email") or "").strip().lower()
    by_id = select(User).where(User.workos_user_id == workos_user_id)
    unclaimed = select(User).where(User.workos_user_id.is_(None), User.email == email)
    # Linking by email is a claim about the domain: only when no other organization verified it.
    linkable = bool(email) and domains.foreign_owner(db, org.id, email) is None
    person_email.hold_organization(db, org.id)
    record = db.scalar(by_id)
    if record is None and linkable:
        record = db.scalar(unclaimed)
    if record is None and person_email.hold_email(db, email):
        # One person per email (and per WorkOS user): the look that decides to create is made under the lock.
        record = db.scalar(by_id) or (db.scalar(unclaimed) if linkable else None)
    membership = None if record is None else _held_membership(db, org, record)
    listed = record is not None and directory_names.listed_by_a_directory(db, record.id)
    if record is None:
        record = User(workos_user_id=workos_user_id, email=email)
        db.add(record)
    elif email and record.email != email and not listed:
        _move_email(db, org, record, email, linkable=linkable, request=request)
    record.workos_user_id = workos_user_id
    if not listed:
        record.first_name = user.get("first_name")
        record.last_name = user.get("last_name")
    record.last_login_at = now
    db.flush()
    return SigningIn(record, membership)


def _held_membership(db: Session, org: Organization, person: User) -> Membership | None:
    # Held before the person is written, in the appliers' order: the key of the directory user it hangs on (an
    # applier holds it from its claim, then writes the person), then its row (a batch writes a membership, then,
    # for another event, the person). Its row lock lasts until the sign-in commits, so a deprovisioning waits for
    # the session this sign-in records and ends it (``membership_rows``).
    membership = db.scalar(select(Membership).where(Membership.organization_id == org.id,
                                                    Membership.user_id == person.id))
    if membership is None:
        return None
    if membership.directory_user_id and db.get_bind().dialect.name == "postgresql":
        fanout_jobs.hold_members(db, [membership.directory_user_id])
    return membership_rows.locked(db, membership)


def _move_email(db: Session, org: Organization, record: User, email: str, *, linkable: bool,
                request: RequestInfo) -> None:
    """WorkOS changed the signing-in user's email: move it onto their person (audited, their cached session and key
    status evicted in every organization), unless another person holds it on a domain no other organization
    verified (one person per email; two people are never merged): the person then keeps the old email
    (``user.email_change_refused``).

    A directory user refused for the old email (held by this person) is not retried here: the next resync links it
    (the directory's own email changes queue a job per waiting user: ``services.freed_email_jobs``)."""
    holder = None
    if linkable:  # looked for under the email's lock (on SQLite, in the write turn the sign-in took first)
        person_email.hold_email(db, email)
        holder = db.scalar(select(User.id).where(User.email == email, User.id != record.id).limit(1))
    cause = Cause.by(Actor("user", record.id, record.email), request, reason="login")
    details = {"from": record.email, "to": email, "source": "sign_in"}
    if holder is not None:
        audit.record(db, action="user.email_change_refused", cause=cause, organization_id=org.id,
                     target_type="user", target_id=record.id, outcome="failure",
                     details={**details, "reason": "email_held_by_another_person", "held_by_user_id": holder})
        return
    record.email = email
    audit.record(db, action="user.email_changed", cause=cause, organization_id=org.id, target_type="user",
                 target_id=record.id, details=details)
    for organization_id in set(db.scalars(select(Membership.organization_id).where(Membership.user_id == record.id))):
        provisioning.invalidate_member_caches(db, organization_id=organization_id, user_id=record.id)
