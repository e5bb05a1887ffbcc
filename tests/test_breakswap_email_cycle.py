"""Break-it review of the freed-email path under concurrent appliers: directory users of one organization that
swap (X: a->b, Y: b->a) or rotate (a->b->c->a) their emails, each user's event applied by its own applier at the
same moment (``inbox_worker.apply_batch`` in threads, or a real applier pool).

A user whose new email another person holds is refused and waits; the event that frees the email queues a job
under the waiting user's entity key (``services.freed_email_jobs``), applied by the applier of that key: no
transaction waits for another user's key. Before, the freeing transaction took the waiting user's key itself and
synced it inline: a rotation's cascade went around the ring of keys, PostgreSQL aborted one transaction of the
ring, its applier claimed the key again at once and met the survivor's cascade again (a livelock: "not applied
within 60s", 65 deadlocks in one run). Asserted per phase: the end state (directory users, people, memberships and
roles, inbox statuses, audit trail per event) is what applying the phase's inbox rows (events and jobs) one per
transaction in the order the appliers committed them gives, every event applied exactly once (never failed),
nothing left pending (jobs included), nothing hangs.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event, func, select
from sqlalchemy.exc import OperationalError

from hatidata_auth import inbox_runtime
from hatidata_auth.extensions import db
from hatidata_auth.models import DirectoryUser, User, WebhookEvent
from hatidata_auth.models.inbox import INTERNAL_SOURCE
from hatidata_auth.services import directory_people, inbox, inbox_worker
from hatidata_auth.services.fanout_jobs import JOB_ID_PREFIX
from tests import test_inbox_batch_scope as bs
from tests.test_breakroll_batches import _person_user

ACME = bs.ACME
DOMAIN = "acme.test"
DEADLINE = 60.0  # seconds a phase may take at most: past it, an applier is hung


def _event(user: int, person: int) -> dict[str, Any]:
    return _person_user(ACME, user, person, DOMAIN)  # directory user A<user> with the email p<person>@acme.test


#: (setup: user -> person, applied one at a time; phases: each {user: person}, one event per user, concurrent)
SWAP = ({0: 0, 1: 1}, [{0: 1, 1: 0},  # both refused: each wants the email the other's person holds
                       {0: 7, 1: 8},  # each frees the email the other waits for: the lock cycle
                       {0: 1, 1: 0}])  # both free now: both linked
#: The same with three; the last rotation is refused whole (each wants an email a person still holds).
ROTATE = ({0: 0, 1: 1, 2: 2}, [{0: 1, 1: 2, 2: 0}, {0: 10, 1: 11, 2: 12}, {0: 11, 1: 12, 2: 10}])
#: A swap as an IdP makes one (its emails are unique): X moves aside while Y takes X's email, then X takes Y's.
VIA_TEMPORARY = ({0: 0, 1: 1}, [{0: 9, 1: 0}, {0: 1}])


Step = tuple[str, bool]
"""One transaction of a concurrent run: the entity key it claimed the head of, and whether it may be absent from the
one-at-a-time replay: a job that was ignored because its user no longer had the freed email. Two transactions
freeing emails at once may each read the other's user as still waiting (neither committed yet) and queue a job
for it, which then finds the user moved on; one at a time, the later one sees the user moved and queues none."""


class Tally:
    """What the appliers met: deadlocks rolled back, empty claims (a key held by another applier, or nothing of its
    own pending while the others work), the WorkOS events and the jobs applied, and the order of the transactions
    that claimed a row (``(ticket, entity key)``, the ticket taken in the transaction's ``before_commit``: a
    transaction that waited for another's lock commits after it, so it draws a later ticket)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.deadlocks = 0
        self.empty = 0
        self.applied: list[str] = []
        self.jobs: list[str] = []
        self.errors: list[str] = []
        self.tickets = itertools.count()
        self.commits: list[tuple[int, Step]] = []

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)

    def order(self, since: int) -> list[Step]:
        """The transactions recorded from the *since*-th on, in commit order."""
        with self.lock:
            return [key for _, key in sorted(self.commits[since:])]


def _is_deadlock(exc: OperationalError) -> bool:
    return type(exc.orig).__name__ == "DeadlockDetected"


