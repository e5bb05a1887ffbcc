"""A fan-out chunk and a member's own event never race (``services/events/member_fanout.py``'s rule): every chunk,
of every scope, holds the entity key of each member it recomputes (``user:<directory user id>``, the key that
member's own events are claimed under) before it reads them; on SQLite its transaction holds the write lock.

The end-to-end race (a chunk's read, then a member's removal committed, then the chunk's write) is
``tests/test_breakit15.py::test_a_chunk_applied_concurrently_with_a_members_group_removal_keeps_the_removal``.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from hatidata_auth.causes import Actor, Cause
from hatidata_auth.extensions import db
from hatidata_auth.models import DirectoryUser, Membership, Organization, WebhookEvent
from hatidata_auth.services import fanout_jobs, inbox_worker
from hatidata_auth.services.events import handled_event_types
from hatidata_auth.services.inbox import entity_key
from tests.api_support import Tenant
from tests.support.dsync import drain_inbox, post_event
from tests.test_fanout import (  # noqa: F401 - app_config and fanco are fixtures
    CHUNK,
    DIRECTORY,
    GROUP,
    _access,
    _event,
    _group,
    _user,
    app_config,
    fanco,
)

SCOPES = ("group", "directory", "organization", "organization_deleted")


def _scope(kind: str) -> str:
    return {"group": f"group:{GROUP}", "directory": f"directory:{DIRECTORY}"}.get(kind, "organization")


def _window(session: Session, organization_id: str, kind: str) -> list[str]:
    """The directory users the first chunk of *kind* recomputes (its order: by directory user id for a group or a
    directory, by membership id for the organization)."""
    if kind in ("group", "directory"):
        return sorted(session.scalars(select(DirectoryUser.workos_id).where(
            DirectoryUser.organization_id == organization_id)))[:CHUNK]
    query = select(Membership.directory_user_id).where(Membership.organization_id == organization_id,
                                                       Membership.status == "active")
    if kind == "organization":  # the directory-managed members (role mappings apply to them only)
        query = query.where(Membership.source == "directory")
    return [ref for ref in session.scalars(query.order_by(Membership.id).limit(CHUNK)) if ref]


def _held_advisory_keys(session: Session) -> set[int]:
    """The advisory locks this session's backend holds, as the 64-bit keys ``pg_advisory_xact_lock`` was given."""
    rows = session.execute(text("SELECT classid::bigint, objid::bigint FROM pg_locks WHERE locktype = 'advisory' "
                                "AND pid = pg_backend_pid() AND granted")).all()
    keys = set()
    for high, low in rows:
        value = (high << 32) | low
        keys.add(value - (1 << 64) if value >= 1 << 63 else value)
    return keys


def _hash(session: Session, key: str) -> int:
    return int(session.scalar(select(func.hashtextextended(key, 0))))


@pytest.mark.parametrize("kind", SCOPES)
def test_every_fanout_chunk_holds_its_members_keys_before_it_writes(kind: str, app: Flask, fanco: Tenant) -> None:  # noqa: F811
    with app.app_context():
        session = db.session()
        if kind == "organization_deleted":
            session.execute(update(Organization).where(Organization.id == fanco.id).values(status="deleted"))
        job = fanout_jobs.Job(fanco.id, _scope(kind), "test", Cause.by(Actor.workos()))
        fanout_jobs.enqueue(session, job)
        session.commit()
        window = _window(session, fanco.id, kind)
        assert window  # the deleted organization's chunk also takes its tenant's own members (no key)
        claimed = inbox_worker.claim(session, 5, entity_key=fanout_jobs.entity_key(job))
        assert [c.event_type for c in claimed] == [fanout_jobs.JOB_TYPE]
        result = inbox_worker.apply_one(session, app.extensions["hatidata_workos"].client, claimed[0],
                                        Cause.by(Actor.workos()), fanout_chunk=CHUNK)
        assert result.status == "applied", result
        if session.get_bind().dialect.name == "postgresql":
            held = _held_advisory_keys(session)
            missing = [ref for ref in window if _hash(session, fanout_jobs.member_key(ref)) not in held]
            assert not missing, f"the {kind} chunk wrote without holding these members' keys: {missing}"
        else:  # SQLite: the chunk's transaction holds the write lock, so no member's event writes in between
            other = sqlite3.connect(str(db.engine.url.database), timeout=0)
            try:
                with pytest.raises(sqlite3.OperationalError, match="locked"):
                    other.execute("BEGIN IMMEDIATE")
            finally:
                other.close()
        session.rollback()
        db.session.remove()


