"""Every writer of a member's access holds that member's key (``user:<directory user id>``, the key the member's own
events are claimed under) before it reads the member, the full resync included (``services/reconcile.py``: each
page holds its users' keys, the retirement of unlisted users too), and a sign-in as well (an admin's removal of a
directory member is refused: the directory decides).

On PostgreSQL the rule is checked on every flush that writes a directory-backed membership (``pg_locks``: the key
is held by this transaction), over every writer we have: the resync (first mirror, drift repair, retirement), the
appliers (a member's events, a fan-out chunk). On SQLite a transaction that writes holds the
database's write lock, which serialises the writers already; the same paths run and must write.

The interleaving: a ``dsync.group.user_removed`` of a user on a resync's page, delivered while the page is between
its read and its commit, is not overwritten by the page (on PostgreSQL it waits for the page: stored, not applied).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event, select, update
from sqlalchemy.orm import Session

from hatidata_auth.causes import Actor, Cause
from hatidata_auth.extensions import db
from hatidata_auth.models import (
    DirectoryGroup,
    DirectoryGroupMembership,
    DirectoryUser,
    Membership,
    WebhookEvent,
    utcnow,
)
from hatidata_auth.services import fanout_jobs, reconcile, resync_state, role_mapping, tenant_admin
from tests.support.dsync import drain_inbox, mirror_organizations, post_event
from tests.test_fanout_member_lock import _hash, _held_advisory_keys


@contextmanager
def _every_membership_write_holds_its_key() -> Iterator[list[str]]:
    """Check, at every flush of any session, that each directory-backed membership written is held by its key
    (PostgreSQL); yields the directory user ids written (so a test knows the writers ran)."""
    written: list[str] = []
    problems: list[str] = []

    def before_flush(session: Session, _context: Any, _instances: Any) -> None:
        rows = [m for m in (*session.new, *session.dirty) if isinstance(m, Membership) and m.directory_user_id
                and (m in session.new or session.is_modified(m))]
        if not rows:
            return
        written.extend(m.directory_user_id for m in rows)  # type: ignore[misc]
        if session.get_bind().dialect.name == "postgresql":
            held = _held_advisory_keys(session)
            problems.extend(m.directory_user_id for m in rows  # type: ignore[misc]
                            if _hash(session, fanout_jobs.member_key(m.directory_user_id)) not in held)

    event.listen(Session, "before_flush", before_flush)
    try:
        yield written
    finally:
        event.remove(Session, "before_flush", before_flush)
    assert not problems, f"memberships written without their directory user's key held: {sorted(set(problems))}"


def _acme(session: Session, workos_client: Any) -> str:
    """Acme mirrored by a first resync, its largest group mapped to admin; returns its id."""
    acme = mirror_organizations(session, workos_client)["acme.test"].id
    reconcile.full_resync(session, workos_client, organization_id=acme, page_size=2)
    group = _largest_group(session, acme)
    role_mapping.replace_mappings(session, workos_client, organization_id=acme, cause=Cause.system("test"),
                                  specs=[role_mapping.MappingSpec("name", group.name, "admin", priority=1)],
                                  default_role="viewer")
    session.commit()
    return acme


def _largest_group(session: Session, organization_id: str) -> DirectoryGroup:
    groups = session.scalars(select(DirectoryGroup).where(DirectoryGroup.organization_id == organization_id,
                                                          DirectoryGroup.deleted_at.is_(None))).all()
    assert groups
    return max(groups, key=lambda g: (len(_members(session, organization_id, g.workos_id)), g.workos_id))


def _members(session: Session, organization_id: str, group_id: str) -> list[str]:
    return sorted(session.scalars(select(DirectoryGroupMembership.user_workos_id).where(
        DirectoryGroupMembership.organization_id == organization_id,
        DirectoryGroupMembership.group_workos_id == group_id, DirectoryGroupMembership.present.is_(True))))


def _role(session: Session, organization_id: str, directory_user_id: str) -> tuple[str | None, str]:
    session.expire_all()
    row = session.execute(select(Membership.role, Membership.status).where(
        Membership.organization_id == organization_id, Membership.directory_user_id == directory_user_id)).one()
    return row[0], row[1]


def _removal(workos_client: Any, group: DirectoryGroup, user_id: str, serial: int) -> dict[str, Any]:
    user = workos_client.directory_sync.get_user(user_id).to_dict()
    data = {"directory_id": group.directory_id, "user": user,
            "group": workos_client.directory_sync.get_group(group.workos_id).to_dict()}
    return {"object": "event", "id": f"event_RESYNCLOCK{serial:04d}", "event": "dsync.group.user_removed",
            "data": data, "created_at": "2039-01-01T00:00:00.000Z"}


def test_every_writer_of_a_members_access_holds_the_members_key(app: Flask, db_session: Session,
                                                                 workos_client: Any) -> None:
    with _every_membership_write_holds_its_key() as written:
        acme = _acme(db_session, workos_client)  # the first resync (every membership created), a mapping edit
        group = _largest_group(db_session, acme)
        victims = _members(db_session, acme, group.workos_id)
        assert len(victims) >= 2
        # Drift: roles changed behind the resync's back, and a user WorkOS no longer lists; the resync repairs.
        db_session.execute(update(Membership).where(Membership.organization_id == acme,
                                                    Membership.directory_user_id.in_(victims)).values(role="viewer"))
        org_dir = group.directory_id
        db_session.add(DirectoryUser(organization_id=acme, workos_id="directory_user_gone", directory_id=org_dir,
                                     email=None, state="active",
                                     created_at=utcnow() - timedelta(days=1)))
        db_session.commit()
        report = reconcile.full_resync(db_session, workos_client, organization_id=acme, page_size=2)
        assert report.access_repaired >= len(victims)
        assert report.users_deleted == 1
        # A member's own event through the appliers; an admin's removal of a directory member is refused.
        post_event(app.test_client(), app, _removal(workos_client, group, victims[0], 1))
        membership_id = db_session.scalar(select(Membership.id).where(Membership.organization_id == acme,
                                                                      Membership.directory_user_id == victims[1]))
        assert membership_id is not None
        # Another admin first: removing the group's last admin would be refused (services/last_admin.py).
        tenant_admin.grant_admin(db_session, organization_id=acme, email="keeper@acme.test",
                                 actor=Actor.system("test"))
        with pytest.raises(tenant_admin.Conflict, match="directory"):  # the directory decides: refused
            tenant_admin.remove_member(db_session, workos_client, organization_id=acme, membership_id=membership_id,
                                       cause=Cause.by(Actor.system("test")))
        db_session.rollback()
    assert set(victims) <= set(written)  # every path above did write these members
    assert _role(db_session, acme, victims[0]) == ("viewer", "active")
    assert _role(db_session, acme, victims[1])[1] == "active"


def test_a_members_removal_during_a_resync_page_is_not_overwritten(app: Flask, db_session: Session,
                                                                   workos_client: Any,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The removal arrives while a page holding its user is between its read and its commit, and that user
    differs from the listing (so the page writes the user's access). The page never writes back the group's role:
    on PostgreSQL the removal waits (its claim skips the held key) and applies after the page; on SQLite the page's
    transaction serialises it (delivered after the page, WorkOS retrying a 503)."""
    acme = _acme(db_session, workos_client)
    group = _largest_group(db_session, acme)
    victim = _members(db_session, acme, group.workos_id)[0]
    assert _role(db_session, acme, victim) == ("admin", "active")
    db_session.execute(update(DirectoryUser).where(DirectoryUser.organization_id == acme,
                                                   DirectoryUser.workos_id == victim)
                       .values(first_name="Stale", version_at=None))  # the page will write this user
    db_session.commit()
    postgresql = db.engine.dialect.name == "postgresql"
    removal = _removal(workos_client, group, victim, 2)
    during: list[str | None] = []
    errors: list[BaseException] = []
    original = resync_state.PageHeld.load

    def deliver() -> None:
        try:
            response = post_event(app.test_client(), app, removal, drain=False)
            assert response.status_code == 200, response.get_json()
            drain_inbox(app)  # an applier runs meanwhile too
            with app.app_context():
                during.append(db.session.scalar(select(WebhookEvent.status).where(
                    WebhookEvent.event_id == removal["id"])))
                db.session.remove()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    def read_then_race(session: Session, organization_id: str, user_ids: list[str]) -> Any:
        held = original(session, organization_id, user_ids)
        if postgresql and victim in user_ids and not during:
            thread = threading.Thread(target=deliver)
            thread.start()
            thread.join(30)
            assert not thread.is_alive()
        return held

    monkeypatch.setattr(resync_state.PageHeld, "load", read_then_race)
    reconcile.full_resync(db_session, workos_client, organization_id=acme, page_size=2)
    monkeypatch.undo()
    if postgresql:
        assert not errors, errors
        assert during == ["received"]  # stored, and left until the page committed
    else:
        deliver()
        assert not errors, errors
    drain_inbox(app)
    db_session.expire_all()
    assert db_session.scalar(select(WebhookEvent.status).where(WebhookEvent.event_id == removal["id"])) == "applied"
    assert victim not in _members(db_session, acme, group.workos_id)
    assert _role(db_session, acme, victim) == ("viewer", "active")
    specs = role_mapping.list_mappings(db_session, acme)
    assert role_mapping.preview(db_session, organization_id=acme, specs=specs) == []
