"""Fan-out never runs in the request: group renames and deletions, directory deletions and role-mapping edits that
touch more members than one chunk (``HATIDATA_FANOUT_CHUNK``) are applied a chunk per transaction by the appliers
(``services/events/member_fanout.py``, ``services/fanout_jobs.py``).

Every test compares the end state with an independent full recompute (``role_mapping.preview`` under the stored
mappings: nobody's role would change) and counts the audit rows per member: exactly one per member whose access
changed, whatever the chunk size, a crash between chunks, or a member's own event arriving between two chunks.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from hatidata_auth.causes import Actor, Cause
from hatidata_auth.extensions import db
from hatidata_auth.models import (
    AuditEvent,
    DirectoryGroup,
    DirectoryGroupMembership,
    DirectoryUser,
    Membership,
    Organization,
    RoleMapping,
    User,
    WebhookEvent,
)
from hatidata_auth.services import fanout_jobs, inbox_worker, role_mapping
from hatidata_auth.services.events import HANDLERS, handled_event_types
from tests.api_support import Tenant, headers_for, make_tenant
from tests.support.dsync import drain_inbox, post_event
from tests.support.wakes import acknowledge_recording_wakes

CHUNK = 7
MEMBERS = 30
GROUP = "directory_group_fan"
DIRECTORY = "directory_fanco"
WORKOS_ORG = "org_fanco_workos"
_serial = itertools.count(1)
_clock = itertools.count(1)


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    app_config["HATIDATA_FANOUT_CHUNK"] = CHUNK
    return app_config


@pytest.fixture
def fanco(app: Flask) -> Tenant:
    """An organization whose directory has a group "Fan Group" (mapped to admin; "Fan Renamed" maps to developer)
    of 30 directory-managed members, their roles as the mappings say."""
    tenant = make_tenant(app, "Fanco")
    with app.app_context():
        session = db.session
        now = datetime(2031, 1, 1, tzinfo=UTC)
        session.add(DirectoryGroup(organization_id=tenant.id, workos_id=GROUP, directory_id=DIRECTORY,
                                   name="Fan Group", version_at=now))
        for name, role in (("Fan Group", "admin"), ("Fan Renamed", "developer")):
            session.add(RoleMapping(organization_id=tenant.id, identifier_kind="name", group_identifier=name,
                                    role=role))
        for i in range(MEMBERS):
            du_id = f"directory_user_fan_{i:03d}"
            user = User(email=f"fan{i}@fanco.test")
            session.add(user)
            session.flush()
            session.add(DirectoryUser(organization_id=tenant.id, workos_id=du_id, directory_id=DIRECTORY,
                                      email=user.email, state="active", user_id=user.id, version_at=now))
            session.add(Membership(organization_id=tenant.id, user_id=user.id, role="viewer", role_source="mapping",
                                   source="directory", status="active", directory_user_id=du_id))
            session.add(DirectoryGroupMembership(organization_id=tenant.id, group_workos_id=GROUP,
                                                 user_workos_id=du_id, present=True, version_at=now))
        session.flush()
        role_mapping.recompute_organization(session, None, organization_id=tenant.id, cause=Cause.system("test"))
        session.commit()
        session.remove()
    return tenant


def _time() -> str:
    return (datetime(2031, 2, 1, tzinfo=UTC) + timedelta(seconds=next(_clock))).isoformat().replace("+00:00", "Z")


def _event(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"object": "event", "id": f"event_FAN{next(_serial):06d}", "event": event_type, "data": data,
            "created_at": _time()}


def _group(name: str) -> dict[str, Any]:
    return {"object": "directory_group", "id": GROUP, "idp_id": "fan", "directory_id": DIRECTORY,
            "organization_id": WORKOS_ORG, "name": name, "created_at": "2031-01-01T00:00:00.000Z",
            "updated_at": _time(), "raw_attributes": {}}


def _user(i: int, state: str) -> dict[str, Any]:
    email = f"fan{i}@fanco.test"
    return {"object": "directory_user", "id": f"directory_user_fan_{i:03d}", "idp_id": f"fan{i}",
            "directory_id": DIRECTORY, "organization_id": WORKOS_ORG, "first_name": None, "last_name": None,
            "email": email, "emails": [{"primary": True, "type": "work", "value": email}], "username": email,
            "state": state, "custom_attributes": {}, "raw_attributes": {}, "role": {"slug": "member"},
            "created_at": "2031-01-01T00:00:00.000Z", "updated_at": _time()}


def _directory_deleted() -> dict[str, Any]:
    return {"object": "directory", "id": DIRECTORY, "organization_id": WORKOS_ORG, "type": "okta scim v2.0",
            "name": "Fanco", "state": "deleting", "created_at": "2031-01-01T00:00:00.000Z", "updated_at": _time()}


def _ack(client: FlaskClient, app: Flask, payload: dict[str, Any]) -> None:
    """Deliver a signed webhook without applying the inbox (the appliers do, step by step in the tests)."""
    response = post_event(client, app, payload, drain=False)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["status"] == "received"


def _batch(app: Flask, limit: int = 20) -> inbox_worker.BatchReport:
    with app.app_context():
        try:
            return inbox_worker.apply_batch(db.session(), app.extensions["hatidata_workos"].client, limit=limit,
                                            fanout_chunk=app.config["HATIDATA_FANOUT_CHUNK"])
        finally:
            db.session.remove()


def _jobs(app: Flask) -> Counter[str]:
    """Recompute jobs by status."""
    with app.app_context():
        rows = db.session.execute(select(WebhookEvent.status, func.count()).where(
            WebhookEvent.event_type == fanout_jobs.JOB_TYPE, WebhookEvent.source == "internal")
            .group_by(WebhookEvent.status)).all()
        db.session.remove()
    return Counter({status: int(n) for status, n in rows})


def _access(app: Flask, organization_id: str) -> dict[str, tuple[str | None, str]]:
    """``{directory user id: (role, status)}`` of the organization's directory-managed members."""
    with app.app_context():
        rows = db.session.execute(select(Membership.directory_user_id, Membership.role, Membership.status).where(
            Membership.organization_id == organization_id, Membership.source == "directory",
            Membership.directory_user_id.like("directory_user_fan_%"))).all()
        db.session.remove()
    return {str(du): (role, status) for du, role, status in rows}


