"""Which person a directory user is, and keeping that person equal to what the directory says.

Rules (issue #11):

- **A directory user is one person whatever its email does.** The link ``directory_users.user_id`` is made once
  (by email, the first time, within the domain rules of :mod:`services.domains`) and from then on the directory
  user id decides the person: an email change at the IdP moves the email onto the same ``User`` row, so the
  membership, sessions and API keys stay the person's and a later deactivation ends all of them.
- **Never merge two people silently.** If the new email belongs to another existing person, the directory user
  is refused (``directory_user.link_refused``, reason ``email_held_by_another_person``): its membership is
  deprovisioned and the link is kept, so it is retried when the email is freed (by a job of its own queued by
  the freeing transaction, :mod:`services.freed_email_jobs`) or at the next resync.
  A person who is also a member of another organization is not rewritten by this organization's directory: this
  organization's directory user moves to a person for the new email (``directory_user.relinked``) and the old
  person's membership here is deprovisioned.
- **One membership per directory user**: any other membership in the organization carrying the same
  ``directory_user_id`` is deprovisioned and unlinked (``membership.directory_unlinked``).
- **Mirrored attributes follow the IdP** (:data:`MIRRORED_FIELDS`): the person's email and names are rewritten
  from an active directory user at every change and resync (``user.updated``), the names only where the directory
  speaks for the person (:mod:`.directory_names`).
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, bindparam, insert, or_, select
from sqlalchemy.orm import Session

from ..models import DirectoryUser, Membership, Organization, User, new_id, utcnow
from ..unit_of_work import attach_inserted, reads_flushed
from .directory_names import Names, mirror_names, names_agree, names_listed_elsewhere
from .domains import VerifiedDomains
from .person_email import hold_email, hold_emails
from .provisioning import invalidate_member_caches, set_access
from .resync_state import page_lookup

if TYPE_CHECKING:
    from .events import EventContext

#: Directory user fields mirrored onto the person (``users``), shown by the members API.
PERSON_FIELDS = ("email", "first_name", "last_name")

#: Every attribute mirrored from the IdP -> where we hold it. A new mirrored field is added here (and the resync
#: and ``tests/test_directory_people.py`` cover it from this list).
MIRRORED_FIELDS: dict[str, str] = {
    "email": "users.email",
    "first_name": "users.first_name",
    "last_name": "users.last_name",
    "state": "memberships.status",
    "idp_id": "directory_users.idp_id",
    "attributes": "directory_users.attributes",  # the IdP's custom attributes (job title, department, ...)
}

EMAIL_HELD = "email_held_by_another_person"


@dataclass(frozen=True, slots=True)
class PersonLink:
    """The person a directory user maps to now.

    *user*: the person, or ``None`` (no email, or refused); *refused*: the reason access is refused, if any;
    *relinked*: the directory user's person changed in this call (other memberships must be retired);
    *freed_email*: an email this call took off a person (directory users waiting for it may now link).
    """

    user: User | None
    refused: str | None = None
    relinked: bool = False
    freed_email: str | None = None


def person_differs(du: DirectoryUser, user: User | None, *, names: bool = True) -> bool:
    """Whether the person's mirrored fields differ from the directory user's (the names only when *names*: the
    directory speaks for them, :func:`.directory_names.speaks_for_names`)."""
    return user is not None and any(getattr(user, f) != getattr(du, f) for f in PERSON_FIELDS
                                    if (f != "email" or du.email) and (names or f == "email"))


def new_directory_person(ctx: EventContext, organization_id: str, email: str, first_name: str | None,
                         last_name: str | None) -> User:
    """Insert the ``User`` a directory user's email maps to when none exists yet (now, one statement that flushes
    nothing), audited; returns it as the session holds it."""
    # Inserted now, by one statement that flushes nothing else: the membership row that refers to it may be
    # added next (no ORM relationship orders the two inserts), and the batch's other pending rows wait for its
    # commit (``unit_of_work.reads_flushed``).
    now = utcnow()
    values = {"id": new_id("usr"), "workos_user_id": None, "email": email, "first_name": first_name,
              "last_name": last_name, "last_login_at": None, "created_at": now, "updated_at": now}
    ctx.session.connection().execute(_insert_person_statement(), values)  # the session's would flush first
    user = attach_inserted(ctx.session, User, values)
    ctx.users_by_email[email] = user
    ctx.new_user_ids.add(user.id)
    ctx.record("user.created", organization_id=organization_id, target_type="user", target_id=user.id,
               details={"email": user.email, "source": "directory"})
    return user


def people_by_email(session: Session, emails: Iterable[str], into: dict[str, User | None]) -> None:
    """Set ``into[email]`` to the person of each email of *emails* that has one (its oldest), in one query."""
    wanted = sorted(set(emails))
    found = session.scalars(page_lookup(session, User, None, None, User.email, wanted, unique=False)).all() \
        if wanted else []
    for person in sorted(found, key=lambda u: u.created_at, reverse=True):  # an email's oldest person is kept
        into[person.email] = person


@functools.cache
def _insert_person_statement() -> Any:
    # Built once (bound parameters): a reused statement keeps its cache key; per person only the values bind.
    table = User.__table__
    return insert(table).values({column.name: bindparam(column.name, type_=column.type) for column in table.c})


def membership_of(ctx: EventContext, org: Organization, user_id: str) -> Membership | None:
    """The person's membership of *org* (through the unit of work's cache when it has one)."""
    # A user created in this transaction has no membership before its first lookup (the caller adds it then).
    new_user = user_id in ctx.new_user_ids
    ctx.new_user_ids.discard(user_id)
    cache = ctx.memberships_by_user
    if cache is not None and user_id in cache:
        return cache[user_id]
    if new_user:
        return None
    membership = ctx.session.scalar(_statements().membership_of, {"organization_id": org.id, "user_id": user_id})
    if cache is not None:
        cache[user_id] = membership
    return membership


def membership_and_hanging(ctx: EventContext, org: Organization, user_id: str,
                           du: DirectoryUser) -> tuple[Membership | None, list[Membership]]:
    """The person's membership of *org* (:func:`membership_of`) and every membership of *org* hanging on the
    directory user (:func:`memberships_of_directory_user`, for :func:`retire_other_memberships`), in one query.
    Only for a unit of work without a membership cache (the appliers)."""
    ctx.new_user_ids.discard(user_id)
    rows = list(ctx.session.scalars(_statements().of_person_or_directory_user, {
        "organization_id": org.id, "user_id": user_id, "directory_user_id": du.workos_id}))
    membership = next((m for m in rows if m.user_id == user_id), None)
    return membership, [m for m in rows if m.directory_user_id == du.workos_id]


def memberships_of_directory_user(ctx: EventContext, org: Organization, du: DirectoryUser) -> list[Membership]:
    """Every membership of *org* that hangs on the directory user (one, unless a split is being repaired)."""
    return list(ctx.session.scalars(_statements().of_directory_user,
                                    {"organization_id": org.id, "directory_user_id": du.workos_id}))


@dataclass(frozen=True, slots=True)
class _Statements:
    """The per-event lookups, built once with bound parameters (:func:`_statements`)."""

    membership_of: Select[Membership]
    of_directory_user: Select[Membership]
    of_person_or_directory_user: Select[Membership]
    person_by_email: Select[User]
    member_elsewhere: Select[str]


@functools.cache
def _statements() -> _Statements:
    # A statement object reused keeps its cache key: per event only the values bind (building and keying a new
    # statement per call cost more CPU than running it).
    org = Membership.organization_id == bindparam("organization_id")
    return _Statements(
        membership_of=select(Membership).where(org, Membership.user_id == bindparam("user_id")),
        of_directory_user=select(Membership).where(org, Membership.directory_user_id == bindparam("directory_user_id"))
        .order_by(Membership.created_at, Membership.id),
        of_person_or_directory_user=select(Membership).where(org, or_(
            Membership.user_id == bindparam("user_id"), Membership.directory_user_id == bindparam("directory_user_id")))
        .order_by(Membership.created_at, Membership.id),
        person_by_email=select(User).where(User.email == bindparam("email")).order_by(User.created_at).limit(1),
        member_elsewhere=select(Membership.id).where(Membership.user_id == bindparam("user_id"),
                                                     Membership.organization_id != bindparam("organization_id"))
        .limit(1))


def person_for(ctx: EventContext, org: Organization, du: DirectoryUser) -> PersonLink:
    """The person of an active directory user: its linked person (following an email change), else the person
    its email names (created when none), unless that would merge two people."""
    if du.user_id:
        user = ctx.session.get(User, du.user_id)
        if user is not None:
            return _follow(ctx, org, du, user)
    if not du.email:
        return PersonLink(None)
    if du.email in ctx.users_by_email:
        user = ctx.users_by_email[du.email]
    else:
        user = ctx.session.scalar(_statements().person_by_email, {"email": du.email},
                                  execution_options=reads_flushed(ctx.session, User))
    if user is not None and user.id not in ctx.new_user_ids and _held_by_other_directory_user(ctx, org, du, user):
        if not _hold_email(ctx, du.email):
            return PersonLink(None, refused=EMAIL_HELD)
        user = ctx.session.scalar(_statements().person_by_email, {"email": du.email})  # as freed meanwhile
        if user is not None and _held_by_other_directory_user(ctx, org, du, user):
            return PersonLink(None, refused=EMAIL_HELD)
    if user is None and _hold_email(ctx, du.email):  # one person per email: the look that creates is the locked one
        user = ctx.session.scalar(_statements().person_by_email, {"email": du.email})
    if user is None:
        user = new_directory_person(ctx, du.organization_id, du.email, du.first_name, du.last_name)
    ctx.users_by_email[du.email] = user
    relinked = du.user_id is not None
    du.user_id = user.id
    mirror_names(ctx, org, du, user)
    return PersonLink(user, relinked=relinked)


def _held_by_other_directory_user(ctx: EventContext, org: Organization, du: DirectoryUser, user: User) -> bool:
    # The person found by email already hangs on another live directory user of this organization: linking
    # would give one person to two directory users (the second would take over the first's membership).
    other = ctx.session.scalar(select(DirectoryUser.workos_id).where(
        DirectoryUser.organization_id == org.id, DirectoryUser.user_id == user.id,
        DirectoryUser.workos_id != du.workos_id, DirectoryUser.deleted_at.is_(None)).limit(1))
    return other is not None


def _follow(ctx: EventContext, org: Organization, du: DirectoryUser, user: User) -> PersonLink:
    if not du.email or user.email == du.email:
        mirror_names(ctx, org, du, user)
        return PersonLink(user)
    _hold_email(ctx, du.email)  # the email moves onto a person or a new one: looked for under its lock
    holder = _holder(ctx, du.email, user)
    if holder is not None:
        return PersonLink(user, refused=EMAIL_HELD)
    if _member_elsewhere(ctx, org, user):
        # This directory speaks only for this organization: the person other organizations see keeps their
        # email, and this directory user continues as a person of its own.
        person = new_directory_person(ctx, org.id, du.email, du.first_name, du.last_name)
        ctx.record("directory_user.relinked", organization_id=org.id, target_type="directory_user",
                   target_id=du.workos_id, details={"from_user_id": user.id, "to_user_id": person.id,
                                                    "email": du.email, "reason": "person_in_another_organization"})
        du.user_id = person.id
        return PersonLink(person, relinked=True)
    old = user.email
    user.email = du.email
    ctx.users_by_email.pop(old, None)
    ctx.users_by_email[du.email] = user
    ctx.record("user.email_changed", organization_id=org.id, target_type="user", target_id=user.id,
               details={"from": old, "to": du.email, "directory_user_id": du.workos_id, "source": "directory"})
    invalidate_member_caches(ctx.session, organization_id=org.id, user_id=user.id)
    mirror_names(ctx, org, du, user)
    return PersonLink(user, freed_email=old)


def _holder(ctx: EventContext, email: str, user: User) -> str | None:
    return ctx.session.scalar(select(User.id).where(User.email == email, User.id != user.id).limit(1))


def _hold_email(ctx: EventContext, email: str) -> bool:
    """Hold, until the transaction ends, the email's advisory lock (:mod:`.person_email`); ``True`` when taken now
    (read again what decides: a look made earlier may be older than another transaction's commit), ``False`` on
    SQLite, whose writers take turns, and when this unit of work already holds it (its looks since are current).

    Taken before creating a person or moving an email onto one (one person per email), before a refusal (*email*
    held) and before looking for the users waiting for a freed *email*. Without it the last two crossed: the
    applier freeing the email looked for its waiting users before the refused user's event committed, that event
    had seen the email still held (the freeing not yet committed), and the user stayed refused while its email was
    free (``tests/test_breakswap_email_cycle.py``). With it, whichever holds the lock second reads what the first
    committed."""
    if email in ctx.held_emails or not hold_email(ctx.session, email):
        return False
    ctx.held_emails.add(email)
    return True


def hold_page_emails(ctx: EventContext, organization_id: str, emails: Iterable[str]) -> bool:
    """:func:`_hold_email` for every email of *emails* not held yet, in one statement after the organization's row
    (a resync page's new people: ``person_email``'s lock order); ``True`` when any was taken now."""
    wanted = set(emails) - ctx.held_emails
    if not hold_emails(ctx.session, wanted, organization_id=organization_id):
        return False
    ctx.held_emails |= wanted
    return True


def _member_elsewhere(ctx: EventContext, org: Organization, user: User) -> bool:
    # Deliberately across organizations: whether rewriting this person would change what another tenant sees.
    return ctx.session.scalar(_statements().member_elsewhere,
                              {"user_id": user.id, "organization_id": org.id}) is not None


def retire_other_memberships(ctx: EventContext, org: Organization, du: DirectoryUser, keep: Membership,
                             hanging: list[Membership] | None = None) -> int:
    """Deprovision and unlink every other membership of *org* hanging on the directory user (*hanging*, when the
    caller has read them: :func:`membership_and_hanging`); returns how many."""
    count = 0
    for other in memberships_of_directory_user(ctx, org, du) if hanging is None else hanging:
        if other.id == keep.id:
            continue
        set_access(ctx.session, ctx.client, other, role=None, role_source="mapping", active=False,
                   cause=ctx.cause.with_reason("directory_user_relinked"),
                   details={"directory_user_id": du.workos_id})
        other.directory_user_id = None
        ctx.record("membership.directory_unlinked", organization_id=org.id, target_type="membership",
                   target_id=other.id, details={"user_id": other.user_id, "directory_user_id": du.workos_id,
                                                "kept_membership_id": keep.id})
        count += 1
    return count


def waiting_for(ctx: EventContext, org: Organization, du: DirectoryUser, email: str) -> list[DirectoryUser]:
    """Live directory users of *org* (other than *du*) whose email is *email*, by WorkOS id: they may link now
    that *du*'s transaction frees it.

    The email's lock is held first (:func:`_hold_email`), then they are read: a user refused for the email by a
    transaction in progress is then found, once that transaction commits. They are not synced here, nor their
    entity keys taken: the caller queues a job per user under that user's own key
    (:mod:`services.freed_email_jobs`), so the freeing transaction never waits for another member's key (a cascade
    of freed emails around a ring of users was a livelock of deadlocks when it did)."""
    query = select(DirectoryUser).where(
        DirectoryUser.organization_id == org.id, DirectoryUser.email == email,
        DirectoryUser.workos_id != du.workos_id, DirectoryUser.deleted_at.is_(None)).order_by(DirectoryUser.workos_id)
    _hold_email(ctx, email)  # a refusal of this email in progress commits first: it is found
    return list(ctx.session.scalars(query))


@dataclass(frozen=True, slots=True)
class PageLinks:
    """What a resync page's stored directory users hang on: their memberships' people, and their people.

    *memberships*: ``{directory user WorkOS id: [user ids of the memberships carrying it]}``;
    *people*: ``{user id: User}`` of the linked people; *names_elsewhere*: for those whose email's domain the
    organization did not verify, the names other organizations list them with (:mod:`.directory_names`).
    """

    memberships: dict[str, list[str]] = field(default_factory=dict)
    people: dict[str, User] = field(default_factory=dict)
    names_elsewhere: dict[str, list[Names]] = field(default_factory=dict)

    @classmethod
    def load(cls, session: Session, organization_id: str, stored: Iterable[DirectoryUser],
             verified: VerifiedDomains) -> PageLinks:
        """Three queries for the page (*verified*: every organization's verified domains, read for the page)."""
        rows = list(stored)
        memberships: dict[str, list[str]] = defaultdict(list)
        ids = [du.workos_id for du in rows]
        if ids:
            found: Any = session.execute(page_lookup(
                session, (Membership.directory_user_id, Membership.user_id), Membership.organization_id,
                organization_id, Membership.directory_user_id, ids, unique=False))
            for du_id, user_id in found:
                memberships[str(du_id)].append(user_id)
        user_ids = {du.user_id for du in rows if du.user_id}
        people = {u.id: u for u in session.scalars(page_lookup(session, User, None, None, User.id, sorted(user_ids),
                                                               unique=True))} if user_ids else {}
        elsewhere = {user_id: names for user_id, names in names_listed_elsewhere(
            session, organization_id, user_ids).items()
            if user_id in people and not verified.owns(organization_id, people[user_id].email)}
        return cls(dict(memberships), people, elsewhere)

    def differs(self, du: DirectoryUser, *, active: bool) -> str | None:
        """How the directory user's link differs from the rule (``None`` when it does not): a split (several
        memberships, or one on another person) or, for an active one, a person whose mirrored fields differ."""
        held = self.memberships.get(du.workos_id, [])
        if len(held) > 1:
            return f"{len(held)} memberships"
        if held and du.user_id and held[0] != du.user_id:
            return "membership on another person"
        if active and du.user_id and person_differs(du, self.people.get(du.user_id), names=names_agree(
                du, self.names_elsewhere.get(du.user_id, ()))):
            return "person's attributes"
        return None
