"""The full directory resync (the Events API poller is :mod:`services.events_poller`).

It goes through the same code as the webhooks: it applies the directory's current
users, groups and memberships through the same version-guarded upserts, then tombstones what WorkOS no longer
lists. It is idempotent. :func:`full_resync` runs named steps: :func:`mirror_groups`, :func:`load_held`,
:func:`mirror_user_pages` (per page :func:`prepare_people`, then per user :func:`mirror_user` with
:func:`reconcile_memberships` and :func:`access_drifted`), :func:`retire_missing_users`, :func:`record_resync`.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from itertools import chain, islice
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..causes import Actor
from ..models import (
    DirectoryGroup,
    DirectoryGroupMembership,
    DirectoryUser,
    Membership,
    Organization,
    User,
    new_id,
    utcnow,
)
from ..workos import WorkOSClient
from . import directory_people, domains, event_source, role_mapping
from .demo_mappings import DEMO_GROUP_ROLES as DEMO_GROUP_ROLES
from .demo_mappings import ensure_demo_mappings as ensure_demo_mappings
from .directory_people import new_directory_person
from .events import EventContext
from .events.directory_state import LOOKUP as _LOOKUP
from .events.directory_state import (
    set_group_membership,
    sync_member,
    upsert_directory_group,
    upsert_directory_user,
)
from .events.directory_state import user_fields as _user_fields

# --- the full resync ------------------------------------------------------------------------------------------


@dataclass
class ResyncReport:
    """What a full resync found different from WorkOS, and fixed."""

    organization_id: str
    directory_id: str | None
    users_seen: int = 0
    groups_seen: int = 0
    users_created: int = 0
    users_updated: int = 0
    users_deleted: int = 0
    groups_created: int = 0
    groups_updated: int = 0
    groups_deleted: int = 0
    memberships_added: int = 0
    memberships_removed: int = 0
    access_repaired: int = 0
    objects_refused: int = 0  # listed objects of another directory or organization, not applied
    people_repaired: int = 0
    seconds: float = 0.0
    examples: list[str] = field(default_factory=list)

    @property
    def differences(self) -> int:
        """How many differences were found (and fixed)."""
        return (self.users_created + self.users_updated + self.users_deleted + self.groups_created
                + self.groups_updated + self.groups_deleted + self.memberships_added + self.memberships_removed
                + self.access_repaired + self.people_repaired)

    def note(self, text: str) -> None:
        """Keep a few examples of what differed."""
        if len(self.examples) < 20:
            self.examples.append(text)

    def to_dict(self) -> dict[str, Any]:
        """JSON view."""
        return {**asdict(self), "differences": self.differences}


@dataclass
class _Run:
    """One resync run: what every step needs."""

    session: Session
    client: WorkOSClient
    organization_id: str
    directory_id: str
    actor: Actor
    page_size: int
    report: ResyncReport
    started: datetime = field(default_factory=utcnow)
    run_id: str = field(default_factory=lambda: new_id("resync")[:64])
    keep: Callable[[dict[str, Any]], bool] = field(default=lambda _data: True)

    def context(self) -> EventContext:
        """A fresh event context for one unit of work of the run."""
        return EventContext(session=self.session, client=self.client, event_id=self.run_id, event_type="resync",
                            event_time=self.started, actor=self.actor)

    def organization(self) -> Organization:
        """The organization, reloaded (after a commit)."""
        org = self.session.get(Organization, self.organization_id)
        assert org is not None
        return org


@dataclass
class _Held:
    """What we hold once the groups are mirrored, loaded once for the user pages."""

    memberships: dict[str, dict[str, bool]]
    live_groups: dict[str, role_mapping.GroupRef]
    access: dict[str | None, tuple[str | None, str, str]]
    local_users: dict[str, tuple[str, str | None]]
    index: dict[tuple[str, str], role_mapping.MappingSpec]
    default_role: str | None
    org_active: bool


def full_resync(session: Session, client: WorkOSClient, *, organization_id: str, actor: Actor | None = None,
                page_size: int = 100) -> ResyncReport:
    """Make our mirror of the organization's directory equal WorkOS's, reporting each difference fixed.

    Reads the directory list endpoints page by page (groups first, then users with their groups), loads what
    we hold for each page of users in a few queries, commits every page, and tombstones users and groups
    WorkOS no longer lists.
    """
    started_clock = time.monotonic()
    org = session.get(Organization, organization_id)
    if org is None:
        raise LookupError(f"no organization {organization_id}")
    report = ResyncReport(organization_id, org.directory_id)
    if not org.directory_id or org.directory_state == "deleted":
        return report
    run = _Run(session, client, organization_id, org.directory_id, actor or Actor.system("resync"), page_size,
               report)
    ctx = run.context()
    keep = event_source.resync_guard(ctx, event_source.EventSource(run.directory_id, org.workos_organization_id),
                                     report)
    if keep is None:
        session.commit()  # the refusal's audit event
        return report
    run.keep = keep
    mirror_groups(run, ctx, org)
    held = load_held(run)
    seen_users = mirror_user_pages(run, held)
    report.users_seen = len(seen_users)
    retire_missing_users(run, sorted(set(held.local_users) - seen_users), held)
    record_resync(run, started_clock)
    return report


def mirror_groups(run: _Run, ctx: EventContext, org: Organization) -> None:
    """Apply every group WorkOS lists, tombstone the ones it no longer lists, and commit."""
    report, session = run.report, run.session
    local_groups = {g.workos_id: g for g in session.scalars(select(DirectoryGroup).where(
        DirectoryGroup.organization_id == org.id, DirectoryGroup.directory_id == run.directory_id,
        DirectoryGroup.deleted_at.is_(None)))}
    seen_groups: set[str] = set()
    listed = run.client.directory_sync.list_groups(directory=run.directory_id, limit=run.page_size, order="asc")
    for group in chain.from_iterable(_pages(listed.auto_paging_iter(), run.page_size)):
        data = group.to_dict()
        if not run.keep(data):
            continue
        seen_groups.add(data["id"])
        before = local_groups.get(data["id"])
        state = None if before is None else (before.name, before.idp_id)
        row, changed = upsert_directory_group(ctx, org, data)
        if changed and row is not None:
            if before is None:
                report.groups_created += 1
                report.note(f"group {data['name']!r} was missing")
            elif state != (row.name, row.idp_id):
                report.groups_updated += 1
                report.note(f"group {data['id']} was {state[0] if state else None!r}, now {row.name!r}")
    report.groups_seen = len(seen_groups)
    for workos_id, group in local_groups.items():
        if workos_id not in seen_groups:
            upsert_directory_group(ctx, org, {"id": workos_id, "directory_id": run.directory_id, "name": group.name,
                                              "idp_id": group.idp_id}, deleted=True)
            report.groups_deleted += 1
            report.note(f"group {group.name!r} no longer exists")
    session.commit()


def load_held(run: _Run) -> _Held:
    """Load what we hold now (group memberships, live groups, access, directory users, mappings), once."""
    session, org = run.session, run.organization()
    memberships: dict[str, dict[str, bool]] = defaultdict(dict)
    for user_workos_id, group_workos_id, present in session.execute(
            select(DirectoryGroupMembership.user_workos_id, DirectoryGroupMembership.group_workos_id,
                   DirectoryGroupMembership.present)
            .where(DirectoryGroupMembership.organization_id == org.id)):
        memberships[user_workos_id][group_workos_id] = present
    live_groups = {g.workos_id: role_mapping.GroupRef(g.name, g.idp_id, g.workos_id)
                   for g in session.scalars(select(DirectoryGroup).where(DirectoryGroup.organization_id == org.id,
                                                                        DirectoryGroup.deleted_at.is_(None)))}
    access = {directory_user_id: (role, status, source) for directory_user_id, role, status, source in session.execute(
        select(Membership.directory_user_id, Membership.role, Membership.status, Membership.source)
        .where(Membership.organization_id == org.id, Membership.directory_user_id.is_not(None)))}
    local_users = {workos_id: (state, email) for workos_id, state, email in session.execute(
        select(DirectoryUser.workos_id, DirectoryUser.state, DirectoryUser.email)
        .where(DirectoryUser.organization_id == org.id, DirectoryUser.directory_id == run.directory_id,
               DirectoryUser.deleted_at.is_(None)))}
    index = {m.key: m for m in role_mapping.list_mappings(session, org.id)}
    return _Held(memberships, live_groups, access, local_users, index, org.default_role, org.status == "active")


def mirror_user_pages(run: _Run, held: _Held) -> set[str]:
    """Apply WorkOS's users page by page, one unit of work (and one commit) per page; return the ids seen."""
    seen_users: set[str] = set()
    for page in _user_pages(run.client, run.directory_id, run.page_size):
        org = run.organization()
        ctx = run.context()
        # One page, one unit of work: its rows are loaded in three queries, its changes are flushed together
        # (batched INSERTs, one chained audit write) and committed at the end of the page.
        datas = [d for d in (u.to_dict() for u in page) if run.keep(d)]
        stored = {du.workos_id: du for du in run.session.scalars(select(DirectoryUser).where(
            DirectoryUser.organization_id == org.id, DirectoryUser.workos_id.in_([d["id"] for d in datas])))}
        links = directory_people.PageLinks.load(run.session, org.id, stored.values())
        prepare_people(run, ctx, org, datas, stored, held.org_active)
        for data in datas:
            seen_users.add(data["id"])
            mirror_user(run, held, ctx, org, data, stored.get(data["id"]), links)
        run.session.commit()
    return seen_users


