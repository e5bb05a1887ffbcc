"""How cost grows with work (not a timed test): ``.venv/bin/python -m bench.scale [--curve webhooks] [--large]``.

Needs PostgreSQL (``BENCH_DATABASE_URL``, default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``; a
private database is created next to it and dropped afterwards). Each curve prints its points as ratios to its
first point, measured in the same run; the absolute figures are printed only beside them.

``webhooks`` (:func:`webhook_curve`): the app under gunicorn (``config/gunicorn.conf.py``, 2 sync workers, as
``bench/dsync_bench.py``) receives the same mix of signed ``dsync.user.*`` events (new users, then updates, 10%
duplicates, shuffled) with an empty inbox, then with the inbox pre-filled to 10% of ``--rows`` and to ``--rows``
settled events (100,000 by default, 1,000,000 with ``--large``; ``INSERT … SELECT generate_series`` then
``VACUUM ANALYZE`` and ``CHECKPOINT``). Reports acknowledged events/s (answers received) and applied events/s
(until no inbox row is left to apply) and CPU milliseconds per event (gunicorn workers + database backends, read
from ``/proc``; steadier than events/s on a machine other jobs share) at each size, as ratios to the empty inbox
(target: flat).

``retention`` (:func:`retention_curve`): ``hatidata inbox expire``'s service, in process, on an inbox of 10% of
``--rows`` then ``--rows`` events past a 30-day retention (plus a tenth as many recent ones, one in a thousand
failed): time per expired row as a ratio to the smaller inbox (target: flat).

``resync`` and ``claims``: ``bench/scale_resync.py`` and ``bench/scale_claims.py``.

Options: ``--events`` (3000 per point), ``--users`` (750), ``--concurrency`` (8), ``--compare-indexes`` (one more
point at the largest size with the inbox's indexes of before migration 0002 put back: their cost, before/after in
one run).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from flask import Flask
from sqlalchemy import Engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.dsync_bench import (  # noqa: E402
    CpuMeter,
    app_config,
    bench_engine,
    pct,
    private_database,
    seconds_until_drained,
    send_all,
    server_env,
    start_server,
    stop_server,
    user_payload,
)
from bench.options import add_duration  # noqa: E402
from workos_emulator.testing import EmulatorServer  # noqa: E402

# Events about as large as a real dsync.user.updated one (~700 bytes of JSON), received *age_days* ago, settled
# (one in a thousand failed).
FILL_SQL = """
INSERT INTO webhook_events (event_id, event_type, organization_id, payload, event_created_at, received_at, status,
                            source, attempts, applied_at, created_at, updated_at)
SELECT 'event_fill_' || g, 'dsync.user.updated', NULL,
       json_build_object('id', 'event_fill_' || g, 'event', 'dsync.user.updated',
                         'created_at', '2029-01-01T00:00:00.000Z',
                         'data', json_build_object('object', 'directory_user', 'id', 'directory_user_fill_' || g,
                                                   'directory_id', 'directory_fill', 'organization_id', 'org_fill',
                                                   'email', 'fill' || g || '@fill.test', 'first_name', 'Fill',
                                                   'last_name', repeat('x', 300), 'state', 'active',
                                                   'custom_attributes', json_build_object())),
       now() - make_interval(days => :age_days), now() - make_interval(days => :age_days),
       CASE WHEN g % 1000 = 0 THEN 'failed' ELSE 'applied' END, 'webhook', 1, now() - make_interval(days => :age_days),
       now() - make_interval(days => :age_days), now() - make_interval(days => :age_days)
