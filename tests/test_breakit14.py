"""Break-it round 14: faults found in the acknowledged-then-applied inbox, the revocation log and their neighbours.

Every test here was a fault found by a break-it round (a strict xfail until its fix); each is now a regression
test of the rule that was broken (docs/directory-sync.md, docs/auth.md).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from hatidata_auth.extensions import db
from hatidata_auth.models import WebhookEvent
from hatidata_auth.revocation_bus import RevocationBus
from hatidata_auth.revocation_log import IDENTITY_INTERVAL
from hatidata_auth.services import inbox, inbox_worker
from tests.support.dsync import mirror_all, post_event
from tests.test_inbox_appliers import user_event


@pytest.fixture
def synced(app: Flask) -> None:
    mirror_all(app)


def _row(app: Flask, event_id: str) -> tuple[str, str | None]:
    with app.app_context():
        status, key = db.session.execute(select(WebhookEvent.status, WebhookEvent.entity_key)
                                         .where(WebhookEvent.event_id == event_id)).one()
        db.session.remove()
    return status, key


def _revoking(kind: str, user: str) -> dict[str, Any]:
    if kind == "deactivated":
        return user_event(user, 10, state="inactive")
    payload = user_event(user, 10)
    payload["event"] = "dsync.user.deleted"
    payload["data"]["state"] = "inactive"
    return payload


# --- 1. a failure recorded by the apply-at-once path loses the event's entity key ---------------------------------


@settings(max_examples=4, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(kind=st.sampled_from(["deactivated", "deleted"]))
def test_a_deprovisioning_that_failed_on_the_poller_path_is_applied_by_the_webhook_that_redelivers_it(
        app: Flask, synced: None, kind: str) -> None:
    user = f"X{uuid.uuid4().hex[:8].upper()}"
    post_event(app.test_client(), app, user_event(user, 1))  # the user exists and is active
    payload = _revoking(kind, user)
    with app.app_context():
        # What inbox.receive does when applying fails (e.g. WorkOS unreachable in event_source.bind): the
        # transaction is rolled back and the failure recorded alone.
        inbox.record_failure(db.session(), payload, "events_api", "WorkOSUnavailable: connection refused")
        db.session.commit()
        db.session.remove()
    answer = post_event(app.test_client(), app, payload, drain=False)  # WorkOS delivers the webhook
    assert answer.status_code == 200
    assert answer.json["status"] == "received"
    status, key = _row(app, payload["id"])
    assert status == "applied"  # applied by the acknowledging request, as every other deprovisioning
    assert key == inbox.entity_key(payload)


# --- 2. an older event of an entity is claimed while an applier holds a newer one ---------------------------------


@pytest.mark.postgres
def test_an_entity_held_by_one_applier_is_not_claimed_by_another_when_an_older_event_arrives(
        app: Flask, synced: None) -> None:
    user = f"Y{uuid.uuid4().hex[:8].upper()}"
    newer, older = user_event(user, 20), user_event(user, 5)
    with app.app_context():
        engine = db.engine
        writer, first, second = Session(engine), Session(engine), Session(engine)
        try:
            inbox.store(writer, newer)
            held = inbox_worker.claim(first, limit=10, entity_key=inbox.entity_key(newer))
            assert [e.event_id for e in held] == [newer["id"]]  # applier 1 holds the user's only event
            inbox.store(writer, older)  # WorkOS delivers an older event of the same user late
            taken = inbox_worker.claim(second, limit=10)  # applier 2, meanwhile
            assert [e.event_id for e in taken if e.payload["data"]["id"] == newer["data"]["id"]] == []
        finally:
            second.rollback()
            first.rollback()
            for session in (writer, first, second):
                session.close()


# --- 3. the revocation log followed by a mapping of a file that is no longer the log ------------------------------


def test_a_revocation_reaches_a_process_whose_log_file_was_replaced(tmp_path: Path) -> None:
    path = tmp_path / "cache-revocations.log"
    old_worker, new_worker = RevocationBus(None, log_path=path), RevocationBus(None, log_path=path)
    try:
        assert old_worker.local_enabled()
        old_worker.sessions.set("session_A", "active", 1e18)
        assert old_worker.local_enabled()
        path.unlink()
        assert new_worker.local_enabled()
        new_worker.publish("session", "session_A")  # revoked in a worker started after the removal
        time.sleep(IDENTITY_INTERVAL)  # how long a reader may trust the fast path without rechecking the path
        old_worker.local_enabled()
        assert old_worker.sessions.get("session_A") is None
    finally:
        for bus in (old_worker, new_worker):
            assert bus.log is not None
            bus.log.close()


def test_a_reader_notices_a_log_recreated_in_place_even_after_it_caught_up(tmp_path: Path) -> None:
    path = tmp_path / "cache-revocations.log"
    reader, writer = RevocationBus(None, log_path=path), RevocationBus(None, log_path=path)
    try:
        for n in range(3):
            writer.publish("session", f"old_{n}")
        assert reader.local_enabled()  # seen = 3
        reader.sessions.set("session_B", "active", 1e18)
        assert writer.log is not None
        writer.log.close()
        path.write_bytes(b"garbage")  # e.g. an older release's log with another size
        recreator = RevocationBus(None, log_path=path)
        recreator.local_enabled()  # zeroes the file: seq 0
        for n in range(2):
            recreator.publish("session", f"other_{n}")
        recreator.publish("session", "session_B")  # head is 3 again
        reader.local_enabled()
        assert reader.sessions.get("session_B") is None
        assert recreator.log is not None
        recreator.log.close()
    finally:
        assert reader.log is not None
        reader.log.close()


def _replace_log(path: Path, how: str, entries: int) -> None:
    """Every way the path can stop naming the log a reader mapped."""
    if how == "removed":
        path.unlink()
    elif how == "renamed_over":  # e.g. restored from a backup: a valid log of another generation
        other = path.with_name("other.log")
        donor = RevocationBus(None, log_path=other)
        assert donor.local_enabled()  # creates it
        for n in range(entries):
            donor.publish("session", f"donor_{n}")
        assert donor.log is not None
        donor.log.close()
        other.replace(path)
    elif how == "garbage":  # an older release's log, another size
        path.write_bytes(b"garbage")
    else:  # zeroed in place at the same size by a foreign writer
        with path.open("r+b") as raw:
            raw.write(bytes(64))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(how=st.sampled_from(["removed", "renamed_over", "garbage", "zeroed"]), before=st.integers(0, 6),
       after=st.integers(0, 6))
def test_a_reader_never_trusts_its_cache_across_a_replaced_log(tmp_path_factory: pytest.TempPathFactory, how: str,
                                                                before: int, after: int) -> None:
    path = tmp_path_factory.mktemp("log") / "cache-revocations.log"
    reader, writer = RevocationBus(None, log_path=path), RevocationBus(None, log_path=path)
    buses = [reader, writer]
    try:
        for n in range(before):
            writer.publish("session", f"old_{n}")
        assert reader.local_enabled()
        reader.sessions.set("session_C", "active", 1e18)
        _replace_log(path, how, after)
        successor = RevocationBus(None, log_path=path)
        buses.append(successor)
        for n in range(after):
            successor.publish("session", f"new_{n}")
        successor.publish("session", "session_C")
        time.sleep(IDENTITY_INTERVAL)
        assert reader.local_enabled()
        assert reader.sessions.get("session_C") is None
        reader.sessions.set("session_D", "active", 1e18)
        writer.publish("session", "session_D")  # the writer too appends to the live log, not the orphan
        time.sleep(IDENTITY_INTERVAL)
        assert reader.local_enabled()
        assert reader.sessions.get("session_D") is None
    finally:
        for bus in buses:
            assert bus.log is not None
            bus.log.close()


# --- 4. a shared status entry of a session in use never expires -------------------------------------------------


@pytest.mark.redis
def test_a_revocation_missed_by_the_cache_is_honoured_within_the_cache_max_age(
        app_config: dict[str, Any], request: pytest.FixtureRequest) -> None:
    import time
    from datetime import UTC, datetime

    from sqlalchemy import update

    from hatidata_auth.models import AuthSession, Organization
    from tests.auth_support import login, sync_organizations

    ttl, max_age = 2, 3
    app_config["HATIDATA_SESSION_CACHE_TTL"] = ttl
    app_config["HATIDATA_SESSION_CACHE_MAX_AGE"] = max_age
    app: Flask = request.getfixturevalue("app")
    sync_organizations(app)
    with app.app_context():
        db.session.execute(update(Organization).values(session_cache_ttl=ttl))
        db.session.commit()
        db.session.remove()
    client = app.test_client()
    assert login(client, "admin@acme.test").status_code == 302
    rt = app.extensions["hatidata_auth"]
    session_id = client.get("/api/v1/me").get_json()["session_id"]
    rt.backend._write_client.delete(*rt.backend._write_client.keys(f"{rt.backend._get_prefix()}auth:ses:*"))
    rt.bus.clear()
    loaded = time.monotonic()
    assert client.get("/api/v1/me").status_code == 200  # the shared entry holds "active"
    with app.app_context():
        # The revocation is committed, but its stale-marking and publish never reached Redis (a partition).
        db.session.execute(update(AuthSession).where(AuthSession.id == session_id)
                           .values(revoked_at=datetime.now(UTC)))
        db.session.commit()
        db.session.remove()
    answers = []
    deadline = time.monotonic() + 2 * max_age
    while time.monotonic() < deadline:
        rt.bus.clear()  # no in-process answer: every request reads the shared entry
        answers.append((time.monotonic() - loaded, client.get("/api/v1/me").status_code))
        time.sleep(0.5)
    # renewed on every hit, yet never answered from a status read more than max_age ago (1 s: whole-second TTLs)
    assert all(code == 401 for age, code in answers if age > max_age + 1), answers
    assert answers[-1][1] == 401, answers


# --- 5. events that take access away but were not on a hand-kept list of revoking types ----------------------


def test_a_membership_deactivated_on_the_workos_side_is_refused_when_the_webhook_is_acknowledged(
        app: Flask, db_session: Any, workos_client: Any) -> None:
    from workos.organization_membership import RoleSingle

    from hatidata_auth.models import Membership, User
    from tests.auth_support import login
    from tests.support.dsync import drain_inbox, mirror_organizations
    from workos_emulator.idp import role_for_groups

    initech = mirror_organizations(db_session, workos_client)["initech.test"]
    db_session.commit()
    email = f"sso.{uuid.uuid4().hex[:6]}@initech.test"
    user = User(email=email)
    db_session.add(user)
    db_session.flush()
    db_session.add(Membership(organization_id=initech.id, user_id=user.id, role="viewer", source="sso"))
    db_session.commit()
    workos_user = workos_client.user_management.create_user(email=email)
    om = workos_client.organization_membership.create_organization_membership(
        user_id=workos_user.id, organization_id=initech.workos_organization_id,
        role=RoleSingle(role_slug=role_for_groups(["HatiData Admins", "Everyone"])))
    client = app.test_client()
    assert login(client, email, organization_id=initech.workos_organization_id).status_code == 302
    assert client.get("/api/v1/me").status_code == 200
    payload = {"id": f"event_{uuid.uuid4().hex[:24].upper()}", "event": "organization_membership.updated",
               "created_at": "2031-01-01T00:00:00.000Z",
               "data": {"object": "organization_membership", "id": om.id, "user_id": workos_user.id,
                        "organization_id": initech.workos_organization_id, "status": "inactive",
                        "directory_managed": False, "role": {"slug": om.role.slug}, "roles": [{"slug": om.role.slug}],
                        "custom_attributes": {}, "created_at": "2031-01-01T00:00:00.000Z",
                        "updated_at": "2031-01-01T00:00:00.000Z"}}
    answer = post_event(client, app, payload, drain=False)
    assert answer.status_code == 200, answer.get_json()
    at_answer = client.get("/api/v1/me").status_code
    drain_inbox(app)
    assert client.get("/api/v1/me").status_code == 401  # the event does take access away...
    assert at_answer == 401  # ...but only once an applier gets to it


@pytest.mark.parametrize(("event_type", "state"), [("organization_membership.updated", "inactive"),
                                                 ("dsync.group.deleted", None), ("connection.deleted", None)])
def test_every_type_that_takes_access_away_counts_as_revoking(event_type: str, state: str | None) -> None:
    data: dict[str, Any] = {"id": "obj_1", "organization_id": "org_1", "directory_id": "directory_1",
                            "name": "Admins"}
    if state:
        data["status"] = state
    assert inbox_worker.revokes_access(event_type, {"event": event_type, "data": data})
