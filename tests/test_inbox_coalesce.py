"""A run of one directory user's snapshots pending together is applied as its newest (``services.inbox_coalesce``,
issue #14): the state it leaves is the state applying every event in turn leaves, whatever the delivery order,
the batch size and the mix (names, emails, suspensions); every event is settled once; only events that change
nothing deciding access are superseded, and only by a newer event of their own key that was applied."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text

from hatidata_auth.extensions import db
from hatidata_auth.models import AuditEvent, DirectoryUser, Membership, User
from hatidata_auth.services import inbox_coalesce, inbox_worker
from hatidata_auth.services.events.directory_state import directory_user_email
from hatidata_auth.services.inbox import InboxResult
from tests.support.dsync import forget_events, mirror_all
from tests.test_inbox_appliers import _rows, _store, user_event

STATES = ["active", "active", "active", "inactive"]


@pytest.fixture
def synced(app: Flask) -> dict[str, str]:
    return mirror_all(app)


def _history(tag: str, steps: list[tuple[str, int, int]]) -> list[dict[str, Any]]:
    """The events of directory user *tag*, one per step (its state, which of two emails, how many steps its
    object's ``updated_at`` lags behind the event's time: WorkOS's object version need not follow its events'
    order), in event time order. Every other event gives its email as the primary of ``emails`` only (WorkOS's
    older shape, which the handler still reads)."""
    events = []
    for n, (state, email, lag) in enumerate(steps):
        event = user_event(tag, n, state=state, event_id=f"event_{tag}_{n:03d}")
        event["data"]["email"] = f"{tag.lower()}.{email}@acme.test"
        if n % 2:
            event["data"]["emails"] = [{"primary": True, "type": "work", "value": event["data"].pop("email")}]
        event["data"]["first_name"] = f"Name{n}"
        event["data"]["updated_at"] = user_event(tag, max(0, n - lag))["data"]["updated_at"]
        events.append(event)
    return events


def _drain(app: Flask, limit: int, coalesce: bool) -> list[InboxResult]:
    results: list[InboxResult] = []
    with app.app_context():
        client = app.extensions["hatidata_workos"].client
        while (report := inbox_worker.apply_batch(db.session(), client, limit=limit, coalesce=coalesce)).claimed:
            assert len(report.results) == report.claimed == len(report.rows)
            results += report.results
        db.session.remove()
    return results


def _state(app: Flask, tag: str) -> tuple[Any, ...]:
    """What the events of *tag* left, its tag written as ``T``: the directory user and its person's membership."""
    with app.app_context():
        du = db.session.scalar(select(DirectoryUser).where(DirectoryUser.workos_id == f"directory_user_{tag}"))
        assert du is not None
        member = None
        if du.user_id is not None:
            person = db.session.get(User, du.user_id)
            row = db.session.scalar(select(Membership).where(Membership.user_id == du.user_id,
                                                             Membership.organization_id == du.organization_id))
            member = (person.email if person else None, row.status if row else None, row.role if row else None)
        state = (du.email, du.first_name, du.last_name, du.state, du.version_at, du.deleted_at, member)
        db.session.remove()
    return tuple(str(v).replace(tag.lower(), "t").replace(tag, "T") if v is not None else None for v in state)


step = st.tuples(st.sampled_from(STATES), st.integers(0, 1), st.sampled_from([0, 0, 0, 1, 2]))


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_runs_leave_the_state_applying_each_event_leaves(app: Flask, synced: dict[str, str],
                                                         data: st.DataObject) -> None:
    users = data.draw(st.lists(st.lists(step, min_size=1, max_size=7), min_size=1, max_size=3))
    order = data.draw(st.randoms(use_true_random=False))
    limit = data.draw(st.integers(1, 5))
    pairs = [(f"K{uuid.uuid4().hex[:8].upper()}", f"E{uuid.uuid4().hex[:8].upper()}") for _ in users]
    histories = {tag: _history(tag, steps) for (a, b), steps in zip(pairs, users, strict=True) for tag in (a, b)}
    everything = [e["id"] for events in histories.values() for e in events]
    try:
        for coalesce, tags in ((True, [a for a, _ in pairs]), (False, [b for _, b in pairs])):
            delivery = [e for tag in tags for e in histories[tag]]
            order.shuffle(delivery)
            _store(app, delivery)
            results = _drain(app, limit, coalesce)
            assert sorted(r.event_id for r in results) == sorted(e["id"] for e in delivery)  # each settled once
            assert {r.status for r in results} == {"applied"}
        rows = _rows(app, everything)
    finally:
        forget_events(app, everything)
    for a, b in pairs:
        assert _state(app, a) == _state(app, b)
    for a, _b in pairs:
        events = histories[a]
        place = {e["id"]: n for n, e in enumerate(events)}
        for e in events:
            note = rows[e["id"]].last_error
            if note is None:
                continue
            newer = note.removeprefix("superseded by ")
            assert place.get(newer, -1) > place[e["id"]], note  # by a newer event of its own key
            assert (rows[newer].status, rows[newer].last_error) == ("applied", None)
            assert all(directory_user_email(between["data"]) == directory_user_email(e["data"])  # nothing deciding
                       # access in between
                       and between["data"]["state"] == "active"
                       for between in events[place[e["id"]]:place[newer] + 1])