FROM generate_series(CAST(:start AS bigint), CAST(:stop AS bigint)) AS g
"""


@dataclass(frozen=True, slots=True)
class CurvePoint:
    """One point of a curve: the work size and the figures measured at it."""

    size: int
    acknowledged: float  # events/s
    applied: float  # events/s
    p99_ms: float
    app_cpu_ms: float  # per event, gunicorn workers
    db_cpu_ms: float  # per event, database backends
    label: str = ""


def _bodies(phase: int, events: int, users: int) -> list[str]:
    """The same mix for every point, for users no other point touches."""
    per_user = max(1, events // users)
    payloads = [user_payload(phase * 100_000 + n, v) for n in range(users) for v in range(per_user)]
    bodies = [json.dumps(p, separators=(",", ":")) for p in payloads]
    bodies += random.sample(bodies, len(bodies) // 10)
    random.shuffle(bodies)
    return bodies


# The inbox's full indexes of before migration 0002 (the last point of ``--compare-indexes`` puts them back beside
# the partial ones).
OLD_INDEXES = ("CREATE INDEX ix_webhook_events_event_type ON webhook_events (event_type)",
               "CREATE INDEX ix_webhook_events_organization_id ON webhook_events (organization_id)",
               "CREATE INDEX ix_webhook_events_status ON webhook_events (status)")


def webhook_curve(database_url: str, emulator_url: str, instance: Path, sizes: list[int], *, events: int,
                  users: int, concurrency: int, compare_indexes: bool = False,
                  seconds: float | None = None) -> list[CurvePoint]:
    """Events/s of the app at each inbox size in *sizes* (ascending; the inbox is filled up to each in turn);
    with *compare_indexes*, one more point at the last size with the inbox's indexes of before migration 0002."""
    engine = bench_engine(database_url)
    env = server_env(database_url, emulator_url, instance)
    port = int(env["PORT"])
    server = start_server("wsgi:app", env)
    points: list[CurvePoint] = []
    filled = 0
    try:
        send_all(port, _bodies(99, 300, 100), concurrency)  # warm-up: connections, caches, the organization
        seconds_until_drained(engine, time.perf_counter())
        settle(engine)
        for phase, size in enumerate(sizes):
            if size > filled:
                started = time.perf_counter()
                fill(engine, filled + 1, size, age_days=1)
                print(f"  (inbox filled to {size:,} settled rows in {time.perf_counter() - started:.1f}s)")
                filled = size
            points.append(_measure(engine, server.pid, port, _bodies(phase, events, users), concurrency, size,
                                   seconds=seconds))
        if compare_indexes:
            with engine.begin() as conn:
                for statement in OLD_INDEXES:
                    conn.execute(text(statement))
            points.append(_measure(engine, server.pid, port, _bodies(len(sizes), events, users), concurrency, filled,
                                   "the indexes before 0002", seconds=seconds))
    finally:
        stop_server(server)
        engine.dispose()
    return points


def fill(engine: Engine, start: int, stop: int, *, age_days: int) -> None:
    """Insert the events ``event_fill_<start>`` to ``event_fill_<stop>`` (:data:`FILL_SQL`), then :func:`settle`:
    the fill writes gigabytes at 10M rows, and the checkpoint that flushes them otherwise ran through the next
    measure (found writing in 32 of 40 samples of it), which then measured the fill as well as the inbox's size."""
    with engine.begin() as conn:
        conn.execute(text(FILL_SQL), {"start": start, "stop": stop, "age_days": age_days})
    settle(engine)


