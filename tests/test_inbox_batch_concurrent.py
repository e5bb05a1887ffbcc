"""An applier's batch against another transaction that commits while it runs (issue #14, PostgreSQL: SQLite's
batch holds the database's write lock, so nothing commits meanwhile).

The batch keeps one session for up to 20 events: a tenant row an earlier event loaded stays in the session's
identity map across the savepoints. When a later event locks that row, it must decide on what the row holds
now, as it would in a transaction of its own, not on what the earlier event saw before another transaction
changed it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event as sa_event
from sqlalchemy import select

from hatidata_auth.causes import Actor, Cause
from hatidata_auth.extensions import db
from hatidata_auth.models import Organization
from hatidata_auth.services import inbox, inbox_worker, role_mapping
from hatidata_auth.services.inbox import entity_key
from hatidata_auth.services.role_rules import MappingSpec
from tests.test_inbox_batch_scope import (
    ACME,
    _apply,
    _envelope,
    _group_created,
    _membership,
    _prepare,
    _stamp,
    _state,
    _user,
)

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
        except BaseException as exc:  # noqa: BLE001 - reported to the batch's thread
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "the other transaction waits for the batch: a lock the batch still holds"
    assert not failure, failure


def _batch_with_commit_between(app: Flask, events: list[dict[str, Any]], between: Callable[[], None], *,
                               before: tuple[dict[str, Any], ...] = (),
                               prepared: Callable[[], None] | None = None) -> dict[str, Any]:
    """Apply *before* (one event per transaction) after *prepared* runs, then *events* in one batch; when the
    batch's first event's savepoint has ended, *between* runs. Returns the state after
    (``test_inbox_batch_scope._state``)."""
    _prepare(app)
    if prepared is not None:
        prepared()
    _apply(app, [[payload] for payload in before], 1)
    with app.app_context():
        session = db.session()
        for payload in events:
            inbox.store(session, payload)
        session.commit()
        fired: list[bool] = []

        def after_first_event(_session: Any, transaction: Any) -> None:
            if transaction.nested and not fired:
                fired.append(True)
                between()

        sa_event.listen(session, "after_transaction_end", after_first_event)
        try:
            report = inbox_worker.apply_batch(session, app.extensions["hatidata_workos"].client, limit=20)
        finally:
            sa_event.remove(session, "after_transaction_end", after_first_event)
        db.session.remove()
    assert fired
    assert report.claimed == len(events)
    return _state(app)


def test_an_organization_deleted_mid_batch_is_seen_by_the_batch_next_event(app: Flask) -> None:
    """Acme's first event locks Acme's row, then fails (its savepoint rolls back, and the lock with it); Acme is
    deleted by another transaction; the batch's next Acme user must not be given access to a deleted tenant
    (applied in its own transaction, it is not)."""
    deleted = _envelope("organization.deleted", {"object": "organization", "id": ACME, "name": "Acme"}, _stamp())
    state = _batch_with_commit_between(app, [_user(ACME, 1, "acme.test", refused=True),
                                             _user(ACME, 2, "acme.test")], lambda: _commit_elsewhere(app, deleted))
    assert state["organizations"][ACME][1] == "deleted"
    active = [m for m in state["memberships"] if m[0] == ACME and m[3] == "active"]
    assert active == [], "a member of a deleted organization was given access by the batch"


def _map_admins_group(app: Flask, role: str) -> None:
    """An admin maps Acme's "HatiData Admins" group to *role* (committed; the members recomputed)."""
    with app.app_context():
        session = db.session()
        acme = session.scalar(select(Organization).where(Organization.workos_organization_id == ACME))
        assert acme is not None
        role_mapping.replace_mappings(session, app.extensions["hatidata_workos"].client, organization_id=acme.id,
                                      specs=[MappingSpec("name", "HatiData Admins", role, 10)],
                                      cause=Cause.by(Actor.system("test")))
        session.commit()
        db.session.remove()


def test_a_mapping_edit_committed_mid_batch_waits_for_the_batch_and_recomputes_its_members(app: Flask) -> None:
    """A1 joins Acme's admins group, mapped to viewer (the batch reads Acme's mappings under Acme's row lock); an
    admin then maps the group to admin: the edit waits for the batch (the lock), so A2, who joins next in the same
    batch, is not left with a role from a mapping read before an edit committed; after both, both are admins."""
    done = threading.Event()
    failure: list[BaseException] = []

    def edit() -> None:
        try:
            _map_admins_group(app, "admin")
        except BaseException as exc:  # noqa: BLE001 - reported to the test's thread
            failure.append(exc)
        finally:
            done.set()

    editor = threading.Thread(target=edit)
    committed_mid_batch: list[bool] = []

    def start_edit() -> None:
        editor.start()
        committed_mid_batch.append(done.wait(1.5))

    before = (_group_created(), _user(ACME, 1, "acme.test"), _user(ACME, 2, "acme.test"))
    _batch_with_commit_between(app, [_membership(1, True), _membership(2, True)], start_edit, before=before,
                               prepared=lambda: _map_admins_group(app, "viewer"))
    editor.join(30)
    assert not failure, failure
    assert committed_mid_batch == [False], "the mapping edit committed while the batch held Acme's row"
    state = _state(app)
    roles = {email: (role, status) for org, email, role, status, _s, _d in state["memberships"] if org == ACME}
    assert roles == {"ua1@acme.test": ("admin", "active"), "ua2@acme.test": ("admin", "active")}
