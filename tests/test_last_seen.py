"""Last-seen writes: off the request path, batched, and at most once per interval per session across processes."""

from __future__ import annotations

import itertools
import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text

from hatidata_auth.extensions import db
from hatidata_auth.models import AuthSession
from hatidata_auth.services.credential_status import SessionStatus, load_session_status
from hatidata_auth.services.last_seen import LastSeenWriter
from tests.auth_support import login, sync_organizations

INTERVAL = 60.0


@pytest.fixture
def signed_in(app: Flask, client: FlaskClient) -> FlaskClient:
    sync_organizations(app)
    assert login(client, "admin@acme.test").status_code == 302
    return client


class Clock:
    """A clock the test moves."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _status(app: Flask) -> Any:
    with app.app_context():
        sid = db.session.scalar(select(AuthSession.workos_session_id))
        return load_session_status(db.session(), str(sid), default_cache_ttl=300, active_ttl=86400)


def _stored(app: Flask) -> tuple[datetime | None, datetime]:
    with app.app_context():
        db.session.expire_all()
        row = db.session.execute(select(AuthSession.last_seen_at, AuthSession.expires_at)).one()
        return row[0], row[1]


def _engine(app: Flask) -> Any:
    def engine() -> Any:
        with app.app_context():
            return db.engine

    return engine


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(uses=st.lists(st.tuples(st.integers(min_value=0, max_value=2), st.floats(min_value=0, max_value=150)),
                     min_size=1, max_size=12))
def test_processes_write_a_session_at_most_once_per_interval(app: Flask, signed_in: FlaskClient,
                                                             uses: list[tuple[int, float]]) -> None:
    """Three writers (processes, each throttling only itself) note uses of one session at rising times and flush
    after each: the row changes at most once per interval, and the sliding expiry follows every change."""
    start = _status(app)
    base = max(start.last_seen_at or 0.0, datetime.now(UTC).timestamp()) + INTERVAL
    clocks = [Clock(base) for _ in range(3)]
    writers = [LastSeenWriter(_engine(app), interval=INTERVAL, clock=clock) for clock in clocks]
    status = start._replace(last_seen_at=None)
    written: list[float] = []
    elapsed = 0.0
    for writer_index, step in sorted(uses, key=lambda u: u[1]):
        elapsed = max(elapsed, step)
        for clock in clocks:
            clock.now = base + elapsed
        writer = writers[writer_index]
        if writer.due(status):
            writer.note(status)
        writer.flush()
        seen, expires = _stored(app)
        assert seen is not None
        at = seen.replace(tzinfo=UTC).timestamp() if seen.tzinfo is None else seen.timestamp()
        if not written or at != written[-1]:
            written.append(at)
            assert abs((expires.replace(tzinfo=UTC) if expires.tzinfo is None else expires).timestamp()
                       - (at + start.sliding_ttl)) < 1.0
    assert all(b - a >= INTERVAL for a, b in itertools.pairwise(written))


def test_a_request_writes_nothing_itself_and_the_flush_writes_it(app: Flask, signed_in: FlaskClient) -> None:
    runtime = app.extensions["hatidata_auth"]
    with app.app_context():
        db.session.execute(AuthSession.__table__.update().values(last_seen_at=None))
        db.session.commit()
    runtime.last_seen.flush()
    assert signed_in.get("/api/v1/me").status_code == 200
    assert _stored(app)[0] is None  # queued, not written by the request
    assert runtime.last_seen.pending == 1
    runtime.last_seen.flush()
    assert _stored(app)[0] is not None


def test_a_revoked_session_is_not_written(app: Flask, signed_in: FlaskClient) -> None:
    status = _status(app)
    with app.app_context():
        db.session.execute(AuthSession.__table__.update().values(last_seen_at=None, revoked_at=datetime.now(UTC)))
        db.session.commit()
    writer = LastSeenWriter(_engine(app), interval=INTERVAL)
    writer.note(status)
    writer.flush()
    assert _stored(app)[0] is None


def test_the_claim_lets_one_process_write(app: Flask, signed_in: FlaskClient) -> None:
    claimed: set[str] = set()

    def claim(ids: list[str], seconds: int) -> set[str]:
        mine = {i for i in ids if i not in claimed}
        claimed.update(mine)
        return mine

    status = _status(app)
    with app.app_context():
        db.session.execute(AuthSession.__table__.update().values(last_seen_at=None))
        db.session.commit()
    first, second = (LastSeenWriter(_engine(app), interval=INTERVAL, claim=claim) for _ in range(2))
    first.note(status)
    second.note(status)
    assert second.flush() == 0 or first.flush() == 0


def _session_statuses(app: Flask, ids: list[str]) -> list[Any]:
    """Live sessions of the signed-in member with our ids *ids*, and their statuses."""
    with app.app_context():
        first = db.session.scalar(select(AuthSession))
        assert first is not None
        for sid in ids:
            db.session.add(AuthSession(id=sid, workos_session_id=f"session_{sid}",
                                       organization_id=first.organization_id, user_id=first.user_id,
                                       auth_organization_id=first.organization_id,
                                       expires_at=first.expires_at))
        db.session.commit()
        statuses = [load_session_status(db.session(), f"session_{sid}", default_cache_ttl=300, active_ttl=86400)
                    for sid in ids]
        db.session.remove()
    return statuses


def test_a_session_without_sliding_expiry_keeps_its_expiry(app: Flask, signed_in: FlaskClient) -> None:
    fixed, sliding = _session_statuses(app, ["ses_lsw_fixed", "ses_lsw_sliding"])
    assert sliding.sliding_ttl is not None
    writer = LastSeenWriter(_engine(app), interval=INTERVAL)
    writer.note(fixed._replace(sliding_ttl=None))
    writer.note(sliding)
    assert writer.flush() == 2
    with app.app_context():
        rows = {r.id: r for r in db.session.scalars(select(AuthSession).where(AuthSession.id.like("ses_lsw_%")))}
        kept, slid = rows["ses_lsw_fixed"], rows["ses_lsw_sliding"]
        assert kept.last_seen_at is not None
        assert slid.last_seen_at is not None
        assert _epoch(kept.expires_at) == pytest.approx(fixed.expires_at, abs=1)
        assert _epoch(slid.expires_at) == pytest.approx(_epoch(slid.last_seen_at) + sliding.sliding_ttl, abs=1)


def _epoch(at: datetime) -> float:
    return (at.replace(tzinfo=UTC) if at.tzinfo is None else at).timestamp()


@pytest.mark.postgres
@pytest.mark.parametrize("claims", [False, True], ids=["database_only", "with_claims"])
@pytest.mark.parametrize("held", ["ses_lsw_a", "ses_lsw_b"])
def test_a_flush_never_waits_for_a_session_another_transaction_holds(app: Flask, signed_in: FlaskClient,
                                                                    held: str, claims: bool) -> None:
    """A revocation locks sessions in id order, an applier's batch (``session.revoked`` events) in its events'
    order: a flush that waited for a row, in any order of its own, could close a cycle with one of them and lose
    its whole batch as a deadlock (two break-it reviews). It writes the others without waiting, and the next
    flush writes the held one (with claims too: the claim it took holds for the interval, and a review found the
    note dropped for as long)."""
    low, high = _session_statuses(app, ["ses_lsw_a", "ses_lsw_b"])
    claimed: set[str] = set()

    def claim(ids: list[str], seconds: int) -> set[str]:
        mine = {i for i in ids if i not in claimed}
        claimed.update(mine)
        return mine

    writer = LastSeenWriter(_engine(app), interval=INTERVAL, claim=claim if claims else None)
    writer.note(high)
    writer.note(low)
    with app.app_context():
        revocation = db.engine.connect()
        try:
            revocation.begin()
            revocation.execute(text("SELECT id FROM auth_sessions WHERE id = :id FOR UPDATE"), {"id": held})
            outcome: list[Any] = []
            flusher = threading.Thread(target=lambda: outcome.append(_flushed(writer)))
            flusher.start()
            flusher.join(10)
            assert outcome == [1], "the other session written, the held one skipped, nothing waited for"
            other = "ses_lsw_b" if held == "ses_lsw_a" else "ses_lsw_a"
            revocation.execute(text("SET LOCAL lock_timeout = '2s'"))
            revocation.execute(text("SELECT id FROM auth_sessions WHERE id = :id FOR UPDATE"), {"id": other})
            revocation.commit()
        finally:
            revocation.close()
        assert writer.pending == 1
        assert writer.flush() == 1, "the held session, once free"
        written = dict(db.session.execute(select(AuthSession.id, AuthSession.last_seen_at)
                                          .where(AuthSession.id.in_(["ses_lsw_a", "ses_lsw_b"]))).all())
        db.session.remove()
    assert None not in written.values()


def _flushed(writer: LastSeenWriter) -> Any:
    try:
        return writer.flush()
    except Exception as exc:  # noqa: BLE001 - the outcome names the failure
        return exc


def test_a_note_of_a_session_row_gone_is_not_kept(app: Flask, signed_in: FlaskClient) -> None:
    """A session row deleted since its note (an organization's or a person's deletion cascades) is not taken for
    one another transaction holds: its note is not put back at every flush for ever (a break-it review)."""
    from sqlalchemy import delete

    [gone] = _session_statuses(app, ["ses_lsw_gone"])
    with app.app_context():
        db.session.execute(delete(AuthSession).where(AuthSession.id == "ses_lsw_gone"))
        db.session.commit()
        db.session.remove()
    writer = LastSeenWriter(_engine(app), interval=INTERVAL)
    writer.note(gone)
    assert writer.flush() == 0
    assert writer.pending == 0


def test_a_child_forked_while_the_lock_is_held_can_note() -> None:
    """gunicorn forks its workers from a parent that may have run the writer: a child forked while another thread
    held the writer's lock inherited it held, and its first request's note waited for ever (by reading; now the
    lock is made anew in the child, with no pending notes and no thread of the parent's)."""
    import os
    import signal
    import time

    from hatidata_auth.services.credential_status import SessionStatus

    writer = LastSeenWriter(lambda: None, interval=60, flush_every=3600)  # type: ignore[arg-type,return-value]  # never flushes
    status = SessionStatus("ses_fork", "session_fork", "usr_fork", "fork@acme.test", "org_fork", None, "viewer",
                           True, time.time() + 3600, False, None, 300, None)
    writer.note(status)  # a parent's note pending, its flush thread running
    assert writer._lock.acquire(timeout=5)
    try:
        pid = os.fork()
        if pid == 0:  # the child: exit 0 once its note is taken, killed by the alarm if it waits
            signal.alarm(10)
            writer.note(status._replace(session_id="ses_fork_child"))
            os._exit(0 if list(writer._pending) == ["ses_fork_child"] else 3)
    finally:
        writer._lock.release()
    deadline = time.monotonic() + 20
    while (done := os.waitpid(pid, os.WNOHANG)) == (0, 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    if done == (0, 0):
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert done[0] == pid, "the child's note waited for its parent's lock"
    assert os.waitstatus_to_exitcode(done[1]) == 0, done


_NOTES_WRITER = LastSeenWriter(lambda: None, interval=INTERVAL, flush_every=3600)  # type: ignore[arg-type,return-value]
"""Notes only (one idle flush thread for every example): nothing is flushed."""


@given(uses=st.lists(st.tuples(st.integers(min_value=0, max_value=5), st.floats(min_value=0, max_value=90)),
                     max_size=60))
def test_a_use_is_due_exactly_when_the_session_was_not_noted_within_the_interval(
        uses: list[tuple[int, float]]) -> None:
    """The identity memo keeps the status a session was resolved from, so only the writer's notes stop its uses
    from being due: every note within the last interval is remembered, and none older (the bound is time, not a
    count that forgot recent notes)."""
    writer, clock, last = _NOTES_WRITER, Clock(1_800_000_000.0), {}
    writer._noted.clear()
    writer.clock = clock
    base = SessionStatus("ses_0", "session_0", "usr_1", "a@acme.test", "org_1", None, "viewer", True,
                         clock.now + 10**6, False, None, 300, 3600, clock.now, None)
    for session, step in uses:
        clock.now += step
        status = base._replace(session_id=f"ses_{session}")
        due = clock.now - last.get(session, float("-inf")) >= INTERVAL
        assert writer.due(status) is due
        if due:
            writer.note(status)
            last[session] = clock.now
            assert all(clock.now - at < INTERVAL for at in writer._noted.values()), "a note past the interval kept"
