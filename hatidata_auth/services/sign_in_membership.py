"""A sign-in's memberships: the row of the organization it signs into, and the mirror of the person's others.

A sign-in (``login.complete_login``) holds the person (``sign_in_person.upsert``), then its membership of the
organization WorkOS vouched for (:func:`upsert`: a first sign-in's row made from WorkOS's present membership, an
inactive one brought up to WorkOS's word, the token's role given unless the directory or an admin decides it);
after it commits, the person's other active WorkOS memberships are mirrored (:func:`sync_user_memberships`) so they
can switch organization. Every change of access goes through ``provisioning.set_access`` (audited). Functions here
flush but do not commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import islice
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..causes import Actor, Cause, RequestInfo
from ..errors import AppError
from ..models import ROLES, Membership, Organization
from ..workos import WorkOSClient, translate_errors
from . import audit, membership_rows, provisioning, workos_memberships
from .organizations import ensure_organization
from .sign_in_person import SigningIn

MAX_MIRRORED_MEMBERSHIPS = 1000
"""How many of a user's WorkOS memberships a login mirrors at most (a bound on the pages it reads)."""


class LoginDenied(AppError):
    """The identity provider vouched for the user, but HatiData does not let them in."""

    status = 403
    code = "login_denied"


def upsert(db: Session, client: WorkOSClient, org: Organization, signing_in: SigningIn,
                       claimed_role: str | None, request: RequestInfo, *, listed: Sequence[Any] = (),
                       issued_at: Any = None) -> Membership:
    """The sign-in's membership of *org*: the one ``sign_in_person.upsert`` holds (its member key and its row: a
    member's events never write back over this sign-in's change, nor it over theirs, and a deprovisioning waits for
    the session it records), else a new one, or the one another writer created meanwhile (``membership_rows``).
    *listed*: WorkOS's active memberships of the person in *org*, asked before the locks
    (``workos_memberships.listing_for_sign_in``), which may bring an inactive one up to date, and name the
    membership a new one is made from. *issued_at*: the token's ``iat``; a role claimed by a token that may be
    older than WorkOS's word the row holds is not taken (``workos_memberships.claim_outdated``)."""
    user = signing_in.person
    if signing_in.membership is None:
        membership, created = membership_rows.created_or_locked(
            db, organization_id=org.id, user_id=user.id, source="sso", status="pending", role=None,
            role_source="idp")
    else:
        membership, created = signing_in.membership, False  # held since before the person was written
    if created:
        claimed_role = workos_memberships.made_from_listing(membership, listed) or claimed_role
    elif membership.status != "active" and workos_memberships.caught_up(  # WorkOS re-added them since?
            db, client, org, membership, listed, cause=Cause.by(Actor("user", user.id, user.email), request)):
        return membership  # with WorkOS's present role, not the token's (exchanged under the old membership)
    if not created and _kept(org, membership):
        return membership
    if not created and workos_memberships.claim_outdated(membership, issued_at):
        claimed_role = None
    role: str | None
    if claimed_role in ROLES:
        role, source = claimed_role, "idp"
    elif membership.role is not None:
        role, source = membership.role, str(membership.role_source or "idp")
    else:
        role, source = org.default_role, "default"
    provisioning.set_access(db, client, membership, role=role, role_source=source, active=True,
                            cause=Cause.by(Actor("user", user.id, user.email), request, reason="login"))
    if membership.status != "active":
        raise LoginDenied(f"{org.name} grants no role to new members.",
                          details={"membership_status": membership.status})
    db.flush()
    return membership


def _kept(org: Organization, membership: Membership) -> bool:
    """Whether a sign-in leaves *membership* (an existing one) as it is: the directory's mappings or an admin
    decide its role, not the IdP's claim (which decides a default one: a directory member in no mapped group, the
    admin who has yet to map the groups among them). Raises :class:`LoginDenied` when it is not active."""
    if membership.status != "active":
        raise LoginDenied(f"Your membership of {org.name} is {membership.status}.",
                          details={"membership_status": membership.status})
    return membership.role_source in ("mapping", "manual")


@translate_errors()
def sync_user_memberships(db: Session, client: WorkOSClient, *, user_id: str, workos_user_id: str,
                          cause: Cause | None = None, page_size: int = 100) -> int:
    """Mirror the user's other active WorkOS memberships (so they can switch organization), at most
    :data:`MAX_MIRRORED_MEMBERSHIPS`, *page_size* per WorkOS page; returns how many were created. Memberships we
    already hold keep their role and status, unless WorkOS's events or an admin's removal left one inactive and
    WorkOS's listing allows it back (``workos_memberships.from_listing``). *cause*: the sign-in's (WorkOS's when
    none)."""
    cause = cause or Cause.by(Actor.workos())
    created = 0
    listed = client.organization_membership.list_organization_memberships(user_id=workos_user_id,
                                                                          statuses=["active"], limit=page_size)
    for item in islice(listed.auto_paging_iter(), MAX_MIRRORED_MEMBERSHIPS):
        org = ensure_organization(db, client, item.organization_id)
        if not org.live:
            continue  # nothing to switch to (a break-it review: an active admin row in a deleted organization)
        exists = db.scalar(select(Membership.id).where(Membership.organization_id == org.id,
                                                       Membership.user_id == user_id))
        if exists is not None:
            _catch_up(db, client, org, exists, item, cause)
            continue
        membership, created_here = membership_rows.created_or_locked(
            db, organization_id=org.id, user_id=user_id, source="sso", status="pending", role=None,
            role_source="idp")
        if not created_here:  # another writer created it since the look: it decides
            continue
        slug = workos_memberships.made_from_listing(membership, [item])
        role, source = (slug, "idp") if slug in ROLES else (org.default_role, "default")
        audit.record(db, action="membership.created", cause=cause, organization_id=org.id,
                     target_type="membership", target_id=membership.id,
                     details={"user_id": user_id, "role": role, "source": "login"})
        provisioning.set_access(db, client, membership, role=role, role_source=source, active=True,
                                cause=cause.with_reason("login"))
        created += 1
    return created


def _catch_up(db: Session, client: WorkOSClient, org: Organization, membership_id: str, item: Any,
              cause: Cause) -> None:
    """A membership left inactive, listed active by WorkOS now: locked, read again, and brought up to date when
    ``workos_memberships.from_listing`` allows."""
    membership = db.get(Membership, membership_id)
    if membership is None or membership.status == "active" or membership.source == "directory":
        return
    membership = membership_rows.locked(db, membership)
    if membership.status != "active":
        workos_memberships.from_listing(db, client, org, membership, item, cause=cause)