def prepare_people(run: _Run, ctx: EventContext, org: Organization, datas: list[dict[str, Any]],
                   stored: dict[str, DirectoryUser], org_active: bool) -> None:
    """Look up the page's people by email, and create in one batch the people its new active users map to."""
    session = run.session
    # People are looked up only for users that may need membership work (new, or email not linked yet).
    emails = {e for e, d in ((upsert_email(d), d) for d in datas)
              if e and (d["id"] not in stored or stored[d["id"]].email != e or not stored[d["id"]].user_id)}
    # A linked directory user keeps its person whatever its email does: no new person for its new email.
    unlinked = {upsert_email(d) for d in datas if d["id"] not in stored or not stored[d["id"]].user_id}
    users_by_email: dict[str, User | None] = dict.fromkeys(emails)
    if emails:
        for found in session.scalars(select(User).where(User.email.in_(emails)).order_by(User.created_at)):
            if users_by_email.get(found.email) is None:
                users_by_email[found.email] = found
    ctx.users_by_email = users_by_email
    ctx.memberships_by_user = {}
    if not org_active:
        return
    for data in datas:
        email = upsert_email(data)
        if email in emails and email in unlinked and users_by_email[email] is None and \
                (data.get("state") or "active") == "active" and \
                domains.foreign_owner(session, org.id, email) is None:
            person = new_directory_person(ctx, org.id, email, data.get("first_name"), data.get("last_name"))
            ctx.memberships_by_user[person.id] = None  # a new person has no membership yet
    session.flush()


