"""The deprovisioning thread's claim reads the revoking events only, however long the backlog behind them (issue
#14): its condition is an equality on the claim index's first column (``revokes = true``). Written ``IS TRUE`` it was
a filter, and every revoking claim read every pending event with a head probe each; under a burst acknowledged
faster than it was applied that cost grew with the backlog on every wake-up."""

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
    if plan.get("Relation Name") == "webhook_events" or plan["Node Type"] == "Index Only Scan":
        loops = int(plan.get("Actual Loops", 1))
        own = loops * (int(plan.get("Actual Rows", 0)) + int(plan.get("Rows Removed by Filter", 0)))
    return own + sum(_examined(child) for child in plan.get("Plans", []))


def _rows_read_by_a_revoking_claim(app: Flask, backlog: int, revoking: int) -> tuple[int, list[str]]:
    """Store *backlog* pending updates and *revoking* deactivations of other users, then plan and run the revoking
    claim's candidate query: (rows it read, event ids it would claim). Nothing is kept."""
    with app.app_context():
        session = db.session()
        for n in range(backlog):
            inbox.store(session, user_event(f"BACK{n}", 1))
        for n in range(revoking):
            inbox.store(session, user_event(f"GONE{n}", 2, state="inactive"))
        statements: list[tuple[str, Any]] = []

        def grab(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
            if "FOR UPDATE" in statement and not statements:
                statements.append((statement, parameters))

        event.listen(db.engine, "before_cursor_execute", grab)
        try:
            claimed = inbox_worker.claim(session, 20, revoking_only=True)
        finally:
            event.remove(db.engine, "before_cursor_execute", grab)
        session.rollback()
        statement, parameters = statements[0]
        raw = session.connection().exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + statement,
                                                   parameters).scalar_one()
        session.rollback()
        session.execute(text("DELETE FROM webhook_events"))
        session.commit()
        plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
        print(backlog, revoking, json.dumps(plan, indent=1))
        return _examined(plan), sorted(c.event_id for c in claimed)


@pytest.mark.parametrize("revoking", [0, 3])
def test_a_revoking_claim_reads_the_same_rows_behind_a_short_or_a_long_backlog(app: Flask, revoking: int) -> None:
    short, claimed_short = _rows_read_by_a_revoking_claim(app, 10, revoking)
    long, claimed_long = _rows_read_by_a_revoking_claim(app, 400, revoking)
    assert len(claimed_short) == len(claimed_long) == revoking
    assert long == short, (short, long)
    assert long <= 4 * revoking + 4, long  # each revoking head and its probe; nothing of the backlog