def test_a_run_ends_at_a_suspension_and_at_an_email_move(app: Flask, synced: dict[str, str]) -> None:
    tag = f"R{uuid.uuid4().hex[:8].upper()}"
    events = _history(tag, [("active", 0, 0), ("active", 0, 0), ("active", 0, 0), ("inactive", 0, 0),
                            ("active", 0, 0), ("active", 0, 0), ("active", 1, 0), ("active", 1, 0)])
    _store(app, list(reversed(events)))
    results = _drain(app, 5, True)
    notes = {r.event_id: r.note for r in results}
    ids = [e["id"] for e in events]
    assert [notes[i] for i in ids] == [f"superseded by {ids[2]}", f"superseded by {ids[2]}", None, None,
                                       f"superseded by {ids[5]}", None, f"superseded by {ids[7]}", None]
    assert _state(app, tag)[:4] == ("t.1@acme.test", "Name7", "7", "active")


def test_a_run_ends_before_an_older_version(app: Flask, synced: dict[str, str]) -> None:
    """The third event's object is older than the second's (its ``updated_at`` lags two steps): applied in turn it
    is stale, so the run ends before it and the second event's state is the one left."""
    tag = f"V{uuid.uuid4().hex[:8].upper()}"
    events = _history(tag, [("active", 0, 0), ("active", 0, 0), ("active", 0, 2)])
    _store(app, events)
    results = _drain(app, 5, True)
    ids = [e["id"] for e in events]
    assert [{r.event_id: r.note for r in results}[i] for i in ids] == [f"superseded by {ids[1]}", None, None]
    assert _state(app, tag)[1:3] == ("Name1", "1")


@pytest.mark.postgres
def test_when_the_newest_fails_nothing_is_superseded_and_the_rest_applies_in_turn(
        app: Flask, synced: dict[str, str]) -> None:
    """PostgreSQL refuses a first name longer than its column (SQLite stores it): the newest of the run fails. The
    head, back in the queue, was tried once: it is applied alone, and the events between make a run of their own."""
    tag = f"F{uuid.uuid4().hex[:8].upper()}"
    events = _history(tag, [("active", 0, 0)] * 4)
    events[3]["data"]["first_name"] = "x" * 300
    _store(app, events)
    results = _drain(app, 5, True)
    by_id = {r.event_id: r for r in results}
    ids = [e["id"] for e in events]
    assert by_id[ids[3]].status == "failed"
    assert [(by_id[i].status, by_id[i].note) for i in ids[:3]] == [
        ("applied", None), ("applied", f"superseded by {ids[2]}"), ("applied", None)]
    assert _state(app, tag)[1] == "Name2"
    assert [r.attempts for r in map(_rows(app, ids).__getitem__, ids)] == [2, 1, 1, 1]  # the superseded one never tried


def test_no_run_for_a_head_tried_before_or_without_followers(app: Flask, synced: dict[str, str]) -> None:
    tag = f"N{uuid.uuid4().hex[:8].upper()}"
    events = _history(tag, [("active", 0, 0)] * 2)
    _store(app, events)
    with app.app_context():
        claimed = inbox_worker.claim(db.session(), 5)
        (head,) = [c for c in claimed if c.event_id == events[0]["id"]]
        assert set(inbox_coalesce.runs(db.session(), [head])) == {head.id}
        tried = inbox_worker.Claimed(head.id, head.event_id, head.event_type, head.payload, 2, head.source)
        assert inbox_coalesce.runs(db.session(), [tried]) == {}
        db.session.rollback()
        db.session.remove()
    _drain(app, 5, True)