def mirror_user(run: _Run, held: _Held, ctx: EventContext, org: Organization, data: dict[str, Any],
                existing: DirectoryUser | None, links: directory_people.PageLinks) -> None:
    """Apply one listed user, its group memberships and its access; repair what differed."""
    report, uid = run.report, data["id"]
    wanted = {g["id"] for g in data.pop("groups", None) or []}
    existed = uid in held.local_users
    row, changed = upsert_directory_user(ctx, org, data, existing=existing)
    if row is None or row.deleted_at is not None:
        return
    if changed:
        if existed:
            report.users_updated += 1
            report.note(f"user {row.email or uid} differed")
        else:
            report.users_created += 1
            report.note(f"user {row.email or uid} was missing")
    groups_changed = reconcile_memberships(run, ctx, org, uid, wanted, held.memberships.get(uid, {}))
    user_groups = [held.live_groups[g] for g in sorted(wanted) if g in held.live_groups]
    drifted = False
    if not changed and not groups_changed and row.email:
        drifted = access_drifted(held, row, user_groups)
        if drifted:
            report.access_repaired += 1
            report.note(f"access of {row.email} differed ({held.access.get(uid)})")
    split = links.differs(row, active=row.state == "active" and held.org_active)
    if split and not changed:
        report.people_repaired += 1
        report.note(f"person of {row.email or uid} differed ({split})")
    if changed or groups_changed or drifted or split:
        sync_member(ctx, org, row, reason="resync", groups=user_groups, repair_split=bool(split))