def test_the_member_key_is_the_key_of_every_members_own_event() -> None:
    """``fanout_jobs.member_key`` is the entity key of every event type about one directory user (user events and
    group membership events), so a chunk holding it excludes each of them."""
    personal = [t for t in handled_event_types() if t.startswith(("dsync.user.", "dsync.group.user_"))]
    assert {"dsync.user.updated", "dsync.user.deleted", "dsync.group.user_added", "dsync.group.user_removed"} <= \
        set(personal)
    for event_type in personal:
        user = _user(5, "active")
        data: dict[str, Any] = user if event_type.startswith("dsync.user.") else {
            "directory_id": DIRECTORY, "user": user, "group": _group("Fan Group")}
        assert entity_key(_event(event_type, data)) == fanout_jobs.member_key(user["id"]), event_type
    assert fanout_jobs.member_key("x" * 300) == entity_key(_event("dsync.user.deleted", _user(0, "active") | {
        "id": "x" * 300}))


def test_a_members_event_acknowledged_while_a_chunk_holds_its_key_is_left_to_the_appliers(
        app: Flask, client: FlaskClient, fanco: Tenant) -> None:  # noqa: F811
    """The webhook's in-request apply never waits for nor overtakes a chunk: while a chunk holds the member's key
    the event is stored and left (``SKIP LOCKED``), and the appliers apply it once the chunk has committed."""
    victim = "directory_user_fan_004"
    removed = _event("dsync.group.user_removed", {"directory_id": DIRECTORY, "user": _user(4, "active"),
                                                  "group": _group("Fan Group")})
    with app.app_context():
        default = db.session.get(Organization, fanco.id).default_role  # type: ignore[union-attr]
        postgresql = db.engine.dialect.name == "postgresql"
        holder = Session(db.engine)  # another connection: the chunk's transaction
        db.session.remove()
    try:
        if postgresql:
            fanout_jobs.hold_members(holder, [victim])
        response = post_event(client, app, removed, drain=False)
        assert response.status_code == 200, response.get_json()
        with app.app_context():
            status = db.session.scalar(select(WebhookEvent.status).where(WebhookEvent.event_id == removed["id"]))
            db.session.remove()
        # PostgreSQL: stored, not applied while the key is held. SQLite: no other writer here, applied at once.
        assert status == ("received" if postgresql else "applied")
    finally:
        holder.rollback()
        holder.close()
    drain_inbox(app)
    assert _access(app, fanco.id)[victim][0] == default


def test_a_mapping_edit_recomputed_in_the_request_holds_its_members_keys(app: Flask, fanco: Tenant) -> None:  # noqa: F811
    """The in-request recompute of a mapping edit within one chunk is serialised with the members' own events like
    a chunk: it holds each member's key before it reads them (on SQLite its transaction holds the write lock)."""
    from hatidata_auth.services import role_mapping

    with app.app_context():
        session = db.session()
        members = _window(session, fanco.id, "organization")
        everyone = [du.workos_id for _m, du, _e in role_mapping._directory_members(session, fanco.id)]
        spec = role_mapping.MappingSpec("name", "Fan Group", "admin", priority=1)
        result = role_mapping.replace_mappings(session, app.extensions["hatidata_workos"].client,
                                               organization_id=fanco.id, specs=[spec],
                                               cause=Cause.by(Actor.workos()), chunk=len(everyone) + 1)
        assert result.queued_job is None
        assert result.checked == len(everyone) > len(members)  # more than one test chunk, all in the request
        if session.get_bind().dialect.name == "postgresql":
            held = _held_advisory_keys(session)
            missing = [ref for ref in everyone if _hash(session, fanout_jobs.member_key(ref)) not in held]
            assert not missing, f"the request recomputed without holding these members' keys: {missing}"
        session.rollback()
        db.session.remove()
