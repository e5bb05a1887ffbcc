"""The deprovisioning thread's claim (issue #14): it takes the head of every entity key that holds a pending event
taking access away, so such an event behind an older one of its key (a connection deactivated after its
activation, an organization deleted after an update) is reached without waiting for the batch appliers, which may
be giving way to requests (``applier_pool.GiveWay``; found by a break-it review: 1.9-5.1 s under load). It reads
the revoking events and one index probe each, however long the backlog of other keys."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event, text

from hatidata_auth.extensions import db
from hatidata_auth.services import inbox, inbox_worker
from tests.test_inbox_appliers import user_event

pytestmark = pytest.mark.postgres


def _examined(plan: dict[str, Any]) -> int:
    """Rows a PostgreSQL plan's scans of ``webhook_events`` read (returned plus removed by a filter), summed over
    every loop of each scan."""
    own = 0
    if plan.get("Relation Name") == "webhook_events":
        loops = int(plan.get("Actual Loops", 1))
        own = loops * (int(plan.get("Actual Rows", 0)) + int(plan.get("Rows Removed by Filter", 0)))
    return own + sum(_examined(child) for child in plan.get("Plans", []))


def _revoking_claim(app: Flask, backlog: int, revoking: int, behind: int) -> tuple[int, list[str], list[str]]:
    """Store *backlog* pending updates of other users, *revoking* deactivations of users with nothing pending
    before, and *behind* deactivations each behind an update of its user; plan, run and roll back the revoking
    claim: (rows its candidate query read, event ids it claimed, the ids it should claim)."""
    with app.app_context():
        session = db.session()
        session.execute(text("DELETE FROM webhook_events"))
        session.commit()
        expected = []
        for n in range(backlog):
            inbox.store(session, user_event(f"BACK{n}", 1))
        for n in range(revoking):
            gone = user_event(f"GONE{n}", 2, state="inactive")
            inbox.store(session, gone)
            expected.append(gone["id"])
        for n in range(behind):
            older = user_event(f"LATE{n}", 1)
            inbox.store(session, older)
            inbox.store(session, user_event(f"LATE{n}", 2, state="inactive"))
            expected.append(older["id"])  # the head of the revoking key: applied first, in order
        # The table's statistics as autovacuum keeps them: left from an earlier test when the table was empty, they
        # made a sequential scan of 400 rows the cheaper plan, rightly for a table that small.
        session.execute(text("ANALYZE webhook_events"))
        session.commit()
        statements: list[tuple[str, Any]] = []

        def grab(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
            if statement.lstrip().upper().startswith("SELECT") and "webhook_events" in statement:
                statements.append((statement, parameters))

        event.listen(db.engine, "before_cursor_execute", grab)
        try:
            claimed = inbox_worker.claim(session, 20, revoking_only=True)
        finally:
            event.remove(db.engine, "before_cursor_execute", grab)
        session.rollback()
        read = 0
        for statement, parameters in statements:  # the revoking heads, then those of them free to take
            raw = session.connection().exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + statement,
                                                       parameters).scalar_one()
            read += _examined((json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"])
            session.rollback()
        session.execute(text("DELETE FROM webhook_events"))
        session.commit()
        return read, sorted(c.event_id for c in claimed), sorted(expected)


@pytest.mark.parametrize(("revoking", "behind"), [(0, 0), (3, 0), (0, 2), (2, 2)])
def test_a_revoking_claim_takes_each_revoking_keys_head_reading_the_same_rows_behind_any_backlog(
        app: Flask, revoking: int, behind: int) -> None:
    short, claimed_short, expected_short = _revoking_claim(app, 10, revoking, behind)
    long, claimed_long, expected_long = _revoking_claim(app, 400, revoking, behind)
    assert claimed_short == expected_short
    assert claimed_long == expected_long
    # The revoking events, their heads and a probe each: nothing of the backlog of 400 other events (behind 10, a
    # scan of the small table is the cheaper plan).
    assert long <= 6 * (revoking + 2 * behind), (short, long)
