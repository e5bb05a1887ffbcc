"""Break-it tests of the optimistic batch (one savepoint per batch, event by event only when one fails), the batch
scope's known directories and SQLite's audit rows written by one Core executemany.

- Property: histories of directory users, group memberships, organization changes, directory replacements
  (``dsync.activated`` of a new directory) and deletions, with events that fail *after* their handler wrote (a
  bug, or WorkOS unreachable: transient), end alike whether applied one event per transaction or in batches.
- A WorkOS call made by a rolled-back optimistic attempt (a session's revocation at WorkOS) is made again, and
  its outcome audited once.
- PostgreSQL: appliers in several threads, each batch with a failing event (so each goes event by event after its
  optimistic attempt), race another transaction deleting a directory the tenant no longer uses (only
  ``known_directories`` tells its events apart): no event of it is applied after its deletion.
- SQLite's audit rows (Core executemany) carry every column, verify, and are counted by the metrics once committed.
"""

from __future__ import annotations

import importlib
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from hatidata_auth import metrics
from hatidata_auth.causes import Actor, Cause
from hatidata_auth.extensions import db
from hatidata_auth.models import AuditEvent, AuthSession, KnownDirectory, Organization
from hatidata_auth.services import audit, inbox, inbox_worker, workos_revocations
from hatidata_auth.services.inbox import entity_key
from hatidata_auth.workos import WorkOSUnavailable
from tests.support.servers import EmulatorControl
from tests.test_inbox_batch_scope import (
    ACME,
    DIRECTORIES,
    GLOBEX,
    _apply,
    _envelope,
    _event,
    _group_created,
    _prepare,
    _stamp,
    _state,
    _user,
    step,
)

BOOM = "boom after writing"


@contextmanager
def failing_after_writes(failures: dict[str, str]) -> Iterator[None]:
    """While the block runs, the events whose ids *failures* names run their handler whole, flush what it wrote,
    then raise: ``"bug"`` a RuntimeError (recorded ``failed``), ``"transient"`` WorkOS unreachable (stays
    ``received``)."""
    real = inbox.handler_for

    def handler_for(event_type: str) -> Any:
        handler = real(event_type)
        if handler is None:
            return None

        def wrapped(ctx: Any, data: dict[str, Any]) -> None:
            handler(ctx, data)
            how = failures.get(str(ctx.event_id))
            if how is not None:
                ctx.session.flush()
                raise RuntimeError(BOOM) if how == "bug" else WorkOSUnavailable(BOOM, reason="unreachable")
        return wrapped

    inbox.handler_for = handler_for
    try:
        yield
    finally:
        inbox.handler_for = real


def _new_directory(app: Flask, emulator: Any) -> str:
    """A second directory of Acme at WorkOS (made once per test): activating it replaces Acme's first one."""
    made = app.extensions.setdefault("breakit_new_directory", [])
    if not made:
        created = EmulatorControl(emulator.url).ctl("POST", f"/organizations/{ACME}/directories", {"name": "HR"})
        made.append(str(created["id"]))
    return str(made[0])


def _activated(directory_id: str) -> dict[str, Any]:
    return _envelope("dsync.activated", {"object": "directory", "id": directory_id, "organization_id": ACME,
                                         "state": "active", "type": "okta scim v2.0", "name": "HR",
                                         "domains": []}, _stamp())


def _new_directory_user(directory_id: str, user: int, state: str) -> dict[str, Any]:
    payload = _user(ACME, user, "own", state)
    data = {**payload["data"], "id": f"directory_user_E{user}", "directory_id": directory_id,
            "idp_id": f"E{user}", "email": f"ue{user}@acme.test"}
    return {**payload, "data": data}


extra = st.one_of(
    st.tuples(st.just("activate_new")),
    st.tuples(st.just("delete_new")),
    st.tuples(st.just("new_user"), st.integers(0, 3), st.sampled_from(("active", "suspended"))),
)
fault = st.sampled_from((None, None, None, None, "bug", "transient"))


def _payload(spec: tuple[Any, ...], new_dir: str) -> dict[str, Any]:
    kind = spec[0]
    if kind == "activate_new":
        return _activated(new_dir)
    if kind == "delete_new":
        return _envelope("dsync.deleted", {"object": "directory", "id": new_dir, "organization_id": ACME,
                                           "state": "deleting", "type": "okta scim v2.0", "name": "HR"}, _stamp())
    if kind == "new_user":
        return _new_directory_user(new_dir, spec[1], spec[2])
    return _event(spec)


