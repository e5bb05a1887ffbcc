"""Break-it tests for bounded audit pages (commit 662c1d6, ``audit_queries.page``, docs/audit.md "Every page is
bounded"). Each test states a fault found in review and fails until it is fixed.

* A ``since``/``until`` range is first probed (``_seq_bounds``: min/max/count of at most ``TIME_RANGE_PROBE``
  events of the range, no order). On PostgreSQL with real statistics the planner answers that probe for a range of
  10,000+ events with a sequential scan of ``audit_events`` that stops at the 10,000th match: when the range is
  the newest part of the chain ("since yesterday"), or the organization's rows lie behind other organizations',
  it reads every row before them, whichever organization they belong to. One request then costs a walk of the
  table, outside the page's 25 ms budget (the budget is only checked after a window).
* The API's schema does not tell its users that a page may hold fewer than ``limit`` events, even none, with a
  ``next_cursor``: a client that stops at a short or empty page misses events.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from flask import Flask
from sqlalchemy import event, insert, text

from bench import audit_seed
from bench.audit_seed import T0
from hatidata_auth.extensions import db
from hatidata_auth.models import AuditChainHead, AuditEvent
from hatidata_auth.services import audit_queries
from hatidata_auth.services.audit_queries import AuditFilter
from tests.audit_support import new_org

OTHER_EVENTS = 30_000  # another organization's chain, stored before Acme's
ACME_EVENTS = 20_000


def _seed_two_chains(app: Flask) -> tuple[str, str]:
    """Another organization's chain of OTHER_EVENTS events, then Acme's of ACME_EVENTS (one second apart from
    ``audit_seed.T0``), both hashed as ``services.audit`` hashes them; analyzed, as autovacuum would have."""
    other, acme = new_org(app, "Other"), new_org(app, "Acme")
    with app.app_context():
        session = db.session
        audit_seed.seed(session, other, OTHER_EVENTS)
        head: str | None = None
        batch: list[dict[str, Any]] = []
        for row in audit_seed.chained(acme, ACME_EVENTS):
            values = dict(zip(audit_seed.COLUMNS, row, strict=True))
            values["public_id"] = "evt_acme" + values["public_id"][9:]  # public ids are unique across chains
            batch.append(values)
            head = row[-1]
            if len(batch) == 5000:
                session.execute(insert(AuditEvent.__table__), batch)
                batch = []
        if batch:
            session.execute(insert(AuditEvent.__table__), batch)
        assert head is not None
        session.merge(AuditChainHead(chain_key=acme, seq=ACME_EVENTS, hash=head))
        session.commit()
        session.execute(text("ANALYZE"))
        session.commit()
        session.remove()
    return other, acme


def _examined(plan: dict[str, Any]) -> int:
    """Rows a PostgreSQL plan's scans of ``audit_events`` read (returned plus removed by their filter; a bitmap
    index scan reads every entry of its range whatever the LIMIT above it)."""
    total = 0
    node = plan["Node Type"]
    if node == "Bitmap Index Scan" or (plan.get("Relation Name") == "audit_events" and node != "Bitmap Heap Scan"):
        total += int(plan.get("Actual Rows", 0)) + int(plan.get("Rows Removed by Filter", 0))
    return total + sum(_examined(child) for child in plan.get("Plans", []))


def _scans(plan: dict[str, Any]) -> list[str]:
    own = [plan["Node Type"]] if "Scan" in plan["Node Type"] else []
    return own + [scan for child in plan.get("Plans", []) for scan in _scans(child)]


def _statements(session: Any, org_id: str, flt: AuditFilter) -> list[tuple[str, Any]]:
    """The statements one newest page of *flt* sends, with their parameters."""
    sent: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        sent.append((statement, parameters))

    engine = session.get_bind()
    event.listen(engine, "before_cursor_execute", capture)
    try:
        audit_queries.page(session, org_id, flt, before_seq=None, limit=50)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    return sent


def test_a_time_range_page_never_walks_the_table(app: Flask, monkeypatch: Any) -> None:
    """Every statement of a page reads a bounded number of rows: the probe at most TIME_RANGE_PROBE, a window at
    most its seqs. Over time ranges of Acme's chain holding more than TIME_RANGE_PROBE events (the newest part, a
    middle part, nearly all of it), with and without a filter. The probe's limit is set to 1,000 here so that, as
    in production (a limit of 10,000 against millions of rows), the table is far larger than the limit: with a
    table only a few times the limit, reading all of it sequentially is what PostgreSQL rightly finds cheapest."""
    monkeypatch.setattr(audit_queries, "TIME_RANGE_PROBE", 1000)
    _, acme = _seed_two_chains(app)
    end = T0 + timedelta(seconds=ACME_EVENTS)
    ranges = {
        "the newest 12,000 events (since a time)": AuditFilter(since=end - timedelta(seconds=12_000)),
        "the newest 15,000 events, actor_type=api_key": AuditFilter(since=end - timedelta(seconds=15_000),
                                                                     actor_type="api_key"),
        "a middle range of 11,000 events": AuditFilter(since=T0 + timedelta(seconds=4_000),
                                                        until=T0 + timedelta(seconds=15_000)),
        "all but the oldest 1,000 events": AuditFilter(since=T0 + timedelta(seconds=1_000)),
    }
    over: dict[str, list[str]] = {}
    with app.app_context():
        session = db.session
        postgres = session.get_bind().dialect.name == "postgresql"
        for label, flt in ranges.items():
            for statement, parameters in _statements(session, acme, flt):
                if not statement.lstrip().upper().startswith("SELECT"):
                    continue
                if postgres:
                    # Deterministic: a synchronized scan would start wherever another scan of the table is.
                    session.execute(text("SET LOCAL synchronize_seqscans = off"))
                    raw = session.connection().exec_driver_sql(
                        "EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters).scalar_one()
                    plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
                    read = _examined(plan)
                    window = parameters.get("seq_1"), parameters.get("seq_2")
                    # The probe reads the range in time order and stops at its limit; for a range barely larger
                    # than the limit PostgreSQL may prefer a bitmap scan of the whole range (it does only while
                    # that costs less than the ordered scan), never of rows outside the range.
                    bound = (window[1] - window[0] + 1 if None not in window
                             else 2 * audit_queries.TIME_RANGE_PROBE)
                    if read > bound:
                        over.setdefault(label, []).append(f"read {read} rows (bound {bound}) with "
                                                          f"{'/'.join(_scans(plan))}: "
                                                          f"{statement.split('FROM')[0][:40]!r}")
                else:
                    plan_rows = session.connection().exec_driver_sql(
                        "EXPLAIN QUERY PLAN " + statement, parameters).all()
                    scans = [r[-1] for r in plan_rows if str(r[-1]).startswith("SCAN audit_events")]
                    if scans:
                        over.setdefault(label, []).extend(scans)
                session.rollback()
    assert over == {}, over


def test_the_list_schema_says_a_short_page_is_not_the_last(app: Flask) -> None:
    """docs/audit.md: a page may hold fewer than `limit` events, even none, with a `next_cursor`; only `null`
    ends the list. An API user reads the OpenAPI document (and docs/api.md's route table), which must say so:
    the usual client loop stops at a short or empty page and would miss the events behind it."""
    document = app.test_client().get("/api/openapi.json").get_json()
    operation = document["paths"]["/api/v1/audit-events"]["get"]
    envelope = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    texts = [operation.get("summary", ""), operation.get("description", ""),
             document["components"]["schemas"][envelope]["properties"]["next_cursor"].get("description", ""),
             *(p.get("description", "") for p in operation["parameters"] if p["name"] in ("limit", "cursor"))]
    told = " ".join(texts).lower()
    assert "fewer" in told or "short" in told or "empty" in told, texts
