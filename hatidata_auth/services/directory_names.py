"""Whose directory writes a person's names.

A person (``users``) is one row for every organization it belongs to; each organization's directory user holds
its own directory's names. **A directory writes the person's names only where it speaks for the person**: its
organization verified the email's domain (the authority for the address, as for sign-ins and links:
:mod:`services.domains`), or every other organization that still has the person as a live member
(:data:`LIVE_MEMBERSHIP`, the organization live) lists it in its directory with the same names (none: the person
is this organization's alone). Otherwise one tenant's IdP renamed the person every other tenant sees, and two
directories listing one person with different names renamed it in turn at every event and resync. Directories
that agree rename the person whatever order their events take; a membership elsewhere that was let go
(deprovisioned, inactive, its organization deleted) holds nothing; one that no directory of its organization lists
has no names to agree with. A rename held back is applied by the renaming directory user's next event or resync,
not by the other organization letting the person go. The events (:func:`mirror_names`, from
``directory_people``) and the resync (``directory_people.PageLinks``) apply the one rule; a sign-in leaves the
names of a person a directory lists to the directories (:func:`listed_by_a_directory`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import ARRAY, Select, String, and_, bindparam, func, select, text, true
from sqlalchemy.orm import Session

from ..models import DirectoryUser, Membership, Organization, User
from ..unit_of_work import reads_flushed

if TYPE_CHECKING:
    from .events import EventContext

LIVE_MEMBERSHIP = ("active", "pending")
"""The statuses of a membership whose organization still shows the person as its member (a deprovisioned or
inactive one was let go)."""


Names = tuple[str | None, str | None] | None
"""A person's names as one organization lists them: its live directory user's ``(first, last)``, or ``None`` when no
directory of that organization lists the person (a membership added by hand or by a sign-in): no names to agree
with."""


def names_listed_elsewhere(session: Session, organization_id: str, user_ids: Iterable[str],
                           execution_options: Mapping[str, Any] | None = None) -> dict[str, list[Names]]:
    """For each of the people *user_ids*, the names every other live organization where it is a live member
    (:data:`LIVE_MEMBERSHIP`) lists it with (:data:`Names`); a person with no such membership is absent.

    Found by the person, never by the organization: the person's memberships by ``user_id``, one index lookup per
    person, then each one's organization and directory user by key. A join filtered by ``user_id IN (...)``,
    planned without statistics (a fresh database, a first resync), scanned the memberships of every organization
    for each page, so each page cost the organization's size (14 ms a page at 100,000 members, 0.2 ms of a no-op
    resync's 0.7 ms per user). One statement: on PostgreSQL lateral lookups over ``unnest(:keys)`` (as
    ``resync_state.page_lookup``); on SQLite the plain join."""
    keys = sorted(set(user_ids))
    if not keys:
        return {}
    out: dict[str, list[Names]] = {}
    for user_id, row_id, first, last in session.execute(
            _elsewhere(session.get_bind().dialect.name), {"keys": keys, "organization_id": organization_id},
            execution_options=dict(execution_options or {})):
        out.setdefault(user_id, []).append(None if row_id is None else (first, last))
    return out


@functools.cache  # built once per dialect, bound parameters: a reused statement keeps its cache key
def _elsewhere(dialect: str) -> Select[str, str | None, str | None, str | None]:
    """One statement: the people's live memberships elsewhere by person, each one's organization by its key and
    its directory user by (organization, WorkOS id)."""
    live = (Membership.organization_id != bindparam("organization_id"), Membership.status.in_(LIVE_MEMBERSHIP))
    org_live = (Organization.live,)
    if dialect != "postgresql":
        return (select(Membership.user_id, DirectoryUser.id, DirectoryUser.first_name, DirectoryUser.last_name)
                .join(Organization, Organization.id == Membership.organization_id)
                .outerjoin(DirectoryUser, and_(DirectoryUser.organization_id == Membership.organization_id,
                                               DirectoryUser.workos_id == Membership.directory_user_id,
                                               DirectoryUser.deleted_at.is_(None)))
                .where(Membership.user_id.in_(bindparam("keys", expanding=True)), *live, *org_live))
    keyed = func.unnest(bindparam("keys", type_=ARRAY(String))).table_valued("key").render_derived()
    held = (select(Membership.user_id, Membership.organization_id, Membership.directory_user_id)
            .where(Membership.user_id == keyed.c.key, *live).offset(0).lateral())
    org = (select(Organization.id).where(Organization.id == held.c.organization_id, *org_live)
           .limit(1).lateral())
    du = (select(DirectoryUser.id, DirectoryUser.first_name, DirectoryUser.last_name)
          .where(DirectoryUser.organization_id == held.c.organization_id,
                 DirectoryUser.workos_id == held.c.directory_user_id, DirectoryUser.deleted_at.is_(None))
          .limit(1).lateral())
    return (select(held.c.user_id, du.c.id, du.c.first_name, du.c.last_name).select_from(keyed)
            .join(held, true()).join(org, true()).outerjoin(du, true()))


def names_agree(du: DirectoryUser, elsewhere: Iterable[Names]) -> bool:
    """Whether every other organization lists the person (:func:`names_listed_elsewhere`) with *du*'s names."""
    return all(names is not None and names == (du.first_name, du.last_name) for names in elsewhere)


