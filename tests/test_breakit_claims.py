"""Break-it review of the appliers' claim (issue #14): many appliers claiming at once while events keep arriving,
some older than events of their key already applied; transient failures holding keys back; the deprovisioning
thread and the webhook's in-request apply (``entity_key``) racing the batches.

Asserted for every entity key: never two of its events claimed by transactions open at the same time; every event
applied exactly once; the events stored before the appliers started applied in (event time, id) order; an event that
arrived late is applied after nothing that is older and was pending when it was claimed.
"""

from __future__ import annotations

import random
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import OperationalError

from hatidata_auth.extensions import db
from hatidata_auth.models import WebhookEvent
from hatidata_auth.services import inbox_worker
from hatidata_auth.services.inbox_worker import RETRY_DELAY, claim
from hatidata_auth.unit_of_work import AppSession

T = WebhookEvent.__table__
BASE = datetime(2030, 1, 1, tzinfo=UTC)


def _row(n: int, key: str | None, minute: int | None, *, revokes: bool, late: bool = False) -> dict[str, Any]:
    now = inbox_worker.utcnow()
    return {"event_id": f"event_{'late' if late else 'pre'}_{n}", "event_type": "dsync.user.updated",
            "payload": {"id": n}, "event_created_at": None if minute is None else BASE + timedelta(minutes=minute),
            "received_at": now, "status": "received", "source": "webhook", "attempts": 0, "last_error": None,
            "entity_key": key, "revokes": revokes, "created_at": now, "updated_at": now}


