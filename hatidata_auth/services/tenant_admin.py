"""Tenant administration: organizations, their settings and their members.

Every function flushes and audits in the caller's transaction; the caller commits. Lookups always filter by
organization, so another organization's identifier is indistinguishable from a missing one (``NotFound``).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session

from ..causes import Actor, Cause
from ..errors import AppError
from ..models import SIGN_IN_METHODS, Membership, Organization, User, utcnow
from ..roles import ROLES, Role
from ..workos import WorkOSClient
from . import (
    audit,
    auth_policy,
    fanout_jobs,
    last_admin,
    membership_rows,
    organizations,
    paging,
    provisioning,
    sso_enforcement,
    workos_memberships,
)
from .domains import normalize_domain, parse_domain
from .person_email import hold_email


class NotFound(AppError):
    """The object does not exist in the caller's organization (whether or not it exists elsewhere)."""

    status = 404
    code = "not_found"


class Conflict(AppError):
    """The change contradicts the object's state."""

    status = 409
    code = "conflict"


SETTINGS_FIELDS: tuple[str, ...] = (
    "session_active_ttl", "session_remembered_ttl", "session_cache_ttl", "sso_enforced", "default_role",
    "auth_methods",
)


# --- organizations -----------------------------------------------------------------------------------------


def get_organization(session: Session, organization_id: str) -> Organization:
    """An active (not deleted) organization, or :class:`NotFound`."""
    org = session.get(Organization, organization_id)
    if org is None or org.deleted_at is not None:
        raise NotFound("No such organization.")
    return org


def find_organization(session: Session, ref: str) -> Organization | None:
    """An organization by our id, its WorkOS id, or one of its domains."""
    org = session.scalar(select(Organization).where(or_(Organization.id == ref,
                                                        Organization.workos_organization_id == ref)))
    if org is not None:
        return org
    ref = normalize_domain(ref)  # as every domain is compared: the spelling it was typed or listed in is no matter
    return next((o for o in session.scalars(select(Organization).order_by(Organization.created_at))
                 if ref in {normalize_domain(d) for d in o.domains or []}), None)


def create_organization(session: Session, client: WorkOSClient, *, name: str, domains: list[str],
                        actor: Actor) -> Organization:
    """Create the organization at WorkOS with *domains* verified, then its tenant here (audited
    ``organization.created``). :class:`AppError` 422 ``validation_error`` for an empty name or a string that is
    not a domain (:func:`~.domains.parse_domain`), before WorkOS is asked."""
    name = name.strip()
    if not name:
        raise AppError("An organization needs a name.", status=422, code="validation_error",
                       details={"fields": {"name": ["Missing data for required field."]}})
    try:
        domains = sorted({parse_domain(d) for d in domains})
    except ValueError as exc:
        raise AppError(str(exc), status=422, code="validation_error",
                       details={"fields": {"domains": [str(exc)]}}) from None
    from workos.organizations.models.organization_domain_data import OrganizationDomainData

    workos_org = client.organizations.create_organization(
        name=name, domain_data=[OrganizationDomainData.from_dict({"domain": d, "state": "verified"})
                                for d in domains])
    mirrored = organizations.mirror_organization(session, client, workos_org, actor)
    org = session.get(Organization, mirrored.organization_id)
    assert org is not None
    return org


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """How long an organization's sessions last, in seconds (``None``: the default)."""

    active_ttl: int | None
    remembered_ttl: int | None


@dataclass(frozen=True, slots=True)
class OrganizationSettings:
    """An organization's settings as its admins see them (``auth_methods``: the methods it accepts now)."""

    organization_id: str
    name: str
    domains: tuple[str, ...]
    status: str
    sso_enforced: bool
    auth_methods: tuple[str, ...]
    default_role: str | None
    session_policy: SessionPolicy
    session_cache_ttl: int | None
    updated_at: datetime


def settings_view(org: Organization) -> OrganizationSettings:
    """The organization's settings as a frozen value."""
    return OrganizationSettings(
        organization_id=org.id, name=org.name, domains=tuple(org.domains or ()), status=org.status,
        sso_enforced=org.sso_enforced, auth_methods=tuple(auth_policy.allowed_methods(org)),
        default_role=org.default_role,
        session_policy=SessionPolicy(org.session_active_ttl, org.session_remembered_ttl),
        session_cache_ttl=org.session_cache_ttl, updated_at=org.updated_at)


