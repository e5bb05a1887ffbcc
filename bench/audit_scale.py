"""The audit log at scale (issue #17, item 3): one organization's chain of ``--events`` events on PostgreSQL
(``BENCH_DATABASE_URL``, a private database created and dropped), then

* page and filter latency (newest page of 50, each filter the API offers) as ratios to a baseline measured in the
  same run: a primary-key lookup of one event;
* export throughput (events/s of the NDJSON export with its trailer) of ``--export-events`` events from the middle
  of the chain (a time range), and verification: incremental (the events after the newest signed checkpoint) against
  a full walk (events/s, bounded by ``--duration`` seconds).

``--seeder copy`` (default) writes the chain with ``COPY`` and stores a signed checkpoint every 1,000 events, as the
checkpoint worker would have (``bench/audit_seed.py``: 10M events in minutes); ``--seeder orm`` appends through
``services.audit.record`` in transactions of 5,000 and lets the checkpoint worker walk the chain once. Run:
``make bench BENCH=audit_scale BENCH_ARGS="--events 10000000 --export-events 1000000 --duration 60"``.
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
    parser.add_argument("--export-events", type=int, default=None,
                        help="events the export covers, from the middle of the chain (default: the whole chain)")
    parser.add_argument("--seeder", choices=("copy", "orm"), default="copy", help="how the chain is written")
    add_duration(parser, "seconds the export and the full verification walk may take at most (default: no bound)")
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


def run(events: int, duration: float | None, export_events: int | None, seeder: str) -> None:
    from flask_migrate import upgrade
    from sqlalchemy import select, text

    from bench import audit_seed
    from bench.audit_seed import T0
    from hatidata_auth import audit_runtime, create_app
    from hatidata_auth.extensions import db
    from hatidata_auth.models import AuditEvent, Organization
    from hatidata_auth.services import audit_checkpoints, audit_queries, audit_signing

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
            signer = audit_runtime.signer(app)
            assert signer is not None
            started = time.perf_counter()
            if seeder == "copy":
                audit_seed.seed(session, org_id, events, signer=signer,
                                progress=lambda n: print(f"[seed] {n} events", flush=True) if n % 1_000_000 == 0
                                else None)
            else:
                seed(session, org_id, events)
            print(f"[seed] {events} events ({seeder}) in {time.perf_counter() - started:.1f} s", flush=True)
            session.execute(text("ANALYZE audit_events"))
            session.commit()
            middle = session.scalar(select(AuditEvent.id).where(AuditEvent.seq == events // 2))

            def by_key() -> object:
                session.expunge_all()
                return session.get(AuditEvent, middle)

            baseline = _median_ms(by_key)
            print(f"[baseline] primary-key lookup of one event: {baseline:.2f} ms (median of 30)")

            def page_of(**values: object) -> Callable[[], object]:
                flt = audit_queries.AuditFilter(**values)  # type: ignore[arg-type]
                return lambda: audit_queries.page(session, org_id, flt, before_seq=None, limit=50)

            middle_time = T0 + timedelta(seconds=events // 2)
            hour = {"since": middle_time, "until": middle_time + timedelta(hours=1)}
            hard = [  # filters whose matches are rare or absent: a scan must not walk the chain to find them
                ("no match: actor_email", page_of(actor_email="nobody@x.test")),
                ("no match: actor_type=api_key & outcome=failure", page_of(actor_type="api_key", outcome="failure")),
                ("an hour mid-chain & action", page_of(action="bench.action1", **hour)),
                ("an hour mid-chain, no match", page_of(actor_type="api_key", outcome="failure",
                                                        **hour)),
            ]
            for label, call in [("newest page", page_of()), *((f"filter {k}", page_of(**{k: v}))
                                                             for k, v in FILTERS.items()), *hard]:
                ms = _median_ms(call)
                print(f"[page] {label}: {ms:.2f} ms = {ms / baseline:.1f} x baseline")
            _export(session, org_id, events, export_events, duration, baseline)
            started = time.perf_counter()
            made = audit_checkpoints.run(session, signer, every=1000, interval=60)
            print(f"[checkpoint] worker pass (signs {made}): {time.perf_counter() - started:.1f} s")
            keys = audit_signing.public_keys(audit_signing.published_keys(session, signer))
            seed(session, org_id, 100)
            started = time.perf_counter()
            full = audit_checkpoints.verify(session, org_id, keys, full=True, budget=duration)
            walked = time.perf_counter() - started
            assert full.report.ok, full.report
            incremental = _median_ms(lambda: audit_checkpoints.verify(session, org_id, keys), repeat=5)
            rate = full.report.checked / walked
            print(f"[verify] full walk: {full.report.checked} events in {walked:.1f} s = {rate:.0f} events/s "
                  f"({'complete' if full.report.complete else 'cut by --duration'}; the whole chain would take "
                  f"{(events + 100) / rate:.0f} s); incremental (100 events after the newest checkpoint) "
                  f"{incremental:.1f} ms = {incremental / baseline:.1f} x baseline")
            db.session.remove()
            db.engine.dispose()


def _export(session: object, org_id: str, events: int, export_events: int | None, duration: float | None,
            baseline: float) -> None:
    """Export *export_events* events from the middle of the chain (a time range: events are a second apart)."""
    from bench.audit_seed import T0
    from hatidata_auth.services import audit_exports, audit_queries

    flt = audit_queries.AuditFilter()
    if export_events is not None and export_events < events:
        first = (events - export_events) // 2
        flt = audit_queries.AuditFilter(since=T0 + timedelta(seconds=first),
                                        until=T0 + timedelta(seconds=first + export_events))
    count, started = 0, time.perf_counter()
    trailer = ""
    for line in audit_exports.export_lines(session, org_id, flt, budget=duration):  # type: ignore[arg-type]
        count += 1
        trailer = line
    elapsed = time.perf_counter() - started
    print(f"[export] {count - 1} events + trailer in {elapsed:.1f} s = {count / elapsed:.0f} events/s "
          f"({elapsed / max(count, 1) * 1e6 / (baseline * 1000):.3f} x baseline per event); trailer: {trailer[:160]}")


def main() -> None:
    args = build_parser().parse_args()
    run(args.events, args.duration, args.export_events, args.seeder)


if __name__ == "__main__":
    main()
