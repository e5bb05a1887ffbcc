"""The inbox carries only the indexes its queries use (issue #14): the primary key, the unique event id and the
open-events index, partial on PostgreSQL, which every open status's lookup uses and no settled row enters."""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy import inspect, text

from hatidata_auth.extensions import db

OPEN_STATUSES = ("received", "failed")
SETTLED_STATUSES = ("applied", "ignored", "duplicate")


def test_the_inbox_has_exactly_its_three_indexes(app: Flask) -> None:
    with app.app_context():
        inspector = inspect(db.engine)
        indexes = {ix["name"]: ix["column_names"] for ix in inspector.get_indexes("webhook_events")
                   if not ix.get("duplicates_constraint")}  # PostgreSQL lists the unique constraint here too
        unique = [uc["column_names"] for uc in inspector.get_unique_constraints("webhook_events")]
        assert indexes == {"ix_webhook_events_open": ["status", "id"]}
        assert unique == [["event_id"]]
        assert inspector.get_pk_constraint("webhook_events")["constrained_columns"] == ["id"]


@pytest.mark.parametrize("status", OPEN_STATUSES + SETTLED_STATUSES)
def test_open_lookups_use_the_partial_index_and_settled_rows_stay_out(app: Flask, status: str) -> None:
    with app.app_context(), db.engine.connect() as conn:
        if conn.dialect.name != "postgresql":
            pytest.skip("partial index on PostgreSQL only (SQLite cannot prove the predicate)")
        conn.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(conn.execute(text("EXPLAIN SELECT * FROM webhook_events WHERE status = :status "
                                           "ORDER BY id LIMIT 50"), {"status": status}).scalars())
        assert ("ix_webhook_events_open" in plan) == (status in OPEN_STATUSES), plan
