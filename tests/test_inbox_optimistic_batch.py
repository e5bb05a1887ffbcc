"""An applier's batch under one savepoint (issue #14): a batch of several events is applied optimistically, with no
savepoint per event; when one event fails, that savepoint is rolled back and the batch applied again event by event.
And the batch scope's known directories: read once per batch while the tenant's row is held, read again after any
write to ``known_directories``.

The property that batched and one-event-per-transaction runs end alike, failing events included, is
``test_inbox_batch_scope.py``'s; here: how many savepoints each path opens, and that the failed attempt leaves
nothing behind (no row, no audit event, no outcome) across event types."""

from __future__ import annotations

import gc
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event, insert, select

from hatidata_auth.extensions import db
from hatidata_auth.models import AuditEvent, DirectoryUser, KnownDirectory, Organization, WebhookEvent
from hatidata_auth.services import audit, inbox, inbox_worker
from hatidata_auth.services.events.batch_scope import BatchScope
from tests.test_inbox_batch_scope import ACME, GLOBEX, _organization, _prepare, _user


def _apply_batch(app: Flask, payloads: list[dict[str, Any]]) -> tuple[inbox_worker.BatchReport, Counter[str]]:
    """Store *payloads*, apply one batch of them; the report and the statements sent, by their first word."""
    statements: Counter[str] = Counter()

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements[statement.split(None, 1)[0].upper()] += 1

    with app.app_context():
        for payload in payloads:
            inbox.store(db.session(), payload)
        event.listen(db.engine, "before_cursor_execute", count)
        try:
            report = inbox_worker.apply_batch(db.session(), app.extensions["hatidata_workos"].client, limit=20)
        finally:
            event.remove(db.engine, "before_cursor_execute", count)
        db.session.remove()
    return report, statements


def _audited(app: Flask) -> Counter[tuple[str | None, str]]:
    with app.app_context():
        rows = Counter((e.source_event_id, e.action) for e in db.session.scalars(select(AuditEvent)))
        for org_id in [*db.session.scalars(select(Organization.id)), None]:
            assert audit.verify_organization(db.session(), org_id).ok
        db.session.remove()
    return rows


def test_a_batch_that_fails_nowhere_opens_one_savepoint(app: Flask) -> None:
    _prepare(app)
    payloads = [_user(ACME if n % 2 else GLOBEX, n, "own") for n in range(6)]
    report, statements = _apply_batch(app, payloads)
    assert report.count("applied") == len(payloads)
    assert statements["SAVEPOINT"] == 1, statements
    audited = _audited(app)
    assert all(audited[(p["id"], "directory_user.created")] == 1 for p in payloads)


@pytest.mark.parametrize("position", [0, 2, 5])
def test_a_failing_event_sends_the_batch_event_by_event_and_its_first_attempt_leaves_nothing(
        app: Flask, position: int) -> None:
    """Wherever the failing event sits, the others are applied once (one audit event each, one row each), the
    failing one is recorded failed with no audit event, and every chain verifies."""
    _prepare(app)
    payloads: list[dict[str, Any]] = [_user(ACME, n, "own") for n in range(5)]
    broken = _organization(GLOBEX, ("globex.test",), broken=True)  # fails when its change is flushed
    payloads.insert(position, broken)
    report, statements = _apply_batch(app, payloads)
    assert report.claimed == len(payloads)
    assert {r.event_id: r.status for r in report.results} == {
        p["id"]: "failed" if p is broken else "applied" for p in payloads}
    assert statements["SAVEPOINT"] == 1 + len(payloads), statements  # the optimistic one, then one per event
    audited = _audited(app)
    assert not [key for key in audited if key[0] == broken["id"]]
    assert all(audited[(p["id"], "directory_user.created")] == 1 for p in payloads if p is not broken)
    with app.app_context():
        assert db.session.scalar(select(Organization.name).where(
            Organization.workos_organization_id == GLOBEX)) != {"not": "a name"}
        assert len(db.session.scalars(select(DirectoryUser)).all()) == 5
        statuses = Counter(db.session.scalars(select(WebhookEvent.status)))
        db.session.remove()
    assert statuses == Counter({"applied": 5, "failed": 1})


