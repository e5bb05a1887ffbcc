"""The audit log at scale (issue #17, item 3): one organization's chain of ``--events`` events on PostgreSQL
(``BENCH_DATABASE_URL``, a private database created and dropped), then

* page and filter latency (newest page of 50, each filter the API offers) as ratios to a baseline measured in the
  same run: a primary-key lookup of one event;
* export throughput (events/s of the NDJSON export with its trailer) and the time of an incremental verify
  (after a signed checkpoint) against a full walk.

``--duration`` bounds the export measurement (seconds; default: the whole chain). Run:
``make bench BENCH=audit_scale BENCH_ARGS="--events 100000"``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.dsync_bench import private_database
from bench.options import add_duration

FILTERS = {"actor_id": "usr_3", "actor_type": "api_key", "actor_email": "u3@x.test", "action": "bench.action1",
           "target_type": "user", "target_id": "ses_4", "outcome": "failure"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="events in the organization's chain")
    add_duration(parser, "seconds the export is measured for (default: the whole chain)")
    return parser


def _median_ms(call: Callable[[], object], repeat: int = 30) -> float:
    call()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


def seed(session: object, organization_id: str, events: int) -> None:
    """Append *events* chained events in transactions of 5000."""
    from hatidata_auth.causes import Actor, Cause, RequestInfo
    from hatidata_auth.services import audit

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    for start in range(0, events, 5000):
        for i in range(start, min(events, start + 5000)):
            audit.record(session, action=f"bench.action{i % 3}",  # type: ignore[arg-type]
                         cause=Cause.by(Actor("api_key" if i % 10 == 3 else "user", f"usr_{i % 7}",
                                              f"u{i % 7}@x.test"), RequestInfo("10.0.0.1", "bench", f"r{i}")),
                         organization_id=organization_id,
                         target_type=("session", "api_key", "membership", "user", "role")[i % 5],
                         target_id=f"ses_{i % 11}", outcome="failure" if i % 5 == 0 else "success",
                         details={"i": i}, at=t0 + timedelta(seconds=i))
        session.commit()  # type: ignore[attr-defined]


def run(events: int, duration: float | None) -> None:
    from flask_migrate import upgrade
    from sqlalchemy import select, text

    from hatidata_auth import audit_runtime, create_app
    from hatidata_auth.extensions import db
    from hatidata_auth.models import AuditEvent, Organization
    from hatidata_auth.services import audit_checkpoints, audit_exports, audit_queries, audit_signing

    base = os.environ.get("BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    with tempfile.TemporaryDirectory() as tmp, private_database(base) as database_url:
        os.environ["HATIDATA_INSTANCE_PATH"] = str(Path(tmp) / "instance")
        app = create_app({"SQLALCHEMY_DATABASE_URI": database_url, "HATIDATA_ENV": "development",
                          "HATIDATA_AUDIT_WORKER": 0, "HATIDATA_INBOX_APPLIERS": 0})
        with app.app_context():
            upgrade()
            session = db.session()
            org = Organization(name="Bench", domains=["bench.test"])
            session.add(org)
            session.commit()
            org_id = org.id
            started = time.perf_counter()
            seed(session, org_id, events)
            print(f"[seed] {events} events in {time.perf_counter() - started:.1f} s")
            session.execute(text("ANALYZE audit_events"))
            session.commit()
            middle = session.scalar(select(AuditEvent.id).where(AuditEvent.seq == events // 2))

            def by_key() -> object:
                session.expunge_all()
                return session.get(AuditEvent, middle)

            baseline = _median_ms(by_key)
            print(f"[baseline] primary-key lookup of one event: {baseline:.2f} ms (median of 30)")

            def page_of(**values: str) -> Callable[[], object]:
                flt = audit_queries.AuditFilter(**values)  # type: ignore[arg-type]
                return lambda: audit_queries.page(session, org_id, flt, before_seq=None, limit=50)

            for label, call in [("newest page", page_of()), *((f"filter {k}", page_of(**{k: v}))
                                                             for k, v in FILTERS.items())]:
                ms = _median_ms(call)
                print(f"[page] {label}: {ms:.2f} ms = {ms / baseline:.1f} x baseline")
            count, started = 0, time.perf_counter()
            deadline = None if duration is None else started + duration
            for _ in audit_exports.export_lines(session, org_id, audit_queries.AuditFilter()):
                count += 1
                if deadline is not None and count % 1000 == 0 and time.perf_counter() > deadline:
                    break
            elapsed = time.perf_counter() - started
            print(f"[export] {count} lines in {elapsed:.1f} s = {count / elapsed:.0f} events/s "
                  f"({elapsed / max(count, 1) * 1e6 / (baseline * 1000):.3f} x baseline per event)")
            signer = audit_runtime.signer(app)
            assert signer is not None
            started = time.perf_counter()
            made = audit_checkpoints.run(session, signer, every=1000, interval=60)
            print(f"[checkpoint] first pass (walks the chain, signs {made}): {time.perf_counter() - started:.1f} s")
            keys = audit_signing.public_keys(audit_signing.published_keys(session, signer))
            seed(session, org_id, 100)
            full = _median_ms(lambda: audit_checkpoints.verify(session, org_id, keys, full=True), repeat=1)
            incremental = _median_ms(lambda: audit_checkpoints.verify(session, org_id, keys), repeat=5)
            print(f"[verify] full walk {full:.0f} ms; incremental (100 events after the checkpoint) "
                  f"{incremental:.1f} ms = {incremental / baseline:.1f} x baseline, {full / incremental:.0f} x faster")
            db.session.remove()
            db.engine.dispose()


def main() -> None:
    args = build_parser().parse_args()
    run(args.events, args.duration)


if __name__ == "__main__":
    main()
