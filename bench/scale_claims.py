"""The ``claims`` curve of ``bench/scale.py`` (not a timed test): ``.venv/bin/python -m bench.scale --curve claims``.

What one applier claim costs as the inbox grows: milliseconds per :func:`~hatidata_auth.services.inbox_worker.claim`
of a batch (20 events, rolled back so that every claim sees the same backlog; the fastest of 15), of the
deprovisioning thread's ``revoking_only`` claim and of ``apply_entity_now``'s ``entity_key`` claim, with a
pending backlog of 1,000 then ``--backlog`` (100,000) events, each with no settled row and then with ``--applied``
(1,000,000) settled rows beside it, printed as ratios to the 1,000-event point of the same run (target: flat).

The pending events: five per entity key (``user:…``), event times shuffled against arrival, one in two hundred
revoking access, one in a hundred waiting after a transient failure (which holds its key back). Seeded with one
``INSERT … SELECT generate_series`` per step, in a private database per code and mode (``BENCH_DATABASE_URL``,
default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``), with autovacuum off on the inbox: ``--analyze
without`` measures plans made with no statistics (a fresh database), ``with`` after ``ANALYZE``. ``--baseline DIR``
(a checkout of another revision, e.g. ``git archive main | tar -x -C /tmp/main-code``) measures its code too, in
the same run, each measurement in a child process importing the code under test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
BATCH = 20
REPEAT = 15

PENDING_SQL = """
INSERT INTO webhook_events (event_id, event_type, organization_id, payload, event_created_at, received_at, status,
                            source, attempts, last_error, entity_key, revokes, created_at, updated_at)
SELECT 'event_pending_' || g, 'dsync.user.updated', NULL,
       json_build_object('id', 'event_pending_' || g, 'event', 'dsync.user.updated',
                         'data', json_build_object('object', 'directory_user', 'id', 'directory_user_' || g / 5)),
       timestamptz '2030-01-01 00:00:00+00' + make_interval(secs => (g * 7919) % 1000003 / 1000.0),
       now(), 'received', 'webhook', CASE WHEN g % 100 = 0 THEN 1 ELSE 0 END,
       CASE WHEN g % 100 = 0 THEN 'WorkOSUnavailable: bench' END, 'user:bench_' || g / 5, g % 200 = 7, now(), now()
FROM generate_series(CAST(:start AS bigint), CAST(:stop AS bigint)) AS g
"""

APPLIED_SQL = """
INSERT INTO webhook_events (event_id, event_type, organization_id, payload, event_created_at, received_at, status,
                            source, attempts, entity_key, revokes, applied_at, created_at, updated_at)
SELECT 'event_settled_' || g, 'dsync.user.updated', NULL, CAST('{"event": "dsync.user.updated"}' AS json),
       now() - interval '1 day', now() - interval '1 day', 'applied', 'webhook', 1, 'user:settled_' || g / 5, false,
       now() - interval '1 day', now() - interval '1 day', now() - interval '1 day'
FROM generate_series(1, CAST(:stop AS bigint)) AS g
"""


def _timed(run: Any) -> float:
    """Fastest milliseconds of *run* over :data:`REPEAT` calls, after two warm-up calls: on a machine other jobs
    share, waiting for a core only adds, so the fastest call is the steadiest measure of the claim's own work."""
    for _ in range(2):
        run()
    samples = []
    for _ in range(REPEAT):
        started = time.perf_counter()
        run()
        samples.append(1000 * (time.perf_counter() - started))
    return min(samples)