def _applier(app: Flask, key: str, start: threading.Barrier, delay: float, tally: Tally) -> None:
    """Apply the rows of *key* one per transaction (the user's event, then the jobs queued for it) until nothing is
    pending in the inbox at all (another applier's event may still queue a job on this key)."""
    client = app.extensions["hatidata_workos"].client
    start.wait(10)
    time.sleep(delay)
    stop = time.monotonic() + DEADLINE
    local = threading.local()

    def ticket(_session: Any) -> None:  # the last one drawn is the outermost commit's (savepoints draw first)
        with tally.lock:
            local.ticket = next(tally.tickets)

    with app.app_context():
        session = db.session()
        event.listen(session, "before_commit", ticket)
        try:
            while time.monotonic() < stop:
                try:
                    report = inbox_worker.apply_batch(session, client, limit=1, entity_key=key)
                except OperationalError as exc:
                    if not _is_deadlock(exc):
                        raise
                    tally.add(deadlocks=1)  # rolled back whole, as the pool does: claim it again
                    continue
                if report.claimed:
                    with tally.lock:
                        spurious = all(r.event_id.startswith(JOB_ID_PREFIX) and r.status == "ignored"
                                       for r in report.results)
                        tally.commits.append((local.ticket, (key, spurious)))
                        for r in report.results:
                            assert r.status in ("applied", "ignored"), r
                            (tally.jobs if r.event_id.startswith(JOB_ID_PREFIX) else tally.applied).append(
                                r.event_id)
                    continue
                if not inbox_worker.pending(session):
                    return
                tally.add(empty=1)  # the key is held by another applier, or the others still work: wait
                time.sleep(0.005)
            tally.errors.append(f"{key}: not applied within {DEADLINE}s")
        except Exception as exc:  # noqa: BLE001 - reported by the test
            tally.errors.append(f"{key}: {exc!r}")
        finally:
            event.remove(session, "before_commit", ticket)
            db.session.remove()


def _concurrently(app: Flask, events: list[dict[str, Any]], rng: random.Random, tally: Tally) -> list[Step]:
    """Store *events*, apply them (and the jobs they queue) with an applier per entity key at once; the
    transactions in commit order."""
    since = len(tally.commits)
    with app.app_context():
        for payload in events:
            inbox.store(db.session(), payload)
        db.session.commit()
        db.session.remove()
    start = threading.Barrier(len(events))
    threads = [threading.Thread(target=_applier, daemon=True,
                                args=(app, inbox.entity_key(e), start, rng.choice((0, 0, 0.001, 0.005, 0.02)),
                                      tally)) for e in events]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE + 15)
    assert not any(t.is_alive() for t in threads), "an applier hung"
    assert not tally.errors, tally.errors
    return tally.order(since)


def _events(scenario: tuple[dict[int, int], list[dict[int, int]]]) -> tuple[list[dict[str, Any]],
                                                                          list[list[dict[str, Any]]]]:
    setup, phases = scenario
    return [_event(u, p) for u, p in setup.items()], [[_event(u, p) for u, p in phase.items()] for phase in phases]


Phase = tuple[list[dict[str, Any]], list[Step] | None]
"""A phase's events, stored together, and its transactions in order (``None``: one row each in claim order)."""


def _one_at_a_time(app: Flask, setup: list[dict[str, Any]], history: list[Phase]) -> dict[str, Any] | None:
    """*setup* one event per transaction, then each phase of *history*: its events stored, then one inbox row per
    transaction (a WorkOS event or a job it queued), the head of each step's key in turn (or the heads in claim
    order); the state after, or ``None`` when the order does not fit (a key with nothing to claim, unless the step
    may be absent, or rows left pending)."""
    bs._prepare(app)
    bs._apply(app, [[e] for e in setup], 1)
    client = app.extensions["hatidata_workos"].client
    for events, order in history:
        with app.app_context():
            for payload in events:
                inbox.store(db.session(), payload)
            if order is None:
                inbox_worker.drain(db.session(), client, limit=1)
            for key, may_be_absent in order or ():
                claimed = inbox_worker.apply_batch(db.session(), client, limit=1, entity_key=key).claimed
                if not claimed and not may_be_absent:
                    db.session.remove()
                    return None
            left = inbox_worker.pending(db.session())
            db.session.remove()
        if left:
            return None
    return _checked_state(app)