def get_settings(session: Session, organization_id: str) -> OrganizationSettings:
    """An active organization's settings, or :class:`NotFound`."""
    return settings_view(get_organization(session, organization_id))


def check_auth_methods(org: Organization, changes: dict[str, Any]) -> None:
    """``auth_methods``: a non-empty list of SIGN_IN_METHODS (stored in their order) or ``None`` (every method);
    while the organization enforces SSO it allows SSO only, whatever is stored."""
    if "auth_methods" not in changes:
        return
    methods = changes["auth_methods"]
    if methods is not None:
        if not methods or not set(methods) <= set(SIGN_IN_METHODS):
            raise AppError("Unknown sign-in methods.", status=422, code="validation_error", details={
                "fields": {"auth_methods": [f"A non-empty list of: {', '.join(SIGN_IN_METHODS)}, or null."]}})
        methods = changes["auth_methods"] = [m for m in SIGN_IN_METHODS if m in methods]
    if changes.get("sso_enforced", org.sso_enforced) and methods not in (None, ["sso"]):
        raise AppError("An organization that enforces SSO allows SSO only.", status=422, code="validation_error",
                       details={"fields": {"auth_methods": ["Must be [\"sso\"] (or null) while SSO is enforced."]}})


def update_settings(session: Session, *, organization_id: str, changes: dict[str, Any], cause: Cause,
                    now: datetime | None = None) -> Organization:
    """Apply settings changes (keys of :data:`SETTINGS_FIELDS`); audits ``organization.settings_updated``.

    Making SSO the only way in (enforcement, or ``auth_methods`` ``["sso"]``) needs a recent admin SSO sign-in
    (:func:`sso_enforcement.ensure_can_change`, 409 ``sso_enforcement_unverified``; *now*: the clock, for tests).

    A change of the default role only records the new default here; memberships are recomputed by the
    role-mapping service when it is called for it.
    """
    org = get_organization(session, organization_id)
    unknown = sorted(set(changes) - set(SETTINGS_FIELDS))
    if unknown:
        raise AppError("Unknown settings.", status=422, code="validation_error",
                       details={"fields": {k: ["Unknown field."] for k in unknown}})
    if "default_role" in changes and changes["default_role"] not in (*ROLES, None):
        raise AppError("Unknown role.", status=422, code="validation_error",
                       details={"fields": {"default_role": [f"Must be one of: {', '.join(ROLES)} or null."]}})
    check_auth_methods(org, changes)
    sso_enforcement.ensure_can_change(
        session, org, {k: changes[k] for k in ("sso_enforced", "auth_methods") if k in changes}, now=now)
    diff = {k: {"from": getattr(org, k), "to": v} for k, v in changes.items() if getattr(org, k) != v}
    if not diff:
        return org
    for key in diff:
        setattr(org, key, changes[key])
    org.updated_at = utcnow()
    audit.record(session, action="organization.settings_updated", cause=cause, organization_id=org.id,
                 target_type="organization", target_id=org.id, details={"changes": diff})
    session.flush()
    return org


# --- members -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MemberFilter:
    """Filters of the member list."""

    role: str | None = None
    status: str | None = None
    source: str | None = None
    email: str | None = None


def members_query(organization_id: str, flt: MemberFilter | None = None) -> Select[Membership, User]:
    """Memberships of one organization with their users, filtered, in id order."""
    flt = flt or MemberFilter()
    query = (select(Membership, User).join(User, User.id == Membership.user_id)
             .where(Membership.organization_id == organization_id))
    if flt.role is not None:  # the role held now: an inactive member holds none
        query = query.where(Membership.role == flt.role, Membership.status == "active")
    if flt.status is not None:
        query = query.where(Membership.status == flt.status)
    if flt.source is not None:
        query = query.where(Membership.source == flt.source)
    if flt.email is not None:
        query = query.where(User.email.ilike(f"%{flt.email.lower()}%"))
    return query


def effective_role(membership: Membership) -> str | None:
    """The role a member holds now: their role while the membership is ``active``, otherwise ``None``.

    A deprovisioned or inactive membership keeps its last role (``Membership.role``) for the record and for
    reactivation; it grants nothing, so no listing may show it as the member's role.
    """
    return membership.role if membership.status == "active" else None


