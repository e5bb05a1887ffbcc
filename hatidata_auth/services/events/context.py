"""What every event handler shares: the event being applied (:class:`EventContext`), payload checks, WorkOS
timestamps, and finding the tenant an event is about.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ...causes import NO_REQUEST, Actor, Cause, RequestInfo
from ...models import Membership, Organization, User
from ...workos import WorkOSClient, WorkOSNotFound
from .. import audit, domains, fanout_jobs, role_mapping
from ..organizations import mirror_organization
from .batch_scope import EventScope

if TYPE_CHECKING:
    from .directory_insert import InsertedUser


class PayloadError(ValueError):
    """The event's data does not have the shape its type needs."""



CLOCK_TOLERANCE = timedelta(seconds=5)
"""How far WorkOS's clock and ours may drift apart where a decision compares them; each user errs on the side that
keeps access away (``services.workos_memberships``: a membership WorkOS created up to this long after an admin's
removal is held as made before it; ``directory_state``: a late deprovisioning ends the credentials made up to this
long after it)."""


def parse_time(value: Any) -> datetime | None:
    """Parse a WorkOS timestamp (``2024-01-15T09:00:00.000Z`` or ``2023-04-28 20:05:31.093``)."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value
    text = str(value).strip().replace(" ", "T", 1).replace("Z", "+00:00")
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


@dataclass
class EventContext:
    """One event being applied: the session, the WorkOS client, who acts and the event's identity."""

    session: Session
    client: WorkOSClient | None
    event_id: str | None
    event_type: str
    event_time: datetime
    actor: Actor = field(default_factory=Actor.workos)
    request: RequestInfo = NO_REQUEST
    outcome: str = "applied"
    note: str | None = None
    organization: Organization | None = None
    # Tenants this event has read with a lock (the directory event's binding), by WorkOS organization id: later
    # lookups by that id reuse the row, which the session's identity map would return unchanged anyway.
    locked_organizations: dict[str, Organization] = field(default_factory=dict)
    # Set by the last user upsert: whether anything that decides access (state, email, existence) or is mirrored
    # onto the person (names) changed.
    access_changed: bool = False
    # Set with it: whether what changed is only mirrored names (``first_name``, ``last_name``), which move no
    # access: the handler then mirrors them without recomputing the membership (``mirror_settled_names``).
    names_only: bool = False
    _mappings: dict[str, list[role_mapping.MappingSpec]] = field(default_factory=dict)
    # Lookups already made in this unit of work (the resync preloads them a page at a time).
    users_by_email: dict[str, User | None] = field(default_factory=dict)
    # Persons read with their directory user's lock (``directory_state.locked_directory_user``), held here: the
    # session's identity map keeps only what is referenced, and ``Session.get`` then finds them without a query.
    people_read: list[User] = field(default_factory=list)
    # The same statement's membership of the person in the organization, by directory user (WorkOS id): ``None``
    # when it found none; absent when not read that way.
    linked_memberships: dict[str, Membership | None] = field(default_factory=dict)
    memberships_by_user: dict[str, Membership | None] | None = None
    # What the insert of a directory user (WorkOS id) found in the same statement (``directory_insert.InsertedUser``),
    # until its handler takes it.
    inserted_users: dict[str, InsertedUser] = field(default_factory=dict)
    # Users this unit of work has just created and that have no membership yet (none can exist: the row is
    # not visible to any other transaction), so the membership lookup is skipped for them.
    new_user_ids: set[str] = field(default_factory=set)
    # Directory users (WorkOS ids) this unit of work has just inserted: no membership can carry their id yet but
    # the one it links (directory user rows are never deleted, so no earlier row had the id), so the search for
    # other memberships hanging on them is skipped.
    new_directory_user_ids: set[str] = field(default_factory=set)
    # Emails whose lock (``services.person_email``) this unit of work holds: a look for their person made since is
    # current, none needs taking again.
    held_emails: set[str] = field(default_factory=set)
    # Domain ownership read once for the whole unit of work (the resync sets it per page); None: ask each time.
    verified_domains: domains.VerifiedDomains | None = None
    # Members one transaction recomputes at most (HATIDATA_FANOUT_CHUNK): more are queued as a recompute job.
    fanout_chunk: int = fanout_jobs.DEFAULT_CHUNK
    # What the transaction's batch may still recompute (shared by its events); None: this event alone, one chunk.
    member_budget: fanout_jobs.MemberBudget | None = None
    # What the applier's batch has established in its transaction (locked tenants, verified domains, role mappings)
    # and what this event adds to it; None: this event alone.
    scope: EventScope | None = None

    def fanout_allowance(self) -> int:
        """How many members a fan-out of this event may recompute in its transaction now."""
        return self.fanout_chunk if self.member_budget is None else self.member_budget.allowance(self.fanout_chunk)

    def spend_members(self, members: int) -> None:
        """A fan-out recomputed *members* in this transaction."""
        if self.member_budget is not None:
            self.member_budget.spend(members)

    @property
    def cause(self) -> Cause:
        """Why this event's changes happen: its actor, its request (a replay's) and its id."""
        return Cause(self.actor, self.request, self.event_id)

    def record(self, action: str, *, organization_id: str | None, target_type: str | None = None,
               target_id: str | None = None, details: dict[str, Any] | None = None,
               outcome: str = "success") -> None:
        """Audit one change caused by this event."""
        audit.record(self.session, action=action, cause=self.cause, organization_id=organization_id,
                     target_type=target_type, target_id=target_id, outcome=outcome, details=details)

    def mappings(self, organization_id: str) -> list[role_mapping.MappingSpec]:
        """The organization's role mappings, read once per event (once per batch: :mod:`.batch_scope`)."""
        if self.scope is not None:
            return self.scope.mappings(organization_id)
        if organization_id not in self._mappings:
            self._mappings[organization_id] = role_mapping.list_mappings(self.session, organization_id)
        return self._mappings[organization_id]

    def foreign_owner(self, organization_id: str, email: str | None) -> str | None:
        """The organization other than *organization_id* that verified the email's domain, if any."""
        found = self._verified_domains(email)
        return None if found is None else found.foreign_owner(organization_id, email)

    def owns_domain(self, organization_id: str, email: str | None) -> bool:
        """Whether *organization_id* is the organization (the oldest, if several) that verified the email's domain:
        the authority for the address (:mod:`services.domains`)."""
        found = self._verified_domains(email)
        return found is not None and found.owns(organization_id, email)

    def _verified_domains(self, email: str | None) -> domains.VerifiedDomains | None:
        # The unit of work's, else the batch's (read once), else read now; None for an email without a domain.
        if self.verified_domains is not None:
            return self.verified_domains
        if not domains.email_domain(email):
            return None
        if self.scope is not None:
            return self.scope.verified_domains()
        return domains.VerifiedDomains.load(self.session)

    def ignore(self, note: str) -> None:
        """Mark the event as acknowledged but not applied."""
        self.outcome = "ignored"
        self.note = note