def child(root: Path, backlog: int, applied: int, analyze: bool) -> list[dict[str, Any]]:
    """The curve's points measured with the code under *root*, in one private database."""
    sys.path.insert(0, str(root))
    os.chdir(root)  # Flask-Migrate finds ./migrations
    from sqlalchemy import text

    from bench.dsync_bench import private_database
    from hatidata_auth import create_app
    from hatidata_auth.extensions import db
    from hatidata_auth.services.inbox_worker import claim

    base = os.environ.get("BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    points = []
    with private_database(base) as url:
        from flask_migrate import upgrade

        app = create_app({"SQLALCHEMY_DATABASE_URI": url, "WORKOS_BASE_URL": "http://127.0.0.1:9",
                          "WORKOS_WEBHOOK_SECRET": "whsec_bench_secret_value_0123456789",
                          "HATIDATA_ENV": "development", "HATIDATA_INBOX_APPLIERS": 0})
        with app.app_context():
            upgrade()
            session = db.session()
            session.execute(text("ALTER TABLE webhook_events SET (autovacuum_enabled = false)"))
            session.commit()

            def settle() -> None:
                session.commit()
                with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                    conn.execute(text("VACUUM ANALYZE webhook_events" if analyze else "VACUUM webhook_events"))

            def measure(pending: int, settled: int) -> None:
                def batch() -> None:
                    assert claim(session, BATCH), "nothing to claim"
                    session.rollback()

                def revoking() -> None:
                    claim(session, BATCH, revoking_only=True)
                    session.rollback()

                def entity() -> None:
                    claim(session, 1, entity_key=f"user:bench_{pending // 10}")
                    session.rollback()

                points.append({"pending": pending, "applied": settled, "batch_ms": _timed(batch),
                               "revoking_ms": _timed(revoking), "entity_ms": _timed(entity)})

            small = 1000
            session.execute(text(PENDING_SQL), {"start": 1, "stop": small})
            settle()
            measure(small, 0)
            session.execute(text(PENDING_SQL), {"start": small + 1, "stop": backlog})
            settle()
            measure(backlog, 0)
            if applied:
                session.execute(text(APPLIED_SQL), {"stop": applied})
                settle()
                measure(backlog, applied)
                session.execute(text("DELETE FROM webhook_events WHERE event_id LIKE 'event_pending_%' "
                                     "AND CAST(substr(event_id, 15) AS bigint) > :small"), {"small": small})
                settle()
                measure(small, applied)
            session.close()
            db.engine.dispose()
    return points


def run_child(root: Path, backlog: int, applied: int, analyze: bool) -> list[dict[str, Any]]:
    """Run :func:`child` in a fresh interpreter; returns its points."""
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(root), str(backlog),
                          str(applied), "1" if analyze else "0"], capture_output=True, text=True, cwd=root,
                         check=False)
    lines = [x for x in out.stdout.splitlines() if x.startswith("CLAIMS ")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"measurement failed ({root}, analyze={analyze}):\n{out.stderr[-4000:]}")
    points: list[dict[str, Any]] = json.loads(lines[-1][len("CLAIMS "):])
    return points


def claims_curve(*, backlog: int, applied: int, baseline: str | None, modes: list[bool]) -> None:
    """Measure and print the curve for this checkout and, if given, the *baseline* checkout, in each of *modes*
    (with ``ANALYZE`` or not)."""
    roots = [("after", HERE)] + ([("before", Path(baseline).resolve())] if baseline else [])
    for analyze in modes:
        print(f"[claims vs backlog] {'with' if analyze else 'without'} ANALYZE; ms per claim (fastest of {REPEAT}) "
              f"(batch of {BATCH}, revoking_only, entity_key) as ratios to 1,000 pending and no settled row")
        results = {}
        for label, root in roots:
            points = results[label] = run_child(root, backlog, applied, analyze)
            first = points[0]
            for p in points:
                print(f"  {label:6} {p['pending']:>8,} pending {p['applied']:>9,} settled: batch "
                      f"{p['batch_ms'] / first['batch_ms']:7.2f}, revoking "
                      f"{p['revoking_ms'] / first['revoking_ms']:7.2f}, entity "
                      f"{p['entity_ms'] / first['entity_ms']:6.2f}  ({p['batch_ms']:.2f} / "
                      f"{p['revoking_ms']:.2f} / {p['entity_ms']:.2f} ms)", flush=True)
        if "before" in results:
            for after, before in zip(results["after"], results["before"], strict=True):
                print(f"  after/before at {after['pending']:,} pending, {after['applied']:,} settled: batch "
                      f"{after['batch_ms'] / before['batch_ms']:.3f}, revoking "
                      f"{after['revoking_ms'] / before['revoking_ms']:.3f}, entity "
                      f"{after['entity_ms'] / before['entity_ms']:.3f}")


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        print("CLAIMS " + json.dumps(child(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]),
                                           sys.argv[5] == "1")), flush=True)
    else:
        sys.exit("run it as: python -m bench.scale --curve claims [--backlog 100000] [--applied 1000000] "
                 "[--analyze both|with|without] [--baseline DIR]")
