"""The full directory resync (the Events API poller is :mod:`services.events_poller`).

It goes through the same code as the webhooks: it applies the directory's current
users, groups and memberships through the same version-guarded upserts, then tombstones what WorkOS no longer
lists. It is idempotent. :func:`full_resync` runs named steps: :func:`mirror_groups`, :func:`load_held`,
:func:`mirror_user_pages` (per page :func:`prepare_people`, then per user :func:`mirror_user` with
:func:`reconcile_memberships` and :func:`access_drifted`), :func:`retire_missing_users`, :func:`record_resync`.

One pass over WorkOS's pages, each a unit of work whose reads and writes are set operations on that page alone
(:mod:`services.resync_state`): nothing is loaded for the whole organization, so time and memory per user stay
flat as the directory grows. The run's cursor is saved with each page: a resync that crashed resumes after its last
committed page (same run id, same counters, no audit event twice).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain, islice
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import lasting_effects
from ..causes import Actor
from ..models import DirectoryGroup, DirectoryUser, Membership, Organization, ResyncCursor, User, new_id, utcnow
from ..workos import WorkOSClient
from . import (
    db_conflicts,
    directory_people,
    domains,
    event_source,
    fanout_jobs,
    resync_state,
    role_mapping,
    workos_revocations,
)
from .demo_mappings import DEMO_GROUP_ROLES as DEMO_GROUP_ROLES
from .demo_mappings import ensure_demo_mappings as ensure_demo_mappings
from .events import EventContext
from .events.directory_state import sync_member, upsert_directory_group, upsert_directory_user
from .events.directory_state import user_fields as _user_fields
from .resync_report import ResyncReport as ResyncReport

# --- the full resync ------------------------------------------------------------------------------------------


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
    """What the user pages share, loaded once the groups are mirrored (the live groups are bounded by the
    directory's groups, not its users); *page* holds the current page's rows."""

    live_groups: dict[str, role_mapping.GroupRef]
    index: dict[tuple[str, str], role_mapping.MappingSpec]
    default_role: str | None
    org_active: bool
    page: resync_state.PageHeld = field(default_factory=lambda: resync_state.PageHeld({}, {}))
    changes: list[tuple[str, str, bool]] = field(default_factory=list)
    to_sync: list[tuple[DirectoryUser, bool]] = field(default_factory=list)  # (user, repair a split person)


def full_resync(session: Session, client: WorkOSClient, *, organization_id: str, actor: Actor | None = None,
                page_size: int = 100) -> ResyncReport:
    """Make our mirror of the organization's directory equal WorkOS's, reporting each difference fixed.

    Reads the directory list endpoints page by page (groups first, then users with their groups), loads what
    we hold for each page of users in a few queries, commits every page with the run's cursor, and tombstones
    users and groups WorkOS no longer lists. An unfinished run of the directory (a crash) is resumed after its last
    committed page, its report continued.
    """
    started_clock = time.monotonic()
    org = session.get(Organization, organization_id)
    if org is None:
        raise LookupError(f"no organization {organization_id}")
    report = ResyncReport(organization_id, org.directory_id)
    if not org.directory_id or org.directory_state == "deleted":
        return report
    cursor = resync_state.open_cursor(session, org.id, org.directory_id, utcnow())
    resync_state.restore_counts(report, cursor.report)
    run = _Run(session, client, organization_id, org.directory_id, actor or Actor.system("resync"), page_size,
               report, started=cursor.started_at, run_id=cursor.run_id)
    ctx = run.context()
    keep = event_source.resync_guard(ctx, event_source.EventSource(run.directory_id, org.workos_organization_id),
                                     report)
    if keep is None:
        if cursor in session.new:  # a refused directory starts no run
            session.expunge(cursor)
        session.commit()  # the refusal's audit event
        return report
    run.keep = keep
    # Sessions it ends are ended at WorkOS by the appliers (queued with the page): a page the database rolls back
    # has then asked WorkOS nothing, and is applied again (mirror_user_pages).
    with workos_revocations.deferred_in(session):
        mirror_groups(run, ctx, org)
        held = load_held(run)
        mirror_user_pages(run, held)
        retire_missing_users(run)
        record_resync(run, started_clock)
    return report


def mirror_groups(run: _Run, ctx: EventContext, org: Organization) -> None:
    """Apply every group WorkOS lists, tombstone the ones it no longer lists, and commit (with the run's cursor:
    a resumed run lists the groups again, finding nothing more to do)."""
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
    _cursor(run).report = report.saved()
    session.commit()


def load_held(run: _Run) -> _Held:
    """Load what every page shares (live groups, mappings, the organization's default and status), once."""
    session, org = run.session, run.organization()
    live_groups = {g.workos_id: role_mapping.GroupRef(g.name, g.idp_id, g.workos_id)
                   for g in session.scalars(select(DirectoryGroup).where(DirectoryGroup.organization_id == org.id,
                                                                        DirectoryGroup.deleted_at.is_(None)))}
    index = {m.key: m for m in role_mapping.list_mappings(session, org.id)}
    return _Held(live_groups, index, org.default_role, org.live)


def mirror_user_pages(run: _Run, held: _Held) -> None:
    """Apply WorkOS's users page by page from the run's cursor, one unit of work (and one commit, with the
    cursor) per page (:func:`mirror_page`).

    A page the database rolls back to break a conflict with another writer (an applier's batch holds some of the
    page's member keys from its claim) is applied again from the listing already read, its counters as the last
    commit left them (``db_conflicts.retrying``), up to ``db_conflicts.ATTEMPTS`` times, unless the attempt did
    what its rollback cannot undo (``lasting_effects``; the sessions a page ends are ended at WorkOS by the
    appliers, queued with it: a break-it review found a page that asked WorkOS at once, then was run again); then
    the conflict is raised and the next run resumes there."""
    cursor = _cursor(run)
    for page in _user_pages(run.client, run.directory_id, run.page_size, cursor.after_user_id):
        committed, start = run.report.saved(), lasting_effects.mark()

        def attempt(page: list[Any] = page, committed: dict[str, Any] = committed) -> None:
            resync_state.restore_counts(run.report, committed)
            mirror_page(run, held, page)

        def lasted(start: lasting_effects.Mark = start) -> tuple[str, ...]:
            return tuple(f"it {what} first" for what in lasting_effects.since(start))

        db_conflicts.retrying(run.session, attempt, what="a resync page", lasted=lasted)


def mirror_page(run: _Run, held: _Held, page: list[Any]) -> None:
    """Apply one page of WorkOS's users (SDK objects) and commit it with the run's cursor."""
    session = run.session
    resync_state.plan_each_statement(session)
    org, ctx = run.organization(), run.context()
    # One page, one unit of work: its rows are loaded in a few queries, its changes are flushed together
    # (batched INSERTs, one membership upsert, one chained audit write) and committed with the cursor.
    ctx.verified_domains = domains.VerifiedDomains.load(session)
    datas = [d for d in (u.to_dict() for u in page) if run.keep(d)]
    ids = [d["id"] for d in datas]
    fanout_jobs.hold_members(session, ids)  # before anything of theirs is read (member_fanout.py's rule)
    stored = {du.workos_id: du for du in session.scalars(resync_state.page_lookup(
        session, DirectoryUser, DirectoryUser.organization_id, org.id, DirectoryUser.workos_id, ids,
        unique=True))} if ids else {}
    links = directory_people.PageLinks.load(session, org.id, stored.values(), ctx.verified_domains)
    held.page, held.changes, held.to_sync = resync_state.PageHeld.load(session, org.id, ids), [], []
    prepare_people(run, ctx, org, datas, stored, held.org_active)
    seen = [mirror_user(run, held, ctx, org, data, stored.get(data["id"]), links) for data in datas]
    run.report.users_seen += len(datas)
    resync_state.write_group_memberships(session, org.id, held.changes, run.started)
    session.flush()
    sync_page(ctx, org, held)
    resync_state.mark_seen(session, [du for du in seen if du is not None], run.run_id)
    cursor = _cursor(run)
    cursor.after_user_id = page[-1].id
    cursor.report = run.report.saved()
    session.commit()


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
    directory_people.people_by_email(session, emails, users_by_email)
    ctx.users_by_email = users_by_email
    ctx.memberships_by_user = {}
    if not org_active:
        return
    creating = [(e, d) for d in datas for e in [upsert_email(d)] if e and e in emails and e in unlinked
                and users_by_email[e] is None and (d.get("state") or "active") == "active"
                and ctx.foreign_owner(org.id, e) is None]
    if directory_people.hold_page_emails(ctx, org.id, {e for e, _ in creating}):  # one person per email: looked again
        directory_people.people_by_email(session, {e for e, _ in creating}, users_by_email)
    for email, data in creating:
        if users_by_email[email] is None:
            person = directory_people.new_directory_person(ctx, org.id, email, data.get("first_name"),
                                                           data.get("last_name"))
            ctx.memberships_by_user[person.id] = None  # a new person has no membership yet
    session.flush()


def mirror_user(run: _Run, held: _Held, ctx: EventContext, org: Organization, data: dict[str, Any],
                existing: DirectoryUser | None, links: directory_people.PageLinks) -> DirectoryUser | None:
    """Apply one listed user, its group memberships and its access; repair what differed; returns its row."""
    report, uid = run.report, data["id"]
    wanted = {g["id"] for g in data.pop("groups", None) or []}
    existed = existing is not None and existing.deleted_at is None and existing.directory_id == run.directory_id
    row, changed = upsert_directory_user(ctx, org, data, existing=existing)
    if row is None or row.deleted_at is not None:
        return row
    if changed:
        if existed:
            report.users_updated += 1
            report.note(f"user {row.email or uid} differed")
        else:
            report.users_created += 1
            report.note(f"user {row.email or uid} was missing")
    groups_changed = reconcile_memberships(run, held, uid, wanted)
    user_groups = [held.live_groups[g] for g in sorted(wanted) if g in held.live_groups]
    drifted = False
    if not changed and not groups_changed and row.email:
        drifted = access_drifted(held, row, user_groups)
        if drifted:
            report.access_repaired += 1
            report.note(f"access of {row.email} differed ({held.page.access.get(uid)})")
    split = links.differs(row, active=row.state == "active" and held.org_active)
    if split and not changed:
        report.people_repaired += 1
        report.note(f"person of {row.email or uid} differed ({split})")
    if changed or groups_changed or drifted or split:
        held.to_sync.append((row, bool(split)))
    return row


def sync_page(ctx: EventContext, org: Organization, held: _Held) -> None:
    """Bring the page's users that differed in line (``sync_member``) from their groups as stored once the page's
    memberships are written: a membership event newer than the listing is kept by the write's guard, so by the role."""
    ids = [du.workos_id for du, _ in held.to_sync]
    groups = role_mapping.directory_groups_of_users(ctx.session, org.id, ids) if ids else {}
    for du, split in held.to_sync:
        sync_member(ctx, org, du, reason="resync", groups=groups.get(du.workos_id, []), repair_split=split)


def reconcile_memberships(run: _Run, held: _Held, uid: str, wanted: set[str]) -> bool:
    """Queue the user's listed groups we lack and the ones no longer listed for the page's upsert (written by
    ``resync_state.write_group_memberships``); whether anything changed."""
    mine = held.page.memberships.get(uid, {})
    added = [gid for gid in sorted(wanted) if not mine.get(gid)]
    removed = [gid for gid, present in mine.items() if present and gid not in wanted]
    held.changes.extend([(gid, uid, True) for gid in added] + [(gid, uid, False) for gid in removed])
    run.report.memberships_added += len(added)
    run.report.memberships_removed += len(removed)
    return bool(added or removed)


def access_drifted(held: _Held, row: DirectoryUser, user_groups: list[role_mapping.GroupRef]) -> bool:
    """Whether the member's stored access differs from what their groups and the mappings give."""
    expected = role_mapping.resolve_role(user_groups, held.index, held.default_role)
    have = held.page.access.get(row.workos_id)
    if row.state == "active" and held.org_active:
        want_status = "active" if expected.role is not None else "inactive"
        return have is None or have[1] != want_status or have[2] != "directory" or (
            want_status == "active" and have[0] != expected.role)
    return have is not None and have[1] == "active"


def retire_missing_users(run: _Run) -> None:
    """Tombstone the users the run did not see listed, a page at a time (one commit each)."""
    session, after = run.session, ""
    while True:
        org = run.organization()
        ctx = run.context()
        rows = resync_state.held_unseen_users(session, org.id, run.directory_id, run.run_id, run.started, after,
                                              run.page_size)
        if not rows:
            return
        after = rows[-1].workos_id
        person_ids = [du.user_id for du in rows if du.user_id]
        ctx.memberships_by_user = dict.fromkeys(person_ids)
        if person_ids:
            for membership in session.scalars(select(Membership).where(
                    Membership.organization_id == org.id, Membership.user_id.in_(person_ids))):
                ctx.memberships_by_user[membership.user_id] = membership
        for du in rows:
            uid, email = du.workos_id, du.email
            row, changed = upsert_directory_user(ctx, org, {"id": uid, "directory_id": run.directory_id,
                                                            "email": email, "state": du.state}, deleted=True,
                                                 existing=du)
            if row is not None and changed:
                sync_member(ctx, org, row, reason="resync_user_gone")
                run.report.users_deleted += 1
                run.report.note(f"user {email or uid} no longer exists")
        _cursor(run).report = run.report.saved()
        session.commit()


def record_resync(run: _Run, started_clock: float) -> None:
    """Audit the run with its report, close its cursor, and commit."""
    org = run.organization()
    run.report.seconds = round(time.monotonic() - started_clock, 3)
    run.context().record("directory.resynced", organization_id=org.id, target_type="directory",
                         target_id=run.directory_id,
                         details={k: v for k, v in run.report.to_dict().items() if k not in ("organization_id",)})
    run.session.delete(_cursor(run))
    run.session.commit()


def _cursor(run: _Run) -> ResyncCursor:
    """The run's cursor row (reloaded after a commit)."""
    return resync_state.open_cursor(run.session, run.organization_id, run.directory_id, run.started)


def _user_pages(client: WorkOSClient, directory_id: str, page_size: int, after: str | None) -> Any:
    """The directory's users after the WorkOS id *after* (``None``: all), *page_size* at a time, oldest first."""
    listed = client.directory_sync.list_users(directory=directory_id, limit=page_size, order="asc", after=after)
    return _pages(listed.auto_paging_iter(), page_size)


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
                                                             Organization.live)))
    session.rollback()
    return [full_resync(session, client, organization_id=org_id, actor=actor) for org_id in ids]