def _groups(specs: list[list[tuple[tuple[Any, ...], str | None]]], new_dir: str
            ) -> tuple[list[list[dict[str, Any]]], dict[str, str]]:
    """The events, a group per list (one event per entity key in each), and the failures to inject."""
    out, failures = [], {}
    for group in specs:
        events: dict[str, dict[str, Any]] = {}
        for spec, how in group:
            payload = _payload(spec, new_dir)
            if entity_key(payload) not in events:
                events[entity_key(payload)] = payload
                if how is not None:
                    failures[payload["id"]] = how
        out.append(list(events.values()))
    return out, failures


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(specs=st.lists(st.lists(st.tuples(st.one_of(step, extra), fault), min_size=4, max_size=16),
                      min_size=1, max_size=3),
       batch=st.integers(2, 20))
def test_batches_with_failures_after_writes_end_as_one_event_per_transaction(
        app: Flask, emulator: Any, specs: list[list[tuple[tuple[Any, ...], str | None]]], batch: int) -> None:
    new_dir = _new_directory(app, emulator)
    groups, failures = _groups(specs, new_dir)
    groups = [[_group_created()], *groups]
    ends = []
    for size in (1, batch):
        _prepare(app)
        with failing_after_writes(failures):
            _apply(app, groups, size)
        state = _state(app)
        with app.app_context():
            state["known"] = sorted((d, deleted is not None) for d, deleted in db.session.execute(
                select(KnownDirectory.directory_id, KnownDirectory.deleted_at)))
            state["acme_directory"] = tuple(db.session.execute(select(
                Organization.directory_id, Organization.directory_state).where(
                Organization.workos_organization_id == ACME)).one())
            db.session.remove()
        ends.append(state)
    assert ends[1] == ends[0]
    for event_id, how in failures.items():
        status, error = ends[1]["inbox"][event_id]
        if BOOM in (error or ""):  # its handler ran whole (not ignored, refused or failed before)
            assert status == ("failed" if how == "bug" else "received"), (event_id, status, error)


def _run(app: Flask, work: Callable[[], None], failures: list[BaseException]) -> threading.Thread:
    def target() -> None:
        try:
            with app.app_context():
                work()
                db.session.remove()
        except BaseException as exc:  # noqa: BLE001 - reported to the test's thread
            failures.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    return thread


def _race_round(app: Flask, new_dir: str, old_dir: str, head_start: float, deadlocks: list[str]) -> dict[str, Any]:
    """One round of :func:`test_concurrent_appliers_never_apply_an_event_of_a_directory_deleted_meanwhile`: the
    state after every event is applied; the deletion's event id under ``"deletion"``."""
    _prepare(app)
    _apply(app, [[_user(ACME, 0, "acme.test")], [_activated(new_dir)]], 1)
    deletion = _envelope("dsync.deleted", {"object": "directory", "id": old_dir, "organization_id": ACME,
                                           "state": "deleting", "type": "okta scim v2.0", "name": "D"}, _stamp())
    with app.app_context():
        for n in range(10, 70):
            inbox.store(db.session(), _user(ACME, n, "acme.test", refused=n % 6 == 0))
        db.session.commit()
        db.session.remove()
    failures: list[BaseException] = []
    stop = threading.Event()
    client = app.extensions["hatidata_workos"].client

    def applier() -> None:
        while not stop.is_set():
            try:
                inbox_worker.apply_batch(db.session(), client, limit=6)
            except OperationalError as exc:  # as ApplierPool does: the batch rolled back whole, retried
                deadlocks.append(str(exc.orig))

    def delete() -> None:
        inbox.store(db.session(), deletion)
        inbox_worker.apply_batch(db.session(), client, limit=1, entity_key=entity_key(deletion))  # or an applier's

    appliers = [_run(app, applier, failures) for _ in range(3)]
    threading.Event().wait(head_start)
    _run(app, delete, failures).join(60)
    with app.app_context():
        while inbox_worker.pending(db.session()):
            threading.Event().wait(0.05)
        db.session.remove()
    stop.set()
    for thread in appliers:
        thread.join(60)
    assert not failures, failures
    return {**_state(app), "deletion": deletion["id"]}


@pytest.mark.postgres
def test_concurrent_appliers_never_apply_an_event_of_a_directory_deleted_meanwhile(app: Flask, emulator: Any) -> None:
    """Acme's first directory D is replaced (``dsync.activated`` of a new one), so only ``known_directories`` tells
    D's late events apart once D is deleted. Three appliers drain batches of new D users, each batch holding an
    event that fails after the binding (the batch then goes event by event), while another transaction deletes D.
    Every D user whose event committed before the deletion is tombstoned by it; one applied after it would be a
    live user of a deleted directory, given access. (A deadlock between the deletion's fan-out, which holds its
    members' keys, and a batch holding them from its claim is broken by PostgreSQL: that batch is retried.)"""
    new_dir, old_dir = _new_directory(app, emulator), DIRECTORIES[ACME]
    deadlocks: list[str] = []
    for attempt in range(3):
        state = _race_round(app, new_dir, old_dir, 0.05 * (attempt + 1), deadlocks)
        live = sorted(workos_id for (org, workos_id), (_e, _s, deleted, _p) in state["directory_users"].items()
                      if org == ACME and not deleted)
        assert live == [], f"users of the deleted directory applied after its deletion: {live}"
        assert state["inbox"][state["deletion"]] == ("applied", None)
        statuses = Counter(status for status, _error in state["inbox"].values())
        assert set(statuses) <= {"applied", "ignored", "failed"}, statuses
        assert statuses["failed"] == 10  # the events that fail after their binding, and only they
    assert all("deadlock" in text for text in deadlocks), deadlocks


