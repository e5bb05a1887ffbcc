"""An organization keeps an active admin: the API refuses to remove the last one; the directory is obeyed but
raises an alert.

Every writer of roles and statuses goes through ``provisioning.set_access``, which calls :func:`reconcile` when a
change concerns an admin: the ``no_active_admin`` alert opens when none is left (a directory event, a sign-in
carrying a new IdP role: the IdP is the source of truth, so the change still applies) and resolves when one
exists again. Writers an admin drives (member role change and removal, mapping and default-role edits) first ask
:func:`ensure_remains` / :func:`ensure_mapping_keeps_admin`, which refuse with 409 ``last_admin``.

Two admins demoting each other at once: the check locks the organization's row (``SELECT ... FOR UPDATE``) before
counting, so the second waits for the first to commit, then counts again and is refused. :func:`reconcile` counts
under the organization's admins lock (:data:`ADMINS_LOCK`), which orders the counts only: each transaction that
changed an admin counts after the earlier ones committed, so the last to count sees every change. On SQLite a
no-op write takes the database's write lock instead of either.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from ..causes import Cause
from ..errors import AppError
from ..models import Membership, Organization, User
from ..roles import Role
from . import alerts, person_email

ADMINS_LOCK = text("SELECT pg_advisory_xact_lock(1094995278, hashtext(:organization_id))")
"""The organization's admins lock (PostgreSQL, until the transaction ends), taken by :func:`reconcile` before it
counts. Not the organization's row: the transactions that reconcile (an applier's batch, a sign-in) share that row
already, and two of them each upgrading their share to an exclusive lock waited for each other until PostgreSQL
rolled one back (a break-it review, under a storm of group-membership webhooks and recompute jobs)."""


class LastAdmin(AppError):
    """The change would leave the organization without an active admin."""

    status = 409
    code = "last_admin"


def lock_organization(session: Session, organization_id: str) -> None:
    """Lock the organization's row for the transaction (the last-admin check's lock). Writers that also need
    members' keys take this lock first, then the keys without waiting for them (``fanout_jobs.try_hold_members``,
    ``fanout_jobs.hold_member_of``): a member's event holds its key before it shares this row."""
    if session.get_bind().dialect.name == "sqlite":
        # SQLite has no row locks and pysqlite starts the transaction at the first write: a no-op write takes the
        # database's write lock now, so a concurrent check waits here and then counts the committed state.
        person_email.hold_organization(session, organization_id)
        return
    session.execute(select(Organization.id).where(Organization.id == organization_id).with_for_update())


def active_admin_ids(session: Session, organization_id: str) -> set[str]:
    """The user ids of the organization's active admins."""
    return set(session.scalars(select(Membership.user_id).where(
        Membership.organization_id == organization_id, Membership.status == "active",
        Membership.role == Role.ADMIN.value)))


def _refuse(organization_id: str, what: str) -> LastAdmin:
    return LastAdmin(f"{what} would leave the organization without an active admin. Make another member an admin "
                     "first.", details={"organization_id": organization_id})


def ensure_remains(session: Session, organization_id: str, membership: Membership, *, to_role: str | None,
                   active: bool, what: str = "This change") -> None:
    """Refuse (:class:`LastAdmin`) giving *membership* role *to_role* / status (*active*) when it is the
    organization's only active admin and would stop being one. Locks the organization's row first."""
    if membership.status != "active" or membership.role != Role.ADMIN.value:
        return
    if active and to_role == Role.ADMIN.value:
        return
    lock_organization(session, organization_id)
    others = session.scalar(select(func.count()).select_from(Membership).where(
        Membership.organization_id == organization_id, Membership.status == "active",
        Membership.role == Role.ADMIN.value, Membership.id != membership.id))
    if not others:
        raise _refuse(organization_id, what)


def ensure_mapping_keeps_admin(session: Session, organization_id: str, admins_after: Iterable[str],
                               what: str = "This mapping change") -> None:
    """Refuse (:class:`LastAdmin`) a mapping or default-role change after which *admins_after* (user ids, from the
    dry run) is empty while the organization has an active admin now."""
    lock_organization(session, organization_id)
    if active_admin_ids(session, organization_id) and not set(admins_after):
        raise _refuse(organization_id, what)


def reconcile(session: Session, organization_id: str, cause: Cause, changed: Membership | None = None) -> None:
    """Open the ``no_active_admin`` alert when the organization has no active admin, resolve it when it has one
    (both audited); called after every change of an admin's role or status (*changed*: that membership). Counts
    under the organization's admins lock (:data:`ADMINS_LOCK`; SQLite: the write turn), so a change made by another
    transaction that counted first is committed and counted: each of two changes counted the other's admin still
    there, and neither alerted (a break-it review); the later count now sees both."""
    session.flush()
    if session.get_bind().dialect.name == "postgresql":
        session.execute(ADMINS_LOCK, {"organization_id": organization_id})
    else:
        lock_organization(session, organization_id)
    if active_admin_ids(session, organization_id):
        alerts.resolve_raised(session, organization_id=organization_id, kind=alerts.NO_ACTIVE_ADMIN,
                              target_id=organization_id, resolution="admin_exists", cause=cause)
        return
    email = session.scalar(select(User.email).where(User.id == changed.user_id)) if changed is not None else None
    alerts.raise_alert(session, organization_id=organization_id, kind=alerts.NO_ACTIVE_ADMIN,
                       target_type="organization", target_id=organization_id,
                       message="The organization has no active admin: its directory removed the last one. Assign "
                               "an admin in the identity provider (or grant one with the `grant-admin` command).",
                       details={"last_admin_email": email,
                                "last_admin_membership_id": changed.id if changed is not None else None,
                                "reason": cause.reason}, cause=cause)
