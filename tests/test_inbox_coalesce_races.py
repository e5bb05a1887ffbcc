"""Runs of snapshots (``services.inbox_coalesce``) under concurrency, on PostgreSQL (helper-147's runs, kept): two
appliers and a storer at once settle each event once, in order, each user at its newest state; the deprovisioning
thread and a webhook request's own deprovisioning (``apply_entity_now``) racing a batch that holds a run find the
key held, and apply the suspension behind the run right after it, never inside it."""

from __future__ import annotations

import random
import threading
import time
import uuid
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from hatidata_auth.causes import Actor, Cause
from hatidata_auth.extensions import db
from hatidata_auth.models import DirectoryUser, WebhookEvent
from hatidata_auth.services import inbox, inbox_coalesce, inbox_worker
from hatidata_auth.services.inbox import entity_key
from tests.support.dsync import audit_by_event, mirror_all
from tests.test_inbox_appliers import _rows, user_event

pytestmark = pytest.mark.postgres


def _du(app: Flask, tag: str) -> tuple[Any, ...]:
    with app.app_context():
        du = db.session.scalar(select(DirectoryUser).where(DirectoryUser.workos_id == f"directory_user_{tag}"))
        out = (du.state, du.last_name) if du is not None else None
        db.session.remove()
    return out


def _store_slowly(app: Flask, events: list[dict[str, Any]], errors: list[BaseException],
                  storing: threading.Event) -> None:
    """Store *events* one every 5 ms, then clear *storing*; an error goes to *errors*."""
    try:
        with app.app_context():
            for e in events:
                inbox.store(db.session(), e)
                time.sleep(0.005)
            db.session.remove()
    except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which fails the test with it
        errors.append(exc)
    finally:
        storing.clear()


def test_two_appliers_and_a_storer_settle_each_event_once(app: Flask) -> None:
    mirror_all(app)
    users = [f"S{i}{uuid.uuid4().hex[:6].upper()}" for i in range(5)]
    history = [user_event(u, n) for n in range(10) for u in users]
    first, later = history[:15], history[15:]
    random.Random(7).shuffle(later)
    with app.app_context():
        for e in first:
            inbox.store(db.session(), e)
        db.session.remove()
    seen: list[list[str]] = [[], []]
    errors: list[BaseException] = []
    storing = threading.Event()
    storing.set()

    def applier(i: int) -> None:
        try:
            with app.app_context():
                client = app.extensions["hatidata_workos"].client
                while True:
                    report = inbox_worker.apply_batch(db.session(), client, limit=2)
                    seen[i] += [r.event_id for r in report.results if r.status != "received"]
                    if not report.claimed and not storing.is_set() and not inbox_worker.pending(db.session()):
                        break
                    if not report.claimed:
                        time.sleep(0.01)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which fails the test with it
            errors.append(exc)

    threads = [threading.Thread(target=applier, args=(i,)) for i in range(2)]
    threads.append(threading.Thread(target=_store_slowly, args=(app, later, errors, storing)))
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert not errors, errors
    everything = seen[0] + seen[1]
    assert sorted(everything) == sorted(e["id"] for e in history)  # each settled once, none skipped
    rows = _rows(app, everything)
    assert {r.status for r in rows.values()} == {"applied"}
    _superseded_by_newer_of_their_own(rows, history)
    assert max(audit_by_event(app).values()) == 1
    for u in users:
        assert _du(app, u) == ("active", "9")


def _superseded_by_newer_of_their_own(rows: dict[str, WebhookEvent], history: list[dict[str, Any]]) -> None:
    by_id = {e["id"]: e for e in history}
    for r in rows.values():
        if r.last_error and r.last_error.startswith("superseded by "):
            newer = r.last_error.removeprefix("superseded by ")
            assert by_id[newer]["data"]["id"] == by_id[r.event_id]["data"]["id"]
            assert by_id[newer]["created_at"] > by_id[r.event_id]["created_at"]
            assert rows[newer].last_error is None