@pytest.mark.postgres
def test_a_head_with_nothing_behind_it_reads_no_run(app: Flask, synced: dict[str, str]) -> None:
    """The claim says which heads had an event of their key pending behind them (``Claimed.followed``, probed in
    the claim's own statement); for a batch with no backlog, runs cost no statement."""
    alone, followed = (f"{c}{uuid.uuid4().hex[:8].upper()}" for c in "AF")
    events = {tag: _history(tag, [("active", 0, 0)] * n) for tag, n in ((alone, 1), (followed, 2))}
    _store(app, [*events[alone], *events[followed]])
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    with app.app_context():
        s = db.session()
        heads = {c.event_id: c for c in inbox_worker.claim(s, 5)}
        first = {tag: heads[history[0]["id"]] for tag, history in events.items()}
        assert (first[alone].followed, first[followed].followed) == (False, True)
        sqlalchemy.event.listen(db.engine, "before_cursor_execute", record)
        try:
            assert inbox_coalesce.runs(s, [first[alone]]) == {}
            assert not statements
            assert set(inbox_coalesce.runs(s, list(first.values()))) == {first[followed].id}
        finally:
            sqlalchemy.event.remove(db.engine, "before_cursor_execute", record)
        s.rollback()
        db.session.remove()
    _drain(app, 5, True)


@pytest.mark.postgres
def test_the_claims_followed_probe_is_an_index_probe_when_random_reads_are_dear(
        app: Flask, synced: dict[str, str]) -> None:
    """helper-148: probed with ``LIMIT 1`` alone, ``followed`` was planned, with random reads made dear, as a
    sequential scan expected to stop early; for a head with nothing behind it none does, so each claimed head read
    the whole inbox (5 heads, 5,000 later events: 25,025 rows). Ordered as the pending-key index, it probes it:
    the claim's own statement, explained as it ran."""
    tag = f"P{uuid.uuid4().hex[:8].upper()}"
    heads = [event for n in range(5) for event in _history(f"{tag}{n}", [("active", 0, 0)])]
    _store(app, heads)
    updates: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if statement.startswith("UPDATE webhook_events"):
            updates.append((statement, parameters))

    with app.app_context():
        s = db.session()
        s.execute(text("INSERT INTO webhook_events (event_id, event_type, payload, received_at, event_created_at,"
                       " status, source, attempts, revokes, created_at, updated_at, entity_key)"
                       " SELECT 'later_' || :tag || g, 'dsync.user.updated', '{}', now(), '2999-01-01', 'received',"
                       " 'webhook', 0, false, now(), now(), :tag || (g % 1000) FROM generate_series(1, 5000) AS g"),
                  {"tag": tag})  # other keys' backlog, after the heads in claim order
        s.execute(text("ANALYZE webhook_events"))
        s.execute(text("SET LOCAL random_page_cost = 40"))
        sqlalchemy.event.listen(db.engine, "before_cursor_execute", record)
        try:
            claimed = inbox_worker.claim(s, len(heads))
        finally:
            sqlalchemy.event.remove(db.engine, "before_cursor_execute", record)
        assert {(c.event_id, c.followed) for c in claimed} == {(e["id"], False) for e in heads}
        ((statement, parameters),) = updates
        plan = s.connection().exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}", parameters).scalar()
        s.rollback()
        db.session.remove()

    def nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
        return [node, *(n for child in node.get("Plans", []) for n in nodes(child))]

    (probe,) = [n for n in nodes(plan[0]["Plan"]) if n.get("Alias") == "other_of_key"]
    assert probe["Node Type"] in {"Index Scan", "Index Only Scan"}
    assert probe["Index Name"] == "ix_webhook_events_pending_key"


def _actions(app: Flask, event_ids: list[str]) -> list[tuple[int, str]]:
    """(event index, action) of every audit row the events caused, sorted."""
    place = {e: n for n, e in enumerate(event_ids)}
    with app.app_context():
        rows = db.session.execute(select(AuditEvent.source_event_id, AuditEvent.action)
                                  .where(AuditEvent.source_event_id.in_(event_ids))).all()
        db.session.remove()
    return sorted((place[str(e)], a) for e, a in rows)