def reconcile_memberships(run: _Run, ctx: EventContext, org: Organization, uid: str, wanted: set[str],
                          held: dict[str, bool]) -> bool:
    """Add the user's listed groups we lack and remove the ones no longer listed; whether anything changed."""
    changed = False
    for gid in sorted(wanted):
        if not held.get(gid):
            set_group_membership(ctx, org, gid, uid, True, run.started, None,
                                 existing=None if gid not in held else _LOOKUP)
            run.report.memberships_added += 1
            changed = True
            held[gid] = True
    for gid, present in list(held.items()):
        if present and gid not in wanted:
            set_group_membership(ctx, org, gid, uid, False, run.started, None)
            run.report.memberships_removed += 1
            changed = True
            held[gid] = False
    return changed


def access_drifted(held: _Held, row: DirectoryUser, user_groups: list[role_mapping.GroupRef]) -> bool:
    """Whether the member's stored access differs from what their groups and the mappings give."""
    expected = role_mapping.resolve_role(user_groups, held.index, held.default_role)
    have = held.access.get(row.workos_id)
    if row.state == "active" and held.org_active:
        want_status = "active" if expected.role is not None else "inactive"
        return have is None or have[1] != want_status or have[2] != "directory" or (
            want_status == "active" and have[0] != expected.role)
    return have is not None and have[1] == "active"


def retire_missing_users(run: _Run, gone: list[str], held: _Held) -> None:
    """Tombstone the users WorkOS no longer lists, a page at a time (one commit each)."""
    session = run.session
    for start in range(0, len(gone), run.page_size):
        chunk = gone[start:start + run.page_size]
        org = run.organization()
        ctx = run.context()
        rows = {du.workos_id: du for du in session.scalars(select(DirectoryUser).where(
            DirectoryUser.organization_id == org.id, DirectoryUser.workos_id.in_(chunk)))}
        person_ids = [du.user_id for du in rows.values() if du.user_id]
        ctx.memberships_by_user = dict.fromkeys(person_ids)
        if person_ids:
            for membership in session.scalars(select(Membership).where(
                    Membership.organization_id == org.id, Membership.user_id.in_(person_ids))):
                ctx.memberships_by_user[membership.user_id] = membership
        for uid in chunk:
            user_state, email = held.local_users[uid]
            row, changed = upsert_directory_user(ctx, org, {"id": uid, "directory_id": run.directory_id,
                                                            "email": email, "state": user_state}, deleted=True,
                                                 existing=rows.get(uid))
            if row is not None and changed:
                sync_member(ctx, org, row, reason="resync_user_gone")
                run.report.users_deleted += 1
                run.report.note(f"user {email or uid} no longer exists")
        session.commit()


def record_resync(run: _Run, started_clock: float) -> None:
    """Audit the run with its report, and commit."""
    org = run.organization()
    run.report.seconds = round(time.monotonic() - started_clock, 3)
    run.context().record("directory.resynced", organization_id=org.id, target_type="directory",
                         target_id=run.directory_id,
                         details={k: v for k, v in run.report.to_dict().items() if k not in ("organization_id",)})
    run.session.commit()


def _user_pages(client: WorkOSClient, directory_id: str, page_size: int) -> Any:
    """The directory's users, *page_size* at a time (a list each), oldest first."""
    users = client.directory_sync.list_users(directory=directory_id, limit=page_size, order="asc").auto_paging_iter()
    return _pages(users, page_size)


def _pages(items: Iterator[Any], page_size: int) -> Iterator[list[Any]]:
    """*items* (the SDK's ``auto_paging_iter()``) *page_size* at a time, each read with ``islice``."""
    while batch := list(islice(items, page_size)):
        yield batch


def upsert_email(data: dict[str, Any]) -> str | None:
    """The (lower-cased) email a directory user snapshot maps to, as ``upsert_directory_user`` stores it."""
    return _user_fields(data)["email"]


def resync_all(session: Session, client: WorkOSClient, *, actor: Actor | None = None) -> list[ResyncReport]:
    """Resync every active organization that has a directory."""
    ids = list(session.scalars(select(Organization.id).where(Organization.directory_id.is_not(None),
                                                             Organization.status == "active")))
    session.rollback()
    return [full_resync(session, client, organization_id=org_id, actor=actor) for org_id in ids]