def _hold_runs(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """Pause the batch of the thread named 'held' once its runs are read and locked (our own seam, not WorkOS's
    SDK): *found* is set then, and the batch goes on once *go* is."""
    found, go = threading.Event(), threading.Event()
    real = inbox_coalesce.runs

    def runs(session: Any, heads: Any) -> Any:
        out = real(session, heads)
        if threading.current_thread().name == "held":
            found.set()
            assert go.wait(30)
        return out

    monkeypatch.setattr(inbox_coalesce, "runs", runs)
    return found, go


def _batch_held_in_its_run(app: Flask, monkeypatch: pytest.MonkeyPatch, events: list[dict[str, Any]],
                           ) -> tuple[threading.Thread, threading.Event, dict[str, Any]]:
    """The user of *events* stored and applied as of its first event, the rest stored; a batch started in a thread
    and held once its run is locked. Returns the thread, the event that lets it go on, and the dict that receives
    its report under ``"batch"``."""
    with app.app_context():
        inbox.store(db.session(), events[0])
        inbox_worker.drain(db.session(), app.extensions["hatidata_workos"].client)
        for e in events[1:]:
            inbox.store(db.session(), e)
        db.session.remove()
    found, go = _hold_runs(monkeypatch)
    out: dict[str, Any] = {}

    def batch() -> None:
        with app.app_context():
            out["batch"] = inbox_worker.apply_batch(db.session(), app.extensions["hatidata_workos"].client)
            db.session.remove()

    held = threading.Thread(target=batch, name="held")
    held.start()
    assert found.wait(30)
    return held, go, out


def test_revoking_thread_racing_a_run_never_delays_or_loses_the_suspension(
        app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror_all(app)
    tag = f"V{uuid.uuid4().hex[:8].upper()}"
    events = [user_event(tag, 0), user_event(tag, 1), user_event(tag, 2), user_event(tag, 3, state="suspended")]
    held, go, out = _batch_held_in_its_run(app, monkeypatch, events)
    with app.app_context():  # the deprovisioning thread meanwhile: the key is held
        out["revoking"] = inbox_worker.apply_batch(db.session(), app.extensions["hatidata_workos"].client,
                                                   revoking_only=True)
        go.set()
        held.join(30)
        out["revoking2"] = inbox_worker.apply_batch(db.session(), app.extensions["hatidata_workos"].client,
                                                    revoking_only=True)
        db.session.remove()
    assert out["revoking"].claimed == 0
    assert [r.event_id for r in out["batch"].results] == [e["id"] for e in events[1:3]]
    assert [(r.event_id, r.status) for r in out["revoking2"].results] == [(events[3]["id"], "applied")]
    assert _du(app, tag) == ("suspended", "3")


def test_apply_entity_now_racing_a_batch_that_holds_a_run(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror_all(app)
    tag = f"N{uuid.uuid4().hex[:8].upper()}"
    events = [user_event(tag, 0), user_event(tag, 1), user_event(tag, 2)]
    late = user_event(tag, 3, state="suspended")
    held, go, out = _batch_held_in_its_run(app, monkeypatch, events)
    with app.app_context():  # the webhook request of the suspension, stored and applied now
        inbox.store(db.session(), late)
        out["now"] = inbox_worker.apply_entity_now(db.session(), app.extensions["hatidata_workos"].client,
                                                   late["id"], entity_key(late), cause=Cause.by(Actor.workos()))
        go.set()
        held.join(30)
        out["after"] = inbox_worker.apply_entity_now(db.session(), app.extensions["hatidata_workos"].client,
                                                     late["id"], entity_key(late), cause=Cause.by(Actor.workos()))
        db.session.remove()
    assert out["now"] is None
    assert out["after"] is not None
    assert out["after"].status == "applied"
    assert _du(app, tag) == ("suspended", "3")
    rows = _rows(app, [e["id"] for e in [*events, late]])
    assert [rows[e["id"]].status for e in [*events, late]] == ["applied"] * 4