def test_the_known_directory_is_read_once_per_batch_and_again_after_a_write(app: Flask) -> None:
    _prepare(app)
    loads: list[str] = []
    with app.app_context():
        session = db.session()
        org = session.scalar(select(Organization).where(Organization.workos_organization_id == ACME)
                             .with_for_update(read=True))
        assert org is not None

        def load(name: str) -> Any:
            directory_id = f"directory_{name}"

            def read() -> Any:
                loads.append(name)
                return session.execute(select(KnownDirectory.deleted_at).where(
                    KnownDirectory.organization_id == org.id, KnownDirectory.directory_id == directory_id)).first()
            return read

        batch = BatchScope()
        first = batch.event(session)
        first.hold(ACME, org, False)  # this transaction holds Acme's row: the read may serve the batch
        assert first.known_directory(org.id, "directory_x", load("x")) is None
        batch.promote(first)
        assert batch.event(session).known_directory(org.id, "directory_x", load("x")) is None
        assert loads == ["x"]
        now = datetime.now(UTC)
        session.execute(insert(KnownDirectory).values(organization_id=org.id, directory_id="directory_x",
                                                      created_at=now, updated_at=now))  # a Core write
        assert batch.event(session).known_directory(org.id, "directory_x", load("x")) is not None
        assert loads == ["x", "x"]
        session.add(KnownDirectory(organization_id=org.id, directory_id="directory_y"))  # not flushed yet
        assert batch.event(session).known_directory(org.id, "directory_y", load("y")) is not None
        assert loads == ["x", "x", "y"]
        unheld = BatchScope()  # a tenant whose row the batch does not hold: its read serves that event alone
        alone = unheld.event(session)
        alone.known_directory("org_not_held", "directory_z", load("z"))
        unheld.promote(alone)
        unheld.event(session).known_directory("org_not_held", "directory_z", load("z"))
        assert loads == ["x", "x", "y", "z", "z"]
        session.rollback()
        db.session.remove()


def _as(payload: dict[str, Any], event_type: str) -> dict[str, Any]:
    return {**payload, "id": f"{payload['id']}{event_type[-7:]}", "event": event_type}


@pytest.mark.parametrize(("before", "after"), [
    (("acme.test", "active", False), ("acme.test", "suspended", False)),
    (("acme.test", "active", False), ("shared.test", "active", False)),
    (("acme.test", "suspended", False), ("acme.test", "active", False)),
    (("acme.test", "active", True), ("acme.test", "active", False)),  # a tombstone is never resurrected
])
def test_a_created_event_of_a_stored_user_ends_as_an_updated_event_would(
        app: Flask, monkeypatch: pytest.MonkeyPatch, before: tuple[str, str, bool],
        after: tuple[str, str, bool]) -> None:
    """``dsync.user.created`` tries the insert first (no lookup) when its tenant's row is held: for a user already
    stored (a replay, a resync, or events out of order) its conflict path must end exactly as ``updated`` does."""
    from hatidata_auth.services.events import directory_users
    from tests.test_inbox_batch_scope import _state

    looked_up: list[str] = []
    lookup = directory_users._org_and_locked_user

    def spy(ctx: Any, data: dict[str, Any]) -> Any:
        looked_up.append(data["id"])
        return lookup(ctx, data)

    monkeypatch.setattr(directory_users, "_org_and_locked_user", spy)
    first = _user(ACME, 1, before[0], before[1], deleted=before[2])
    # A2 and A3 come first in their batches (A3 older and revoking, as A1's snapshot may be): Acme's row is held
    others = _user(ACME, 2, "acme.test"), _user(ACME, 3, "acme.test", "suspended")
    later = _user(ACME, 1, after[0], after[1])
    ends = {}
    for event_type in ("dsync.user.updated", "dsync.user.created"):
        _prepare(app)
        _apply_batch(app, [others[0], first])
        looked_up.clear()
        _apply_batch(app, [others[1], _as(later, event_type)])
        assert ("directory_user_A1" in looked_up) == (event_type == "dsync.user.updated")
        state = _state(app)
        ends[event_type] = (state["directory_users"], state["memberships"], state["people"],
                            sorted(action for _e, action, *_r in state["audit"]))
    assert ends["dsync.user.created"] == ends["dsync.user.updated"]


def test_a_rolled_back_savepoint_leaves_no_object_with_its_values(app: Flask) -> None:
    """The rule behind ``inbox_worker.roll_back``: after a savepoint's rollback, no object of the session holds a
    value the rollback undid, even one loaded again (a new object) after the object that changed the row was
    garbage-collected. SQLAlchemy alone expires only the objects it saw change, by weak reference."""
    _prepare(app)
    with app.app_context():
        session = db.session()

        def reload() -> Organization:
            org = session.scalar(select(Organization).where(Organization.workos_organization_id == GLOBEX))
            assert org is not None
            return org

        seen = []
        for rollback in (lambda sp: sp.rollback(), lambda sp: inbox_worker.roll_back(session, sp)):
            session.expire_all()
            savepoint = session.begin_nested()
            changed = reload()
            changed.status = "deleted"
            session.flush()
            del changed
            gc.collect()  # the changed object is gone; the row is read again through a new one, held
            again = reload()
            assert again.status == "deleted"
            rollback(savepoint)
            seen.append(reload().status)
            assert session.scalar(select(Organization.status).where(
                Organization.workos_organization_id == GLOBEX)) == "active"
            del again
        # SQLAlchemy's rollback alone kept the undone value (so the hazard is real here); roll_back does not.
        assert seen == ["deleted", "active"]
        session.rollback()
        db.session.remove()