def _checked_state(app: Flask) -> dict[str, Any]:
    state = bs._state(app)
    assert {s for s, _ in state["inbox"].values()} <= {"applied"}, state["inbox"]
    with app.app_context():
        s = db.session()
        emails = list(s.scalars(select(User.email)))
        assert len(emails) == len(set(emails)), f"two people share an email: {sorted(emails)}"
        assert s.scalar(select(func.count()).select_from(WebhookEvent).where(WebhookEvent.attempts != 1)) == 0
        jobs = set(s.scalars(select(WebhookEvent.status).where(WebhookEvent.source == INTERNAL_SOURCE)))
        assert jobs <= {"applied", "ignored"}, jobs  # every job applied, none pending or failed
        db.session.remove()
    return state


def _orders(order: list[Step]) -> list[list[Step]]:
    """The commit order recorded, then the same with two neighbours swapped (two commits at the same moment may
    have drawn their tickets the other way round; they touched nothing of each other's, or one would have
    waited)."""
    swapped = [[*order[:i], order[i + 1], order[i], *order[i + 2:]] for i in range(len(order) - 1)
               if order[i] != order[i + 1]]
    return [order, *swapped]


def _play(app: Flask, scenario: tuple[dict[int, int], list[dict[int, int]]], seed: int, tally: Tally) -> dict[str, Any]:
    """Apply *scenario*'s phases concurrently, each checked against one row per transaction in the order the
    appliers committed them; the final state."""
    setup, phases = _events(scenario)
    rng = random.Random(seed)
    bs._prepare(app)
    bs._apply(app, [[e] for e in setup], 1)
    history: list[Phase] = []  # the phases so far, each with the order that explains the concurrent run
    state: dict[str, Any] = {}
    for events in phases:
        before = len(tally.applied)
        order = _concurrently(app, events, rng, tally)
        assert sorted(tally.applied[before:]) == sorted(e["id"] for e in events)  # each applied exactly once
        state = _checked_state(app)
        # The last order tried is the one that explains the run: the database is left as the concurrent run left it.
        explained = next((o for o in _orders(order) if _one_at_a_time(app, setup, [*history, (events, o)]) == state),
                         None)
        assert explained is not None, ([e["data"]["email"] for e in events], order, state)
        history.append((events, explained))
    return state


def _links(state: dict[str, Any]) -> dict[str, tuple[str | None, str | None]]:
    """Directory user -> (its email, its person's email)."""
    return {du: (email, person) for (_, du), (email, _st, _del, person) in state["directory_users"].items()}


def _active(state: dict[str, Any]) -> dict[str, tuple[str, str | None]]:
    """Directory user -> (its person's email, role) of each active membership."""
    return {m[5]: (m[1], m[2]) for m in state["memberships"] if m[3] == "active"}


def _expect(state: dict[str, Any], linked: dict[int, int], refused: set[int]) -> None:
    links, active = _links(state), _active(state)
    for user, person in linked.items():
        du = f"directory_user_A{user}"
        assert links[du] == (f"p{person}@{DOMAIN}",) * 2, links
        assert active[du] == (f"p{person}@{DOMAIN}", "viewer"), active
    for user in refused:
        assert f"directory_user_A{user}" not in active, active


@pytest.mark.postgres
@pytest.mark.parametrize("scenario", [SWAP, ROTATE, VIA_TEMPORARY], ids=["swap", "rotate", "via_temporary"])
def test_swapped_and_rotated_emails_applied_concurrently_end_as_one_at_a_time(app: Flask, scenario: Any) -> None:
    tally = Tally()
    rounds = 4
    for seed in range(rounds):
        final = _play(app, scenario, seed, tally)
        users = len(scenario[0])
        if scenario is not ROTATE:
            _expect(final, {0: 1, 1: 0}, set())  # swapped
        else:
            _expect(final, {}, set(range(users)))
    print(f"{rounds} rounds: {tally.deadlocks} deadlocks rolled back and retried, {tally.empty} empty claims, "
          f"{len(tally.jobs)} freed-email jobs applied")


def test_swapped_and_rotated_emails_one_applier_end_as_one_at_a_time(app: Flask) -> None:
    """The same histories through one applier (SQLite's case): a phase in one batch (the jobs it queued in the next
    ones) ends as its rows applied one per transaction in claim order."""
    for scenario in (SWAP, ROTATE, VIA_TEMPORARY):
        setup, phases = _events(scenario)
        expected = _one_at_a_time(app, setup, [(phase, None) for phase in phases])
        assert expected is not None
        bs._prepare(app)
        bs._apply(app, [setup, *phases], 20)  # a phase's events in one batch
        assert _checked_state(app) == expected


