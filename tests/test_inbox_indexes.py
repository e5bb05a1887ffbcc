"""The inbox carries only the indexes its queries use (issue #14): the primary key, the unique event id and four
partial indexes that no settled row enters: the pending events in claim order, by entity key, our own pending jobs
in claim order, and the failed events. Every query that needs one names its status as a literal, and both
databases use them for the appliers' claims."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event, inspect, text

from hatidata_auth.extensions import db
from hatidata_auth.services import inbox_replay, inbox_worker

PARTIAL = {"ix_webhook_events_claim_order": "received", "ix_webhook_events_pending_key": "received",
           "ix_webhook_events_internal_order": "received", "ix_webhook_events_failed": "failed"}
STATUSES = ("received", "failed", "applied", "ignored", "duplicate")


def _index_sql(conn: Any) -> dict[str, str]:
    """The inbox's indexes other than the primary key and the unique constraint, by name: their definitions."""
    if conn.dialect.name == "postgresql":
        rows = conn.execute(text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'webhook_events' "
                                 "AND indexname NOT IN ('webhook_events_pkey', 'webhook_events_event_id_key')"))
    else:
        rows = conn.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                                 "AND tbl_name = 'webhook_events' AND sql IS NOT NULL"))
    return {name: " ".join(sql.split()) for name, sql in rows}


# SQLite's inspector skips (and warns of) the expression indexes: _index_sql reads them from sqlite_master.
@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
def test_the_inbox_has_exactly_its_partial_indexes(app: Flask) -> None:
    with app.app_context(), db.engine.connect() as conn:
        indexes = _index_sql(conn)
        assert set(indexes) == set(PARTIAL)
        for name, status in PARTIAL.items():
            assert "WHERE " in indexes[name].upper(), indexes[name]
            assert f"'{status}'" in indexes[name], indexes[name]
        assert "'internal'" in indexes["ix_webhook_events_internal_order"]
        unique = [uc["column_names"] for uc in inspect(conn).get_unique_constraints("webhook_events")]
        assert unique == [["event_id"]]
        assert inspect(conn).get_pk_constraint("webhook_events")["constrained_columns"] == ["id"]


def _plan(conn: Any, sql: str, params: Any = None, *, ordered: bool = False) -> str:
    """The plan of *sql* as the driver sends it (*params* in its paramstyle); on PostgreSQL as a fresh database
    plans it, without sequential scans (the test's table is empty) and, with *ordered*, without sorts (as
    ``inbox_worker.claim`` plans)."""
    cursor = conn.connection.driver_connection.cursor()
    if conn.dialect.name == "postgresql":
        # The plan a fresh database gets, whatever the earlier tests left (the dead pages of their rows, the
        # statistics of autovacuum or of an ANALYZE): an empty table never analyzed. With the statistics of an
        # empty table every index costs the same and the planner's pick among them varied from run to run. All of
        # it is rolled back with the caller's transaction.
        cursor.execute("TRUNCATE webhook_events")  # no pages left; marked never analyzed (reltuples -1)
        cursor.execute("DELETE FROM pg_statistic WHERE starelid = 'webhook_events'::regclass")
        cursor.execute("SET LOCAL enable_seqscan = off")
        if ordered:
            cursor.execute("SET LOCAL enable_sort = off")
        cursor.execute(f"EXPLAIN {sql}", params or None)
        return "\n".join(row[0] for row in cursor.fetchall())
    return "\n".join(str(row[-1]) for row in cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params or ()))


@pytest.mark.parametrize("status", STATUSES)
def test_status_lookups_use_a_partial_index_and_settled_rows_stay_out(app: Flask, status: str) -> None:
    with app.app_context(), db.engine.connect() as conn:
        plan = _plan(conn, f"SELECT count(*) FROM webhook_events WHERE status = '{status}'")
        used = {name for name in PARTIAL if name in plan}
        assert bool(used) == (status in ("received", "failed")), plan
        assert all(PARTIAL[name] == status for name in used), plan


@pytest.fixture
def statements(app: Flask) -> Iterator[list[tuple[str, Any]]]:
    """The SQL statements sent on the inbox while the test runs."""
    seen: list[tuple[str, Any]] = []

    def grab(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if "webhook_events" in statement:
            seen.append((statement, parameters))

    with app.app_context():
        event.listen(db.engine, "before_cursor_execute", grab)
        try:
            yield seen
        finally:
            event.remove(db.engine, "before_cursor_execute", grab)


@pytest.mark.parametrize("variant", [{}, {"revoking_only": True}, {"entity_key": "user:someone"}])
def test_claims_read_the_claim_indexes_with_literal_statuses(app: Flask, statements: list[tuple[str, Any]],
                                                              variant: dict[str, Any]) -> None:
    with app.app_context():
        inbox_worker.claim(db.session(), 20, **variant)
        db.session.rollback()
        # On PostgreSQL the first statement picks the candidates (a revoking claim's, the heads of the keys with a
        # revoking event: there are none here, so it stops there); on SQLite it is the claiming UPDATE.
        heads_first = bool(variant.get("revoking_only")) and db.engine.dialect.name == "postgresql"
        sql, params = next((sql, params) for sql, params in statements if "UPDATE" in sql or heads_first)
        assert "status = 'received'" in sql, sql
        assert "'internal'" in sql or heads_first, sql
        with db.engine.connect() as conn:
            plan = _plan(conn, sql, params, ordered="entity_key" not in variant)
        first = "ix_webhook_events_pending_key" if variant.get("entity_key") else "ix_webhook_events_claim_order"
        assert first in plan, plan
        assert "ix_webhook_events_pending_key" in plan, plan
        assert "ix_webhook_events_internal_order" in plan or variant.get("entity_key") or heads_first, plan


def test_the_failed_list_and_the_gauges_read_the_partial_indexes(app: Flask,
                                                                 statements: list[tuple[str, Any]]) -> None:
    from hatidata_auth.metrics_views import _inbox_backlog

    with app.app_context():
        inbox_replay.list_failed(db.session())
        db.session.rollback()
        _inbox_backlog()
        (failed_sql, failed_params), (gauge_sql, gauge_params) = statements
        with db.engine.connect() as conn:
            failed_plan = _plan(conn, failed_sql, failed_params)
        with db.engine.connect() as conn:
            gauge_plan = _plan(conn, gauge_sql, gauge_params)
        assert "ix_webhook_events_failed" in failed_plan, failed_plan
        assert "ix_webhook_events_failed" in gauge_plan, gauge_plan
        assert any(name in gauge_plan for name in PARTIAL if PARTIAL[name] == "received"), gauge_plan