def require(data: Any, *keys: str) -> dict[str, Any]:
    """*data* as an object holding every one of *keys*; raises :class:`PayloadError` otherwise."""
    if not isinstance(data, dict):
        raise PayloadError("data must be an object")
    missing = [k for k in keys if k not in data]
    if missing:
        raise PayloadError(f"data lacks {', '.join(missing)}")
    return data


def find_organization(session: Session, workos_organization_id: str | None = None,
                      directory_id: str | None = None) -> Organization | None:
    """Our tenant for a WorkOS organization id (or, failing that, a directory id)."""
    if workos_organization_id:
        org: Organization | None = session.scalar(select(Organization).where(
            Organization.workos_organization_id == workos_organization_id))
        if org is not None:
            return org
    if directory_id:
        return session.scalar(select(Organization).where(Organization.directory_id == directory_id).limit(1))
    return None


def resolve_organization(ctx: EventContext, workos_organization_id: str | None,
                         directory_id: str | None = None) -> Organization | None:
    """Find the tenant (the row this event locked, if it did); mirror it from WorkOS first if we have never seen it."""
    org = ctx.locked_organizations.get(workos_organization_id) if workos_organization_id else None
    if org is None:
        org = find_organization(ctx.session, workos_organization_id, directory_id)
    if org is None and workos_organization_id and ctx.client is not None:
        try:
            mirror_organization(ctx.session, ctx.client, workos_organization_id, ctx.actor)
        except WorkOSNotFound:  # WorkOS does not know it: unknown here too
            return None
        org = find_organization(ctx.session, workos_organization_id, directory_id)
    ctx.organization = org
    return org


def directory_deleted(org: Organization, directory_id: str | None) -> bool:
    """Whether *directory_id* is the organization's directory and WorkOS deleted it (final for that id)."""
    return bool(directory_id) and org.directory_id == directory_id and org.directory_state == "deleted"


def dsync_org(ctx: EventContext, data: dict[str, Any]) -> Organization | None:
    """The tenant of a ``dsync.*`` object, or ``None`` (the event is then marked ignored on *ctx*)."""
    org = resolve_organization(ctx, data.get("organization_id"), data.get("directory_id"))
    if org is None:
        ctx.ignore("unknown organization")
        return None
    if directory_deleted(org, data.get("directory_id")):
        ctx.ignore("directory deleted")
        return None
    return org
