"""Break-it of the linger (``services.applier_pool.Linger``) in the real pipeline: a backlog behind one entity key
(claimed one event at a time) while other events trickle in. Every linger then "pays" (1 event of the key plus
those that arrived meanwhile, against 1 before it), so back-off never held: the key drained at one event per
linger (200 events: 10.4 s against 3.2 s without a linger). The key's backlog is what bounds its drain, whatever
the wait, so an applier does not linger while events wait behind the head of their key."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from hatidata_auth import inbox_runtime
from hatidata_auth.extensions import db
from hatidata_auth.models import WebhookEvent
from hatidata_auth.services import inbox, inbox_claim, inbox_worker
from hatidata_auth.services.applier_pool import LINGER_BACKOFF_MAX
from tests.support.dsync import mirror_all
from tests.test_inbox_appliers import user_event

LINGER = 0.3
DEPTH = 30


def _store(app: Flask, events: list[dict[str, Any]]) -> None:
    with app.app_context():
        for payload in events:
            inbox.store(db.session(), payload)
        db.session.remove()


def _waiting(app: Flask, ids: list[str]) -> int:
    with app.app_context():
        n = db.session.scalar(select(func.count()).select_from(WebhookEvent)
                              .where(WebhookEvent.event_id.in_(ids), WebhookEvent.status == "received"))
        db.session.remove()
    return int(n or 0)


@pytest.mark.postgres
def test_a_backlog_behind_one_key_is_not_slowed_by_lingers_while_other_events_trickle_in(
        app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror_all(app)
    hot = f"H{uuid.uuid4().hex[:10].upper()}"
    backlog = [user_event(hot, n) for n in range(DEPTH)]
    _store(app, backlog)
    ids = [e["id"] for e in backlog]
    batches: list[tuple[float, float, int]] = []  # (start, end, claimed) of the batch thread's batches
    run_batch = inbox_runtime.run_batch

    def timed(flask_app: Flask, revoking_only: bool = False) -> int:
        start = time.monotonic()
        claimed = run_batch(flask_app, revoking_only)
        if not revoking_only:
            batches.append((start, time.monotonic(), claimed))
        return claimed

    monkeypatch.setattr(inbox_runtime, "run_batch", timed)
    app.config["HATIDATA_INBOX_LINGER"] = LINGER
    stop = threading.Event()

    def trickle() -> None:  # other users' events, one every 20 ms
        while not stop.is_set():
            _store(app, [user_event(f"T{uuid.uuid4().hex[:10].upper()}", 1)])
            stop.wait(0.02)

    feeder = threading.Thread(target=trickle)
    pool = inbox_runtime.make_pool(app, 1)
    feeder.start()
    pool.start()
    try:
        deadline = time.monotonic() + DEPTH * LINGER + 30
        while _waiting(app, ids) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _waiting(app, ids)
    finally:
        stop.set()
        feeder.join()
        pool.stop()
    lingers = sum(1 for (_, end, claimed), (start, _, _) in itertools.pairwise(batches)
                  if claimed > 0 and start - end >= LINGER - 0.02)
    assert lingers <= 1 + LINGER_BACKOFF_MAX.bit_length() + DEPTH // LINGER_BACKOFF_MAX, (
        f"{lingers} lingers over {len(batches)} batches: {[c for _, _, c in batches]}")


def test_waiting_behind_says_whether_a_batchs_keys_still_hold_pending_events(app: Flask) -> None:
    """Both databases: after each batch, whether the keys it applied still hold pending events (the next batch
    takes them at once: no linger), and not for keys it did not take. Each event applied in turn (no run of
    snapshots applied as its newest: ``inbox_coalesce``), so that a key's backlog outlasts a batch."""
    mirror_all(app)
    hot, other = (f"W{uuid.uuid4().hex[:10].upper()}" for _ in range(2))
    _store(app, [user_event(hot, n) for n in range(3)] + [user_event(other, 0)])
    answers = []
    with app.app_context():
        client = app.extensions["hatidata_workos"].client
        while (report := inbox_worker.apply_batch(db.session(), client, limit=20, coalesce=False)).claimed:
            answers.append((report.claimed, inbox_claim.waiting_behind(db.session(), report.rows)))
            db.session.rollback()
        assert not inbox_claim.waiting_behind(db.session(), [])
        db.session.remove()
    assert answers == [(2, True), (1, True), (1, False)]