class Ledger:
    """What the appliers did, checked as they do it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active: dict[str, int] = {}  # key -> the event a still-open transaction holds
        self.applied: dict[str, list[int]] = {}
        self.applications: dict[int, int] = {}
        self.errors: list[str] = []

    def take(self, key: str, row: int) -> None:
        with self.lock:
            if key in self.active:
                self.errors.append(f"{key}: event {row} claimed while event {self.active[key]} is held")
            self.active[key] = row

    def release(self, key: str, row: int, applied: bool) -> None:
        with self.lock:  # before the commit: a claim after this one waits on the key's lock until the commit
            self.active.pop(key, None)
            if applied:
                self.applied.setdefault(key, []).append(row)
                self.applications[row] = self.applications.get(row, 0) + 1


def _applier(app: Flask, ledger: Ledger, keys: dict[int, str], stop: threading.Event, seed: int,
             variant: str) -> None:
    rng = random.Random(seed)
    with app.app_context():
        engine = db.engine
    while not stop.is_set():
        with AppSession(engine) as session:
            # Bound before the claim: it may itself fail (SQLite locked), and then this iteration holds nothing.
            claimed: list[Any] = []
            known: dict[int, str] = {}
            try:
                entity_key = rng.choice(sorted(set(keys.values()))) if variant == "entity_key" else None
                claimed = claim(session, rng.randint(1, 5), revoking_only=variant == "revoking_only",
                                entity_key=entity_key)
                known = {c.id: session.scalar(select(func.coalesce(T.c.entity_key, T.c.event_id))
                                              .where(T.c.id == c.id)) for c in claimed}
                for c in claimed:
                    ledger.take(known[c.id], c.id)
                time.sleep(rng.random() * 0.01)
                for c in claimed:
                    transient = rng.random() < 0.2 and c.attempts < 3
                    # A transient failure waits, due again in 20 ms (RETRY_DELAY shortened by the backdated time).
                    session.execute(update(T).where(T.c.id == c.id).values(
                        status="received" if transient else "applied",
                        last_error="WorkOSUnavailable: down" if transient else None,
                        updated_at=inbox_worker.utcnow() - RETRY_DELAY + timedelta(milliseconds=20)))
                    ledger.release(known[c.id], c.id, not transient)
                session.commit()
            except OperationalError:  # SQLite: the database is locked; PostgreSQL: a deadlock: retried
                session.rollback()
                for c in claimed:
                    if c.id in known:  # taken in the ledger (all of them once their keys were read)
                        ledger.release(known[c.id], c.id, False)
            if not claimed:
                time.sleep(0.005)


@pytest.mark.slow
def test_appliers_racing_late_arrivals_apply_each_key_once_in_order(app: Flask) -> None:
    rng = random.Random(14)
    key_names = [f"user:k{i}" for i in range(8)] + [None]
    with app.app_context():
        session = db.session()
        session.execute(delete(T))
        rows = []
        for n in range(160):
            key = rng.choice(key_names)
            rows.append(_row(n, key, rng.choice([None, *range(0, 40)]), revokes=rng.random() < 0.3))
        session.execute(insert(T), rows)
        session.commit()
        stored = {r.id: (r.entity_key or r.event_id, (r.event_created_at or r.received_at, r.id))
                  for r in session.execute(select(T))}
        db.session.remove()
    keys = {i: k for i, (k, _) in stored.items()}
    ledger, stop = Ledger(), threading.Event()
    variants = ["batch"] * 5 + ["revoking_only", "entity_key", "entity_key"]
    threads = [threading.Thread(target=_applier, args=(app, ledger, keys, stop, i, v), daemon=True)
               for i, v in enumerate(variants)]
    for thread in threads:
        thread.start()
    late: dict[int, tuple[str, Any]] = {}
    with app.app_context():
        for n in range(40):  # late arrivals, many older than their key's applied events
            time.sleep(0.01)
            session = db.session()
            key = rng.choice(key_names[:-1])
            row = session.execute(insert(T).values(**_row(n, key, rng.randint(0, 40), revokes=rng.random() < 0.3,
                                                          late=True)).returning(T.c.id)).scalar_one()
            session.commit()
            late[row] = (key, None)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if not db.session.scalar(select(func.count()).select_from(T).where(T.c.status == "received")):
                break
            db.session.rollback()
            time.sleep(0.05)
        db.session.remove()
    stop.set()
    for thread in threads:
        thread.join(10)
    assert not ledger.errors, ledger.errors[:5]
    every = set(stored) | set(late)
    assert {row for row, n in ledger.applications.items() if n == 1} == every, "an event not applied exactly once"
    for key, applied in ledger.applied.items():
        pre = [row for row in applied if row in stored]
        assert pre == sorted(pre, key=lambda row: stored[row][1]), f"{key}: applied out of order: {pre}"
    with app.app_context():
        db.session.execute(delete(T))
        db.session.commit()
        db.session.remove()


@pytest.mark.parametrize("limit", [0, -1, 2**31, 10**12])
def test_a_claim_of_any_limit_takes_at_most_that_many_heads(app: Flask, limit: int) -> None:
    """A batch size past the database's integer, zero or negative (``HATIDATA_INBOX_BATCH`` is read unchecked):
    the claim takes at most *limit* events (none for zero or less) and never fails, on both databases."""
    with app.app_context():
        session = db.session()
        session.execute(delete(T))
        session.execute(insert(T), [_row(n, f"user:{n % 3}", n, revokes=False) for n in range(6)])
        session.commit()
        claimed = claim(session, limit)
        session.rollback()
        session.execute(delete(T))
        session.commit()
        db.session.remove()
    assert len(claimed) == max(0, min(limit, 3))


def test_applying_an_entity_now_stops_at_its_event_when_an_applier_applied_it_first(app: Flask) -> None:
    """The webhook's in-request apply (:func:`inbox_worker.apply_entity_now`) applies a key's pending events up to
    and including the one it was given. When an applier applied that event first (woken by the same ``NOTIFY``),
    the request must not go on to apply the key's later events (up to ten batches in the webhook's request)."""
    from hatidata_auth.causes import Actor, Cause
    from hatidata_auth.services import inbox
    from tests.support.dsync import mirror_all
    from tests.test_inbox_appliers import user_event

    mirror_all(app)
    given, later = user_event("NOW1", 1, state="inactive"), user_event("NOW1", 2)
    key = inbox.entity_key(given)
    with app.app_context():
        client = app.extensions["hatidata_workos"].client
        session = db.session()
        for payload in (given, later):
            assert inbox.store(session, payload) == "received"
        first = inbox_worker.apply_batch(session, client, limit=1, entity_key=key)  # the applier's
        assert [r.event_id for r in first.results] == [given["id"]]
        result = inbox_worker.apply_entity_now(session, client, given["id"], key, cause=Cause.by(Actor.workos()))
        status = session.scalar(select(T.c.status).where(T.c.event_id == later["id"]))
        db.session.remove()
    assert result is None
    assert status == "received", "the request applied an event after the one it was given"