@pytest.mark.parametrize("broken_at", [None, 0, 3])
def test_a_batch_audit_rows_carry_every_column_and_are_counted_once_committed(
        app: Flask, monkeypatch: pytest.MonkeyPatch, broken_at: int | None) -> None:
    """The batch's audit rows (one Core executemany on SQLite, the CTE on PostgreSQL): each row has its id, public id,
    seq, chain links, time and details as recorded; the metrics count exactly the committed rows, none of a
    rolled-back optimistic attempt's or of the failing event's."""
    _prepare(app)
    counted: Counter[str] = Counter()
    monkeypatch.setattr(metrics, "audit_committed", lambda action, outcome, details: counted.update([action]))
    payloads = [_user(ACME if n % 2 else GLOBEX, 40 + n, "own") for n in range(6)]
    failures = {payloads[broken_at]["id"]: "bug"} if broken_at is not None else {}
    with app.app_context(), failing_after_writes(failures):
        for payload in payloads:
            inbox.store(db.session(), payload)
        db.session.commit()
        report = inbox_worker.apply_batch(db.session(), app.extensions["hatidata_workos"].client, limit=20)
        db.session.remove()
    assert report.count("failed") == len(failures)
    with app.app_context():
        rows = list(db.session.scalars(select(AuditEvent).where(AuditEvent.source_event_id.in_(
            [p["id"] for p in payloads])).order_by(AuditEvent.id)))
        assert Counter(r.source_event_id for r in rows if r.action == "directory_user.created") == Counter(
            p["id"] for p in payloads if p["id"] not in failures)
        assert not [r for r in rows if r.source_event_id in failures]
        for row in rows:
            assert row.id
            assert row.public_id.startswith("evt")
            assert row.seq > 0
            assert row.created_at.tzinfo is not None
            assert row.details
            assert row.action != "directory_user.created" or row.details["workos_id"] == row.target_id
            assert len(row.hash) == len(row.prev_hash) == 64
            assert audit.chain_hash(row.prev_hash, row) == row.hash
        assert len({r.public_id for r in rows}) == len(rows)
        for org_id in {r.organization_id for r in rows}:
            assert audit.verify_organization(db.session(), org_id).ok
        db.session.remove()
    assert counted == Counter(r.action for r in rows)


def test_a_workos_revocation_in_a_rolled_back_optimistic_attempt_is_made_again_and_audited_once(
        app: Flask, db_session: Any, workos_client: Any) -> None:
    """A batch holds a queued WorkOS revocation (``workos_revocations``) and an event that fails after writing: the
    optimistic attempt ends the session at WorkOS, is rolled back, and the job runs again event by event. WorkOS's
    end of a session is idempotent: it is revoked there, audited ``revoked`` once, and the failing event leaves
    nothing."""
    from hatidata_auth.services import reconcile
    from tests.support.dsync import mirror_organizations

    jobs: Any = importlib.import_module("tests.test_workos_revocation_jobs")  # its helpers (not typed)
    mirror_organizations(db_session, workos_client)
    for _report in reconcile.resync_all(db_session, workos_client):
        db_session.commit()
    db_session.remove()
    _client, sid = jobs._signed_in(app)
    with app.app_context():
        record = db.session.scalar(select(AuthSession).where(AuthSession.workos_session_id == sid))
        assert record is not None
        job = workos_revocations.queue(db.session(), organization_id=record.organization_id, session_id=record.id,
                                       user_id=record.user_id, cause=Cause.by(Actor.system("test")))
        failing = _user(GLOBEX, 77, "own")
        inbox.store(db.session(), failing)
        db.session.commit()
        with failing_after_writes({failing["id"]: "bug"}):
            report = inbox_worker.apply_batch(db.session(), app.extensions["hatidata_workos"].client, limit=20)
        db.session.remove()
    assert {r.event_id: r.status for r in report.results} == {job: "applied", failing["id"]: "failed"}
    assert jobs._workos_status(app, sid) == "revoked"
    with app.app_context():
        at_workos = list(db.session.scalars(select(AuditEvent).where(AuditEvent.action == "session.revoked_at_workos")))
        assert [e.details["workos"] for e in at_workos] == ["revoked"]
        assert not db.session.scalars(select(AuditEvent).where(AuditEvent.source_event_id == failing["id"])).all()
        db.session.remove()
