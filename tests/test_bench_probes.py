"""The benchmarks' own probes of the inbox read an index, so that what they measure is the app, not the probe.

``bench.dsync_bench.seconds_until_drained`` polls every 20 ms whether an event is still pending (also for
``bench.scale``'s inbox of 10M rows). Written as ``status NOT IN (<the settled statuses>)`` it could use no index
and scanned the whole table on every poll: at 10M rows its reads delayed the appliers, and the curve showed applied
events/s falling to 0.68 of the empty inbox with the CPU per event unchanged. It asks for ``status = 'received'``,
the appliers' definition of pending, which their partial indexes answer.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from bench.dsync_bench import PENDING_SQL

pytestmark = pytest.mark.postgres


def test_the_drain_probe_reads_a_partial_index_of_pending_events(db_session: Any) -> None:
    db_session.execute(text("SET LOCAL enable_seqscan = off"))  # whatever the statistics: can an index answer it?
    plan = "\n".join(db_session.execute(text(f"EXPLAIN {PENDING_SQL.text}")).scalars())
    assert "Seq Scan" not in plan, plan
    assert "ix_webhook_events_claim_order" in plan or "ix_webhook_events_pending_key" in plan, plan