PERSON_NAMES_LOCK = text("SELECT pg_advisory_xact_lock(1347308800, hashtext(:user_id))")
"""A person's names lock: the two-key form (class ``0x504E4D00``, "PNM"), apart from the email locks
(``person_email.EMAIL_LOCK``) and the one-key entity locks."""


def speaks_for_names(ctx: EventContext, org: Organization, du: DirectoryUser, user: User) -> bool:
    """Whether *org*'s directory may write *du*'s names onto *user* (the module's rule). One query unless the
    domain decides."""
    if ctx.owns_domain(org.id, user.email):
        return True
    if user.id in ctx.new_user_ids:
        return True  # created by this unit of work: no other transaction can have given it a membership
    if ctx.session.get_bind().dialect.name == "postgresql":
        # Two directories agreeing at once, in two transactions, each read the other's old names and neither wrote:
        # the second now waits for the first and reads what it committed (SQLite's writers take turns anyway).
        ctx.session.execute(PERSON_NAMES_LOCK, {"user_id": user.id})
    elsewhere = names_listed_elsewhere(ctx.session, org.id, [user.id], execution_options=reads_flushed(
        ctx.session, Membership, DirectoryUser, Organization))
    return names_agree(du, elsewhere.get(user.id, ()))


def mirror_names(ctx: EventContext, org: Organization, du: DirectoryUser, user: User) -> None:
    """Rewrite the person's names from the directory user's, audited (``user.updated``), when they differ and
    the directory speaks for them (:func:`speaks_for_names`)."""
    changed = {f: [getattr(user, f), getattr(du, f)] for f in ("first_name", "last_name")
               if getattr(user, f) != getattr(du, f)}
    if not changed or not speaks_for_names(ctx, org, du, user):
        return
    for name, (_, value) in changed.items():
        setattr(user, name, value)
    ctx.record("user.updated", organization_id=org.id, target_type="user", target_id=user.id,
               details={"changed": changed, "directory_user_id": du.workos_id, "source": "directory"})


def listed_by_a_directory(session: Session, user_id: str | None) -> bool:
    """Whether a live organization's directory lists the person as a live member: its names (and email) are the
    directories' (the rule above), and a sign-in does not overwrite them with those of WorkOS's user record
    (``sign_in_person.upsert``), which would undo each directory write until the next event or resync.

    Listed as :func:`names_listed_elsewhere` counts a listing: through a directory user that is not a tombstone. A
    deleted directory's members stay live until their chunk of the fan-out deactivates them, and meanwhile no
    directory speaks for their names: a sign-in writes them."""
    if user_id is None:
        return False
    listings = names_listed_elsewhere(session, EVERY_ORGANIZATION, [user_id]).get(user_id, ())
    return any(names is not None for names in listings)


EVERY_ORGANIZATION = ""
"""The *organization_id* of :func:`names_listed_elsewhere` that excludes none (no organization has an empty id)."""