def _consistent(app: Flask, organization_id: str) -> None:
    """An independent full recompute under the stored mappings would change nobody's role."""
    with app.app_context():
        session = db.session
        specs = role_mapping.list_mappings(session, organization_id)
        assert role_mapping.preview(session, organization_id=organization_id, specs=specs) == []
        session.remove()


def _audited(app: Flask, source_event_id: str | None = None, request_id: str | None = None) -> Counter[str]:
    """Membership audit rows per membership caused by one event (or one request)."""
    with app.app_context():
        query = select(AuditEvent.target_id).where(AuditEvent.target_type == "membership",
                                                   AuditEvent.action.like("membership.%"))
        if source_event_id is not None:
            query = query.where(AuditEvent.source_event_id == source_event_id)
        if request_id is not None:
            query = query.where(AuditEvent.request_id == request_id)
        rows = db.session.scalars(query).all()
        db.session.remove()
    return Counter(str(t) for t in rows)


def _fan_memberships(app: Flask, organization_id: str) -> set[str]:
    with app.app_context():
        ids = db.session.scalars(select(Membership.id).where(
            Membership.organization_id == organization_id,
            Membership.directory_user_id.like("directory_user_fan_%"))).all()
        db.session.remove()
    return set(ids)


def test_a_rename_of_a_group_larger_than_a_chunk_is_applied_in_chunks(app: Flask, client: FlaskClient,
                                                                      fanco: Tenant) -> None:
    assert set(_access(app, fanco.id).values()) == {("admin", "active")}
    rename = _event("dsync.group.updated", _group("Fan Renamed"))
    _ack(client, app, rename)
    first = _batch(app)  # the rename: the group at once, its 30 members queued (more than one chunk)
    assert first.count("applied") == 1
    assert set(_access(app, fanco.id).values()) == {("admin", "active")}
    assert _jobs(app) == Counter({"received": 1})
    with app.app_context():
        group = db.session.scalar(select(DirectoryGroup).where(DirectoryGroup.workos_id == GROUP))
        assert group is not None
        assert group.name == "Fan Renamed"
        db.session.remove()
    _batch(app)  # one chunk, and the next job in the same transaction
    roles = Counter(_access(app, fanco.id).values())
    assert roles == Counter({("developer", "active"): CHUNK, ("admin", "active"): MEMBERS - CHUNK})
    assert _jobs(app) == Counter({"applied": 1, "received": 1})
    drain_inbox(app)
    assert set(_access(app, fanco.id).values()) == {("developer", "active")}
    _consistent(app, fanco.id)
    audited = _audited(app, source_event_id=rename["id"])
    assert audited == Counter(dict.fromkeys(_fan_memberships(app, fanco.id), 1))
    assert _jobs(app) == Counter({"applied": -(-MEMBERS // CHUNK)})


def test_a_crash_between_chunks_loses_nothing_and_repeats_nothing(app: Flask, client: FlaskClient,
                                                                  fanco: Tenant) -> None:
    rename = _event("dsync.group.updated", _group("Fan Renamed"))
    _ack(client, app, rename)
    _batch(app)
    _batch(app)
    with app.app_context():  # an applier dies in the middle of the second chunk: its transaction rolls back
        session = db.session()
        claimed = inbox_worker.claim(session, 20)
        assert [c.event_type for c in claimed] == [fanout_jobs.JOB_TYPE]
        inbox_worker.apply_one(session, app.extensions["hatidata_workos"].client, claimed[0],
                               Cause.by(Actor.workos()), fanout_chunk=CHUNK)
        session.rollback()
        db.session.remove()
    assert Counter(_access(app, fanco.id).values())[("developer", "active")] == CHUNK
    assert _jobs(app) == Counter({"applied": 1, "received": 1})
    drain_inbox(app)  # resumed
    assert set(_access(app, fanco.id).values()) == {("developer", "active")}
    assert _audited(app, source_event_id=rename["id"]) == Counter(dict.fromkeys(_fan_memberships(app, fanco.id), 1))
    _consistent(app, fanco.id)


@pytest.mark.parametrize("kind", ["group_deleted", "directory_deleted"])
def test_deletions_larger_than_a_chunk_are_applied_in_chunks(kind: str, app: Flask, client: FlaskClient,
                                                             fanco: Tenant) -> None:
    deleted = (_event("dsync.group.deleted", _group("Fan Group")) if kind == "group_deleted"
               else _event("dsync.deleted", _directory_deleted()))
    _ack(client, app, deleted)
    _batch(app)
    with app.app_context():  # what is cheap and set-based is done at once: the tombstones
        group = db.session.scalar(select(DirectoryGroup).where(DirectoryGroup.workos_id == GROUP))
        assert group is not None
        assert group.deleted_at is not None
        if kind == "directory_deleted":
            org = db.session.get(Organization, fanco.id)
            assert org is not None
            assert org.directory_state == "deleted"
            live = db.session.scalar(select(func.count()).select_from(DirectoryUser).where(
                DirectoryUser.organization_id == fanco.id, DirectoryUser.deleted_at.is_(None)))
            assert live == 0
        db.session.remove()
    assert _jobs(app) == Counter({"received": 1})
    drain_inbox(app)
    access = _access(app, fanco.id)
    if kind == "group_deleted":  # no mapped group left: the organization's default role
        with app.app_context():
            default = db.session.get(Organization, fanco.id).default_role  # type: ignore[union-attr]
            db.session.remove()
        assert set(access.values()) == {(default, "active")}
    else:
        assert {status for _role, status in access.values()} == {"deprovisioned"}
    _consistent(app, fanco.id)
    assert _audited(app, source_event_id=deleted["id"]) == Counter(dict.fromkeys(_fan_memberships(app, fanco.id), 1))


def test_a_members_own_event_between_chunks_keeps_the_newest_state(app: Flask, client: FlaskClient,
                                                                   fanco: Tenant) -> None:
    rename = _event("dsync.group.updated", _group("Fan Renamed"))
    _ack(client, app, rename)
    _batch(app)
    _batch(app)
    last = MEMBERS - 1  # its chunk is still to come
    _ack(client, app, _event("dsync.user.updated", _user(last, "inactive")))
    drain_inbox(app)
    access = _access(app, fanco.id)
    assert access.pop(f"directory_user_fan_{last:03d}") == ("admin", "deprovisioned")
    assert set(access.values()) == {("developer", "active")}
    _consistent(app, fanco.id)


def _mapping_id(app: Flask, organization_id: str, group: str) -> str:
    with app.app_context():
        found = db.session.scalar(select(RoleMapping.id).where(RoleMapping.organization_id == organization_id,
                                                               RoleMapping.group_identifier == group))
        db.session.remove()
    assert found is not None
    return str(found)


# Every route that edits what decides directory-managed roles: (method, path, body).
EDITS: dict[str, tuple[str, str, dict[str, Any] | None]] = {
    "replace": ("PUT", "/api/v1/role-mappings",
                {"mappings": [{"identifier_kind": "name", "group_identifier": "Fan Group", "role": "viewer"}]}),
    "add": ("POST", "/api/v1/role-mappings",
            {"identifier_kind": "name", "group_identifier": "Fan Group", "role": "viewer"}),
    "patch": ("PATCH", "/api/v1/role-mappings/{fan}", {"role": "developer"}),
    "delete": ("DELETE", "/api/v1/role-mappings/{fan}", None),
    "default_role": ("PATCH", "/api/v1/organization/settings", {"default_role": "developer"}),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_a_mapping_edit_over_many_members_is_queued_by_the_api(edit: str, app: Flask, client: FlaskClient,
                                                               fanco: Tenant) -> None:
    method, path, body = EDITS[edit]
    if edit == "default_role":  # the fan group's mapping goes first, so the default decides the members' role
        with app.app_context():
            db.session.execute(RoleMapping.__table__.delete().where(RoleMapping.group_identifier == "Fan Group"))
            db.session.commit()
            db.session.remove()
    before = _access(app, fanco.id)
    response = client.open(path.format(fan=_mapping_id(app, fanco.id, "Fan Group") if "{fan}" in path else ""),
                           method=method, headers=headers_for(fanco, "admin"), json=body)
    assert response.status_code in (200, 201), response.get_json()
    answer = response.get_json()
    if edit != "default_role":
        assert answer["recompute"]["status"] == "queued"
        assert answer["recompute"]["job_id"].startswith(fanout_jobs.JOB_ID_PREFIX)
        assert (answer["members_checked"], answer["role_changes"]) == (0, [])
    assert _jobs(app) == Counter({"received": 1})
    assert _access(app, fanco.id) == before  # nothing recomputed in the request
    drain_inbox(app)
    after = _access(app, fanco.id)
    _consistent(app, fanco.id)
    expected = {"replace": "viewer", "add": "viewer", "patch": "developer", "delete": "viewer",  # the default
                "default_role": "developer"}
    assert set(after.values()) == {(expected[edit], "active")}
    request_id = response.headers["X-Request-Id"]
    with app.app_context():
        changed = {m.id for m in db.session.scalars(select(Membership).where(
            Membership.organization_id == fanco.id, Membership.directory_user_id.in_(
                [du for du in after if after[du] != before[du]])))}
        db.session.remove()
    assert len(changed) == MEMBERS
    assert _audited(app, request_id=request_id) == Counter(dict.fromkeys(changed, 1))
    with app.app_context():  # the job acts for the admin who made the edit, through that request: one cause
        causes = set(db.session.execute(select(AuditEvent.actor_type, AuditEvent.actor_id, AuditEvent.request_id)
                                        .where(AuditEvent.organization_id == fanco.id,
                                               AuditEvent.actor_type != "system",  # not the fixture's set-up
                                               AuditEvent.action.like("membership.%")
                                               | AuditEvent.action.like("role_mapping.%"))).all())
        db.session.remove()
    assert len(causes) == 1
    assert next(iter(causes))[0::2] == ("api_key", request_id)


def test_a_mapping_edit_within_one_chunk_is_recomputed_in_the_request(app: Flask, client: FlaskClient,
                                                                      fanco: Tenant) -> None:
    app.config["HATIDATA_FANOUT_CHUNK"] = MEMBERS + 5
    body = {"mappings": [{"identifier_kind": "name", "group_identifier": "Fan Group", "role": "viewer"}]}
    answer = client.put("/api/v1/role-mappings", headers=headers_for(fanco, "admin"), json=body).get_json()
    assert answer["recompute"] == {"status": "done", "job_id": None}
    assert len(answer["role_changes"]) == MEMBERS
    assert set(_access(app, fanco.id).values()) == {("viewer", "active")}
    assert _jobs(app) == Counter()


@pytest.mark.parametrize("field", ["event", "id"])
def test_a_webhook_cannot_inject_internal_work(field: str, app: Flask, client: FlaskClient, fanco: Tenant) -> None:
    job = fanout_jobs.Job(fanco.id, "organization", "injected", Cause.system("x"))
    payload = _event(fanout_jobs.JOB_TYPE if field == "event" else "dsync.group.updated",
                     job.data() if field == "event" else _group("Fan Renamed"))
    if field == "id":
        payload["id"] = f"{fanout_jobs.JOB_ID_PREFIX}0123"
    response = post_event(client, app, json.dumps(payload), drain=True)
    assert response.status_code == 400
    assert _jobs(app) == Counter()
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(WebhookEvent).where(
            WebhookEvent.event_id == payload["id"])) == 0
        db.session.remove()
    assert set(_access(app, fanco.id).values()) == {("admin", "active")}
    # Nor can the Events API ask for it: the internal type is in no list of WorkOS types.
    assert fanout_jobs.JOB_TYPE not in handled_event_types()
    assert fanout_jobs.JOB_TYPE not in HANDLERS


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunk=st.integers(min_value=1, max_value=MEMBERS + 2), renames=st.integers(min_value=1, max_value=2))
def test_any_chunk_size_gives_the_full_recompute(chunk: int, renames: int, app: Flask, client: FlaskClient,
                                                 fanco: Tenant) -> None:
    app.config["HATIDATA_FANOUT_CHUNK"] = chunk
    for _ in range(renames):
        with app.app_context():
            name = db.session.scalar(select(DirectoryGroup.name).where(DirectoryGroup.workos_id == GROUP))
            db.session.remove()
        rename = _event("dsync.group.updated", _group("Fan Group" if name == "Fan Renamed" else "Fan Renamed"))
        _ack(client, app, rename)
        drain_inbox(app)
        _consistent(app, fanco.id)
        assert _audited(app, source_event_id=rename["id"]) == Counter(
            dict.fromkeys(_fan_memberships(app, fanco.id), 1))
        assert {role for role, _status in _access(app, fanco.id).values()} == {
            "admin" if name == "Fan Renamed" else "developer"}


def test_an_organization_deletion_deprovisions_its_members_in_chunks(app: Flask, client: FlaskClient,
                                                                     fanco: Tenant) -> None:
    deleted = _event("organization.deleted", {
        "object": "organization", "id": WORKOS_ORG, "name": "Fanco", "allow_profiles_outside_organization": False,
        "domains": [], "metadata": {}, "external_id": None, "created_at": "2031-01-01T00:00:00.000Z",
        "updated_at": _time()})
    _ack(client, app, deleted)
    _batch(app)
    assert _jobs(app) == Counter({"received": 1})
    drain_inbox(app)
    with app.app_context():
        statuses = Counter(db.session.scalars(select(Membership.status).where(
            Membership.organization_id == fanco.id)).all())
        every = set(db.session.scalars(select(Membership.id).where(Membership.organization_id == fanco.id)).all())
        db.session.remove()
    assert statuses == Counter({"deprovisioned": len(every)})
    assert _audited(app, source_event_id=deleted["id"]) == Counter(dict.fromkeys(every, 1))


def test_a_batch_takes_at_most_one_job(app: Flask, fanco: Tenant) -> None:
    with app.app_context():
        session = db.session()
        for scope in ("organization", f"group:{GROUP}", f"directory:{DIRECTORY}"):
            fanout_jobs.enqueue(session, fanout_jobs.Job(fanco.id, scope, "test", Cause.system("test")))
        session.commit()
        claimed = inbox_worker.claim(session, 20)
        assert [c.source for c in claimed] == ["internal"]
        session.rollback()
        db.session.remove()


def test_a_failed_job_is_replayed_by_the_appliers(app: Flask, client: FlaskClient, fanco: Tenant) -> None:
    from hatidata_auth.services import inbox_replay

    _ack(client, app, _event("dsync.group.updated", _group("Fan Renamed")))
    _batch(app)
    with app.app_context():  # the job failed (say, a bug since fixed)
        session = db.session()
        job_id = session.scalar(select(WebhookEvent.event_id).where(WebhookEvent.source == "internal"))
        session.execute(WebhookEvent.__table__.update().where(WebhookEvent.event_id == job_id)
                        .values(status="failed", last_error="RuntimeError: boom"))
        session.commit()
        assert job_id is not None
        result = inbox_replay.replay(session, app.extensions["hatidata_workos"].client, job_id)
        assert result.status == "received"  # queued again: the appliers apply it, in its chain's order
        db.session.remove()
    drain_inbox(app)
    assert set(_access(app, fanco.id).values()) == {("developer", "active")}
    assert _jobs(app) == Counter({"applied": -(-MEMBERS // CHUNK)})
    _consistent(app, fanco.id)


def test_a_settled_deprovisioning_that_queued_work_taking_access_away_wakes_the_revoking_thread(
        app: Flask, fanco: Tenant) -> None:
    """A member's removal from a group whose snapshot renames it is settled in its request, and the rename's fan-out
    queues a recompute of the other members, which may take access away: the revoking thread is woken for it
    (no NOTIFY does it on SQLite: helper-159), on SQLite by the commit that queued it
    (``tests/test_revoking_work_wake.py``), then the request wakes the batch appliers only."""
    removed = _event("dsync.group.user_removed", {"directory_id": DIRECTORY, "user": _user(3, "active"),
                                                  "group": _group("Fan Renamed")})
    with app.app_context():
        postgres = db.engine.dialect.name == "postgresql"
    assert acknowledge_recording_wakes(app, removed) == ([True] if postgres else [True, False])
    with app.app_context():
        rows = db.session.execute(select(WebhookEvent.event_id, WebhookEvent.status, WebhookEvent.revokes,
                                         WebhookEvent.source)).all()
        db.session.remove()
    assert [r.status for r in rows if r.event_id == removed["id"]] == ["applied"]
    assert [r.status for r in rows if r.source == "internal" and r.revokes] == ["received"]  # the rename's chunk