@dataclass(frozen=True, slots=True)
class Member:
    """A member as admins see them: ``role`` is the role held now (``None`` unless ``status`` is ``active``),
    ``last_role`` the last role assigned, kept while the membership is not active."""

    id: str
    organization_id: str
    user_id: str
    email: str
    first_name: str | None
    last_name: str | None
    role: str | None
    last_role: str | None
    role_source: str
    source: str
    status: str
    managed_by_directory: bool
    created_at: datetime
    updated_at: datetime


MEMBER_PAGE_KEY = paging.key_kind(Membership.id)


def member_view(membership: Membership, user: User) -> Member:
    """A membership and its user as a frozen :class:`Member`."""
    return Member(
        id=membership.id, organization_id=membership.organization_id, user_id=user.id, email=user.email,
        first_name=user.first_name, last_name=user.last_name, role=effective_role(membership),
        last_role=membership.role, role_source=membership.role_source, source=membership.source,
        status=membership.status, managed_by_directory=managed_by_directory(membership),
        created_at=membership.created_at, updated_at=membership.updated_at)


def members_page(session: Session, organization_id: str, flt: MemberFilter | None,
                 page: paging.PageRequest) -> paging.Page[Member]:
    """One page of the organization's members, filtered, in id order."""
    return paging.paginate(session, members_query(organization_id, flt), Membership.id, page,
                           lambda row: member_view(*row), scalars=False)


def managed_by_directory(membership: Membership) -> bool:
    """Whether the customer's directory decides this member's role (the API may not change it)."""
    return membership.source == "directory" or membership.role_source == "mapping"


def load_member(session: Session, organization_id: str, membership_id: str, *,
                for_update: bool = False) -> tuple[Membership, User]:
    """One membership of the organization and its user (rows, for other services), or :class:`NotFound`;
    *for_update*: the membership re-read under a row lock (``SELECT ... FOR UPDATE``), as every transition of it
    reads it first, so a concurrent removal or role change has committed by then and is seen, never overwritten
    (``sessions.lock_for_update``'s rule)."""
    query = members_query(organization_id).where(Membership.id == membership_id)
    if for_update:
        query = query.with_for_update(of=Membership).execution_options(populate_existing=True)
    row = session.execute(query).first()
    if row is None:
        raise NotFound("No such member.")
    return row[0], row[1]


def get_member(session: Session, organization_id: str, membership_id: str) -> Member:
    """One member of the organization, or :class:`NotFound`."""
    return member_view(*load_member(session, organization_id, membership_id))


def change_member_role(session: Session, client: WorkOSClient, *, organization_id: str, membership_id: str, role: str,
                       cause: Cause) -> Member:
    """Set the role of a member the directory does not manage (role source ``manual``). Once committed, the caller
    makes it at WorkOS too (:func:`~.workos_role_push.queue`)."""
    last_admin.lock_organization(session, organization_id)  # before the member's key: one lock order
    fanout_jobs.hold_member_of(session, organization_id, membership_id)
    membership, user = load_member(session, organization_id, membership_id, for_update=True)
    if role not in ROLES:
        raise AppError("Unknown role.", status=422, code="validation_error",
                       details={"fields": {"role": [f"Must be one of: {', '.join(ROLES)}."]}})
    if managed_by_directory(membership):
        raise Conflict("This member's role comes from the directory; change the group mapping instead.",
                       code="managed_by_directory", details={"source": membership.source,
                                                             "role_source": membership.role_source})
    if membership.status != "active":
        raise Conflict(f"The membership is {membership.status}.", code="membership_inactive")
    last_admin.ensure_remains(session, organization_id, membership, to_role=role, active=True,
                              what="Changing the last admin's role")
    workos_memberships.decide_role_here(membership, now=utcnow())
    provisioning.set_access(session, client, membership, role=role, role_source="manual", active=True,
                            cause=cause.with_reason("role changed by an admin"))
    session.flush()
    return member_view(membership, user)