def settle(engine: Engine) -> None:
    """``VACUUM ANALYZE`` the inbox and ``CHECKPOINT``: every point of the curve is measured from that state, the
    empty inbox too (after the warm-up), so that no point alone runs without the inbox's statistics."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE webhook_events"))
        conn.execute(text("CHECKPOINT"))


def retention_curve(app: Flask, sizes: list[int]) -> list[tuple[int, int, float]]:
    """``hatidata inbox expire``'s cost per expired row by inbox size: for each size, an inbox of that many events
    40 days old plus a tenth as many from yesterday, expired with a 30-day retention; returns (size, deleted,
    seconds) per size."""
    from hatidata_auth.causes import Cause
    from hatidata_auth.extensions import db
    from hatidata_auth.services.inbox_retention import expire

    points = []
    with app.app_context():
        engine = db.engine
        for size in sizes:
            with engine.begin() as conn:
                conn.execute(text("DELETE FROM webhook_events"))
            fill(engine, 1, size, age_days=40)
            fill(engine, size + 1, size + size // 10, age_days=1)
            started = time.perf_counter()
            report = expire(db.session(), retention_days=30, cause=Cause.system("bench"))
            points.append((size, report.deleted, time.perf_counter() - started))
            db.session.remove()
    return points


def _measure(engine: Engine, server_pid: int, port: int, bodies: list[str], concurrency: int, size: int,
             label: str = "", seconds: float | None = None) -> CurvePoint:
    meter = CpuMeter(server_pid, engine)
    started = time.perf_counter()
    elapsed, latencies, statuses = send_all(port, bodies, concurrency, seconds=seconds)
    applied_seconds = max(seconds_until_drained(engine, started), elapsed)
    app_cpu, db_cpu = meter.used()
    assert set(statuses) == {200}, statuses
    n = len(latencies)
    return CurvePoint(size, n / elapsed, n / applied_seconds, pct(latencies, .99), 1000 * app_cpu / n,
                      1000 * db_cpu / n, label)


def print_curve(title: str, points: list[CurvePoint]) -> None:
    """Each point as ratios to the first one (the absolute figures beside them). Throughput drifts with the load
    of other jobs on the machine; CPU per event (app + database) is the steadier measure of the work."""
    first = points[0]
    first_cpu = first.app_cpu_ms + first.db_cpu_ms
    print(title)
    for p in points:
        print(f"  {p.size:>10,} rows: acknowledged {p.acknowledged / first.acknowledged:5.2f}, applied "
              f"{p.applied / first.applied:5.2f}, CPU per event {(p.app_cpu_ms + p.db_cpu_ms) / first_cpu:5.2f} of "
              f"the empty inbox  ({p.acknowledged:.0f} / {p.applied:.0f} events/s, p99 {p.p99_ms:.0f} ms, "
              f"{p.app_cpu_ms:.2f} + {p.db_cpu_ms:.2f} ms CPU) {p.label}")


def build_parser() -> argparse.ArgumentParser:
    """The options (``BENCH_ARGS``), with ``--duration`` common to every benchmark (``bench/options.py``)."""
    parser = argparse.ArgumentParser(prog="bench.scale")
    add_duration(parser, "webhooks: seconds each point sends for at most (default: every event)")
    parser.add_argument("--curve", choices=["webhooks", "retention", "resync", "claims"], action="append",
                        help="curves to measure (repeatable; default: all)")
    parser.add_argument("--large", action="store_true",
                        help="fill the inbox to 1,000,000 rows (default 100,000); resync: also 30,000 users")
    parser.add_argument("--rows", type=int, help="fill the inbox to this many rows (overrides --large)")
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--users", type=int, default=750)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--compare-indexes", action="store_true",
                        help="webhooks: one more point at the largest size with the indexes of before migration 0002")
    parser.add_argument("--sizes", default="2000,10000", help="resync: directory sizes in users")
    parser.add_argument("--baseline", help="resync, claims: a checkout of other code to measure in the same run")
    parser.add_argument("--analyze", choices=["both", "with", "without"], default="both",
                        help="resync, claims: with and/or without ANALYZE before it")
    parser.add_argument("--backlog", type=int, default=100_000, help="claims: the large pending backlog")
    parser.add_argument("--applied", type=int, default=1_000_000,
                        help="claims: settled rows beside the backlog at the last points (0: none)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    curves = args.curve or ["webhooks", "retention", "resync", "claims"]
    modes = {"both": [False, True], "with": [True], "without": [False]}[args.analyze]
    if "resync" in curves:
        from bench.scale_resync import resync_curve

        resync_curve([int(x) for x in args.sizes.split(",")] + ([30_000] if args.large else []),
                     baseline=args.baseline, modes=modes)
    if "claims" in curves:
        from bench.scale_claims import claims_curve

        claims_curve(backlog=args.backlog, applied=args.applied, baseline=args.baseline, modes=modes)
    if not {"webhooks", "retention"} & set(curves):
        return
    base = os.environ.get("BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

    from flask_migrate import upgrade

    from hatidata_auth import create_app
    from hatidata_auth.causes import Actor
    from hatidata_auth.extensions import db
    from hatidata_auth.services.organizations import sync_from_workos

    with tempfile.TemporaryDirectory() as tmp, private_database(base) as database_url, \
            EmulatorServer(data_dir=tmp) as emulator:
        instance = Path(tmp) / "instance"
        os.environ["HATIDATA_INSTANCE_PATH"] = str(instance)
        app = create_app(app_config(database_url, emulator.url))
        with app.app_context():
            upgrade()
            sync_from_workos(db.session(), app.extensions["hatidata_workos"].client, Actor.system("bench"))
            db.session.commit()
            db.engine.dispose()
        if "webhooks" in curves:
            rows = args.rows or (1_000_000 if args.large else 100_000)
            points = webhook_curve(database_url, emulator.url, instance, [0, rows // 10, rows], events=args.events,
                                   users=args.users, concurrency=args.concurrency,
                                   compare_indexes=args.compare_indexes, seconds=args.duration)
            print_curve(f"[webhooks vs inbox size] {args.events} events per point (10% duplicates, "
                        f"{args.concurrency} clients, 2 gunicorn workers)", points)
        if "retention" in curves:
            rows = args.rows or (1_000_000 if args.large else 100_000)
            expiries = retention_curve(app, [rows // 10, rows])
            first_cost = expiries[0][2] / max(1, expiries[0][1])
            print("[inbox expire vs inbox size] 30-day retention; time per expired row, ratio to the smaller inbox")
            for size, deleted, seconds in expiries:
                print(f"  {size:>10,} old rows: {seconds / max(1, deleted) / first_cost:5.2f}  ({deleted:,} deleted "
                      f"in {seconds:.1f}s)")


if __name__ == "__main__":
    main()
