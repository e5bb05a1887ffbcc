"""An applier's batch against another transaction that commits while it runs (issue #14, PostgreSQL: SQLite's
batch holds the database's write lock, so nothing commits meanwhile).

The batch keeps one session for up to 20 events: a tenant row an earlier event loaded stays in the session's
identity map across the savepoints. When a later event locks that row, it must decide on what the row holds
now, as it would in a transaction of its own, not on what the earlier event saw before another transaction
changed it.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event as sa_event

from hatidata_auth.extensions import db
from hatidata_auth.services import inbox, inbox_worker
from hatidata_auth.services.inbox import entity_key
from tests.test_inbox_batch_scope import ACME, _envelope, _prepare, _stamp, _state, _user

pytestmark = pytest.mark.postgres


def _commit_elsewhere(app: Flask, payload: dict[str, Any]) -> None:
    """Store and apply *payload* in another thread's session (its own transaction, committed)."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            with app.app_context():
                inbox.store(db.session(), payload)
                report = inbox_worker.apply_batch(db.session(), app.extensions["hatidata_workos"].client,
                                                  limit=1, entity_key=entity_key(payload))
                assert report.claimed == 1
                assert report.results[0].status == "applied", report.results
                db.session.remove()
        except BaseException as exc:  # reported to the batch's thread
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "the other transaction waits for the batch: a lock the batch still holds"
    assert not failure, failure


def _batch_with_commit_between(app: Flask, events: list[dict[str, Any]], between: dict[str, Any]) -> dict[str, Any]:
    """Apply *events* in one batch; when the first one's savepoint has ended, *between* commits in another
    transaction. Returns the state after (``test_inbox_batch_scope._state``)."""
    _prepare(app)
    with app.app_context():
        session = db.session()
        for payload in events:
            inbox.store(session, payload)
        session.commit()
        fired: list[bool] = []

        def after_first_event(_session: Any, previous: Any) -> None:
            if previous.nested and not fired:
                fired.append(True)
                _commit_elsewhere(app, between)

        sa_event.listen(session, "after_soft_rollback", after_first_event)
        try:
            report = inbox_worker.apply_batch(session, app.extensions["hatidata_workos"].client, limit=20)
        finally:
            sa_event.remove(session, "after_soft_rollback", after_first_event)
        db.session.remove()
    assert fired and report.claimed == len(events)
    return _state(app)


def test_an_organization_deleted_mid_batch_is_seen_by_the_batch_next_event(app: Flask) -> None:
    """Acme's first event locks Acme's row, then fails (its savepoint rolls back, and the lock with it); Acme is
    deleted by another transaction; the batch's next Acme user must not be given access to a deleted tenant
    (applied in its own transaction, it is not)."""
    deleted = _envelope("organization.deleted", {"object": "organization", "id": ACME, "name": "Acme"}, _stamp())
    state = _batch_with_commit_between(app, [_user(ACME, 1, "acme.test", refused=True),
                                             _user(ACME, 2, "acme.test")], deleted)
    assert state["organizations"][ACME][1] == "deleted"
    active = [m for m in state["memberships"] if m[0] == ACME and m[3] == "active"]
    assert active == [], "a member of a deleted organization was given access by the batch"