def remove_member(session: Session, client: WorkOSClient, *, organization_id: str, membership_id: str,
                  cause: Cause) -> Member:
    """Remove a member's access (deprovisioned: sessions revoked, keys suspended); the row is kept. Raises
    :class:`NotFound`, :class:`Conflict` (``cannot_remove_self``; ``managed_by_directory``: a member the directory
    provides, whose access its next event or resync would give back; ``last_admin``). The member's directory key is
    held first (``fanout_jobs.hold_member_of``): a directory event of the member never writes back over the removal
    what it read before."""
    last_admin.lock_organization(session, organization_id)  # before the member's key: one lock order
    fanout_jobs.hold_member_of(session, organization_id, membership_id)
    membership, user = load_member(session, organization_id, membership_id, for_update=True)
    if cause.actor.type == "user" and cause.actor.id == user.id:
        raise Conflict("You cannot remove yourself.", code="cannot_remove_self")
    if membership.source == "directory":
        # The directory's next event or resync would give the access back (the overwrite rule): refused, not undone
        raise Conflict("This member comes from the organization's directory, which decides their access: remove or "
                       "suspend them in the identity provider (their access here ends as soon as it tells us). To "
                       "cut it off now, revoke their sessions and suspend their API keys.",
                       code="managed_by_directory", details={"source": membership.source,
                                                             "role_source": membership.role_source})
    # WorkOS's later word on a membership it had made by now does not undo the removal
    workos_memberships.remove_here(membership, now=utcnow())
    if membership.status == "deprovisioned":  # access is gone already; the admin's decision is recorded
        audit.record(session, action="membership.removal_recorded", cause=cause.with_reason("removed by an admin"),
                     organization_id=organization_id, target_type="membership", target_id=membership.id,
                     details={"user_id": user.id, "status": membership.status})
        session.flush()
        return member_view(membership, user)
    last_admin.ensure_remains(session, organization_id, membership, to_role=None, active=False,
                              what="Removing the last admin")
    provisioning.set_access(session, client, membership, role=None, role_source=membership.role_source,
                            active=False, cause=cause.with_reason("removed by an admin"),
                            inactive_status="deprovisioned")
    session.flush()
    return member_view(membership, user)


def grant_admin(session: Session, *, organization_id: str, email: str, actor: Actor,
                workos_version: datetime | None = None) -> Membership:
    """Make *email* an admin of the organization (the first admin, typically; from the CLI); *workos_version*: the
    WorkOS membership's version once WorkOS made them an admin, the decision's time (on WorkOS's clock)."""
    org = get_organization(session, organization_id)
    email = email.strip().lower()
    if "@" not in email:
        raise AppError("Not an email address.", status=422, code="validation_error",
                       details={"fields": {"email": ["Not a valid email address."]}})
    by_email = select(User).where(User.email == email).order_by(User.created_at).limit(1)
    user = session.scalar(by_email)
    if user is None and hold_email(session, email, organization_id=org.id):  # one person per email: look again, locked
        user = session.scalar(by_email)
    if user is None:
        user = User(email=email)
        session.add(user)
        session.flush()
    membership = session.scalar(select(Membership).where(Membership.organization_id == org.id,
                                                         Membership.user_id == user.id)
                                .with_for_update().execution_options(populate_existing=True))
    created = False
    if membership is None:  # or the one a concurrent writer created meanwhile (membership_rows)
        membership, created = membership_rows.created_or_locked(
            session, organization_id=org.id, user_id=user.id, source="manual", status="pending", role=None,
            role_source="manual")
    workos_memberships.decide_role_here(membership, now=workos_version or utcnow())  # WorkOS's clock when known
    if not created and membership.role == Role.ADMIN and membership.status == "active":
        return membership  # nothing changed, the decision is recorded
    details: dict[str, Any] = {"user_id": user.id, "email": email, "created": created}
    if not created:
        details["previous"] = {"role": membership.role, "status": membership.status}
    provisioning.set_access(session, None, membership, role=Role.ADMIN.value, role_source="manual", active=True,
                            cause=Cause.by(actor, reason="admin granted"))
    audit.record(session, action="membership.admin_granted", cause=Cause.by(actor), organization_id=org.id,
                 target_type="membership", target_id=membership.id, details=details)
    session.flush()
    return membership


def new_webhook_secret() -> str:
    """A fresh webhook signing secret."""
    return "whsec_" + secrets.token_urlsafe(32)