@pytest.mark.postgres
def test_a_user_refused_while_its_email_is_being_freed_is_linked_when_the_freeing_commits(app: Flask,
                                                                                         monkeypatch: Any) -> None:
    """The crossing, forced: X (p0) moves to p9 and looks for the users waiting for p0 before Y's move to p0
    commits; Y's event reads p0 as still held (X's move not committed yet). Y must end linked to p0 either way."""
    setup, (moves, _) = _events(VIA_TEMPORARY)
    bs._prepare(app)
    bs._apply(app, [[e] for e in setup], 1)
    frees, takes = moves  # X -> p9, Y -> p0
    with app.app_context():
        for payload in moves:
            inbox.store(db.session(), payload)
        db.session.commit()
        db.session.remove()
    tally, original, others = Tally(), directory_people.waiting_for, []

    def then_the_other(ctx: Any, org: Any, du: Any, email: str) -> list[DirectoryUser]:
        found = original(ctx, org, du, email)
        start = threading.Barrier(1)
        other = threading.Thread(target=_applier, args=(app, inbox.entity_key(takes), start, 0, tally), daemon=True)
        other.start()
        other.join(1.5)  # it runs to its commit, or waits for this transaction's
        others.append(other)
        return found

    monkeypatch.setattr(directory_people, "waiting_for", then_the_other)
    with app.app_context():
        report = inbox_worker.apply_batch(db.session(), app.extensions["hatidata_workos"].client, limit=1,
                                          entity_key=inbox.entity_key(frees))
        db.session.remove()
    assert [r.status for r in report.results] == ["applied"]
    others[0].join(DEADLINE)
    assert not others[0].is_alive()
    assert not tally.errors, tally.errors
    assert tally.applied == [takes["id"]]
    _expect(_checked_state(app), {0: 9, 1: 0}, set())


@pytest.mark.postgres
def test_a_real_pool_resolves_the_cycle_by_retrying_the_batch(app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    """Two applier threads of a pool, one event a batch: each phase of the swap and the rotation is applied whole,
    none failed, each once; a deadlock costs a logged batch failure and a retry after the poll interval."""
    app.config.update(HATIDATA_INBOX_BATCH=1, HATIDATA_INBOX_POLL_INTERVAL=0.05, HATIDATA_INBOX_LINGER=0)
    deadlocks = 0
    for scenario, final in ((SWAP, ({0: 1, 1: 0}, set())), (ROTATE, ({}, {0, 1, 2}))):
        setup, phases = _events(scenario)
        bs._prepare(app)
        bs._apply(app, [[e] for e in setup], 1)
        pool = inbox_runtime.make_pool(app, 2)
        pool.start()
        try:
            for events in phases:
                with app.app_context():
                    for payload in events:
                        inbox.store(db.session(), payload)
                    db.session.commit()
                    stop = time.monotonic() + DEADLINE
                    while inbox_worker.pending(db.session()) and time.monotonic() < stop:
                        pool.wake()
                        time.sleep(0.02)
                    assert not inbox_worker.pending(db.session()), "the pool hung"
                    db.session.remove()
                _checked_state(app)
        finally:
            pool.stop()
        _expect(_checked_state(app), *final)
        deadlocks += sum("deadlock detected" in r.getMessage() or "DeadlockDetected" in (r.exc_text or "")
                         for r in caplog.records)
        caplog.clear()
    print(f"pool: {deadlocks} batches rolled back by a deadlock")


@pytest.mark.postgres
def test_an_emails_lock_never_shares_a_lock_with_an_entity_key(app: Flask) -> None:
    """An event's entity key can read ``email:<address>`` (an unknown type ``email.*``): its one-key advisory lock
    and the email's two-key lock are apart, and the email's lock is one lock whatever transaction asks for it."""
    from sqlalchemy import text

    from hatidata_auth.services.person_email import EMAIL_LOCK

    with app.app_context():
        engine = db.engine
    with engine.connect() as first, engine.connect() as second:
        first.execute(EMAIL_LOCK, {"email": "swap@acme.test"})
        key = second.execute(text("SELECT pg_try_advisory_xact_lock(hashtextextended('email:swap@acme.test', 0))"))
        assert key.scalar() is True
        again = second.execute(text("SELECT pg_try_advisory_xact_lock(1162693632, hashtext('swap@acme.test'))"))
        assert again.scalar() is False  # held by the first transaction
        first.rollback()
        second.rollback()