@pytest.mark.parametrize("shape", ["email", "emails"])
def test_an_email_move_onto_another_organizations_domain_is_applied_in_its_turn(
        app: Flask, synced: dict[str, str], shape: str) -> None:
    """helper-146: the run compared ``data.email`` only, the handler reads the primary of ``emails`` without it, so
    a move onto a domain Globex verified, given as ``emails``, was superseded: no refusal, no deprovisioning."""
    tag = f"M{uuid.uuid4().hex[:8].upper()}"

    def event(n: int, domain: str) -> dict[str, Any]:
        payload = user_event(tag, n, event_id=f"event_{tag}_{n:03d}")
        address = f"{tag.lower()}@{domain}"
        payload["data"].update({"email": address} if shape == "email" else
                               {"email": None, "emails": [{"primary": True, "type": "work", "value": address}]})
        return payload

    first = event(0, "acme.test")
    _store(app, [first])
    _drain(app, 5, False)  # linked and active
    burst = [event(1, "acme.test"), event(2, "globex.test"), event(3, "acme.test")]
    _store(app, burst)
    results = _drain(app, 5, True)
    ids = [e["id"] for e in (first, *burst)]
    assert [{r.event_id: r.note for r in results}.get(i) for i in ids[1:]] == [None, None, None]
    assert (2, "directory_user.link_refused") in _actions(app, ids)


@pytest.mark.parametrize("updated_at", ["yesterday", 1700000000])
@pytest.mark.parametrize("revoking_only", [False, True])
def test_a_version_that_does_not_parse_fails_its_event_alone(
        app: Flask, synced: dict[str, str], updated_at: Any, revoking_only: bool) -> None:
    """helper-146: a malformed ``data.updated_at`` (not checked at intake) raised in the run's reading, outside any
    event's savepoint: every batch claiming it, the deprovisioning thread's included, rolled back. It fails its
    event alone, as without runs, and the user's suspension behind it is applied."""
    tag = f"B{uuid.uuid4().hex[:8].upper()}"
    bad = user_event(tag, 0, event_id=f"event_{tag}_000")
    bad["data"]["updated_at"] = updated_at
    suspended = user_event(tag, 1, state="inactive", event_id=f"event_{tag}_001")
    _store(app, [bad, suspended])
    with app.app_context():
        client = app.extensions["hatidata_workos"].client
        statuses = {}
        while (report := inbox_worker.apply_batch(db.session(), client, limit=5,
                                                  revoking_only=revoking_only)).claimed:
            statuses.update((r.event_id, r.status) for r in report.results)
        db.session.remove()
    assert statuses == {bad["id"]: "failed", suspended["id"]: "applied"}


@pytest.mark.postgres
def test_a_run_reads_at_most_a_run_of_its_keys_backlog(app: Flask, synced: dict[str, str]) -> None:
    """helper-147: ranking every pending event of the head's key read a user's whole backlog (1,500 rows) for each
    batch, which drains such a key one event at a time when its runs are short: quadratic. Read per head in the
    pending-key index's order, with sorts off, it stops at a run's worth whatever the backlog (here 3 runs' worth),
    also with ``random_page_cost`` raised (as under the statistics of one CI run), where the planner otherwise
    read the whole backlog by a sequential scan and sorted it. Counted: the entries read from the pending-key
    index, none in that plan."""
    tag = f"L{uuid.uuid4().hex[:8].upper()}"
    backlog = 3 * (inbox_coalesce.RUN_MAX + 1)
    events = _history(tag, [("active", n % 2, 0) for n in range(backlog)])  # each run ends at the next email
    _store(app, events)
    read = text("SELECT pg_stat_get_xact_tuples_returned('ix_webhook_events_pending_key'::regclass)")
    with app.app_context():
        s = db.session()
        s.execute(text("ANALYZE webhook_events"))
        s.execute(text("SET LOCAL random_page_cost = 40"))
        (head,) = [c for c in inbox_worker.claim(s, 5) if c.event_id == events[0]["id"]]
        before = s.scalar(read)
        assert inbox_coalesce.runs(s, [head]) == {}  # the next event moves the email back
        entries = s.scalar(read) - before
        assert s.scalar(text("SELECT current_setting('enable_sort')")) == "on"  # put back for the rest of the batch
        s.rollback()
        db.session.remove()
    assert 0 < entries <= inbox_coalesce.RUN_MAX + 3  # a run, the head and the row the window reads ahead
    _drain(app, 50, True)
