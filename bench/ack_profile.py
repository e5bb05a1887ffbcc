"""Where the acknowledge path's time goes (not a timed test): ``.venv/bin/python -m bench.ack_profile [--events N]``.

In one process, with Flask's test client (no HTTP server, no other process): signed ``dsync.user.*`` events posted
to the minimal pipeline (``bench/minimal_pipeline.py``) and to our ``POST /webhooks/workos`` with the appliers
off, on the same private PostgreSQL database (``BENCH_DATABASE_URL``). Prints the CPU seconds per request of each
(``time.process_time``: this process's CPU, what a gunicorn worker spends), their ratio measured in the same run,
and the app's top functions by cumulative CPU time under ``cProfile`` (``--top``; ``--save FILE`` also writes the
profile in ``pstats`` format, to read with ``pstats.Stats(FILE).print_callees(...)``).

``--apply``: the appliers instead (issue #14). The events are posted with the appliers off, then drained in this
process by ``inbox_worker.drain`` (batches of ``--batch`` events), first as ``dsync.user.created`` of new users, then
as ``dsync.user.updated`` of the same users; prints the applier's CPU seconds and SQL statements per applied event
of each (the statements do not depend on the machine's load), the CPU as a ratio
to the minimal pipeline's CPU per request measured in the same round (the minimal pipeline does all of its work
per request; ``minimal/applier`` is the applied events/s one core sustains relative to it), and the profile of a
drain of created events (``--profiled updated``: of their updates).

``--deactivate``: the request that deprovisions (issue #14). Users are created and applied, each given a live
session, then deactivated (``dsync.user.updated``, ``state: inactive``) with the appliers off, so each request
applies its event before it answers (``inbox_runtime.acknowledged``); prints the CPU seconds and SQL statements per
deactivating request as a ratio to an update's acknowledgement measured in the same round, and the profile of a
round of deactivations.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask_migrate import upgrade
from sqlalchemy import create_engine
from sqlalchemy import event as sa_event

from bench import minimal_pipeline
from bench.dsync_bench import ACME_ORG, SECRET, app_config, private_database, user_payload
from bench.options import add_duration
from hatidata_auth import create_app
from hatidata_auth.causes import Actor
from hatidata_auth.extensions import db
from hatidata_auth.models import AuthSession, Organization, User, utcnow
from hatidata_auth.services import inbox_worker
from hatidata_auth.services.organizations import sync_from_workos
from tests.support.dsync import sign
from workos_emulator.testing import EmulatorServer


def _bodies(count: int, offset: int, version: int = 0, state: str = "active") -> list[str]:
    return [json.dumps(user_payload(offset + n, version, state), separators=(",", ":")) for n in range(count)]


class _Statements:
    """Counts every execution sent through *engine* while entered (an ``executemany`` counting once)."""

    def __init__(self, engine: Any) -> None:
        self.engine, self.count = engine, 0

    def _seen(self, *_args: Any) -> None:
        self.count += 1

    def __enter__(self) -> _Statements:
        sa_event.listen(self.engine, "before_cursor_execute", self._seen)
        return self

    def __exit__(self, *_exc: object) -> None:
        sa_event.remove(self.engine, "before_cursor_execute", self._seen)


def _post_all(client: Any, bodies: list[str], duration: float | None = None) -> float:
    """CPU seconds per request for posting *bodies* (each must be acknowledged), for at most *duration* seconds."""
    start, deadline, sent = time.process_time(), time.monotonic() + (duration or float("inf")), 0
    for body in bodies:
        response = client.post("/webhooks/workos", data=body, headers={
            "WorkOS-Signature": sign(SECRET, body), "Content-Type": "application/json"})
        assert response.status_code == 200, response.get_data(as_text=True)
        sent += 1
        if time.monotonic() > deadline:
            break
    return (time.process_time() - start) / sent


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's options."""
    parser = argparse.ArgumentParser(prog="bench.ack_profile")
    parser.add_argument("--events", type=int, default=1500, help="events per measured round (3 rounds each)")
    parser.add_argument("--top", type=int, default=30, help="functions listed from the profile")
    add_duration(parser, "seconds each measured round (and the profiled one) posts for at most")
    parser.add_argument("--apply", action="store_true", help="profile the appliers (drain) instead of the webhook")
    parser.add_argument("--deactivate", action="store_true",
                        help="profile deactivations applied in their requests instead")
    parser.add_argument("--batch", type=int, default=inbox_worker.DEFAULT_BATCH, help="events per applier batch")
    parser.add_argument("--profiled", choices=("created", "updated"), default="created",
                        help="with --apply: the drain profiled (created users, or updates of stored ones)")
    parser.add_argument("--save", metavar="FILE", help="also write the profile to FILE (pstats format)")
    return parser


def _drain(app: Any, ours: Any, bodies: list[str], batch: int,
           profiler: cProfile.Profile | None = None) -> tuple[float, float]:
    """Post *bodies* (appliers off), then apply them all in this process; CPU seconds and SQL statements (every
    execution sent to the database, an ``executemany`` counting once) per applied event."""
    _post_all(ours, bodies)
    with app.app_context():
        client = app.extensions["hatidata_workos"].client
        with _Statements(db.engine) as statements:
            start = time.process_time()
            if profiler is not None:
                profiler.enable()
            applied = inbox_worker.drain(db.session(), client, limit=batch)
            if profiler is not None:
                profiler.disable()
            cpu = time.process_time() - start
        db.session.remove()
    assert applied == len(bodies), f"applied {applied} of {len(bodies)} events"
    return cpu / applied, statements.count / applied


def _with_sessions(app: Any, offset: int, count: int) -> None:
    """Give each of the users ``offset … offset + count - 1`` (created and applied) one live session."""
    with app.app_context():
        emails = [f"bench{offset + n}@acme.test" for n in range(count)]
        users = db.session.query(User).filter(User.email.in_(emails)).all()
        assert len(users) == count, f"{len(users)} of {count} users applied"
        organization_id = db.session.query(Organization.id).filter_by(workos_organization_id=ACME_ORG).scalar()
        for user in users:
            db.session.add(AuthSession(organization_id=organization_id, workos_session_id=f"session_{user.id}",
                                       user_id=user.id, expires_at=utcnow() + timedelta(hours=1)))
        db.session.commit()
        db.session.remove()


def _deactivate(app: Any, ours: Any, offset: int, count: int,
                profiler: cProfile.Profile | None = None) -> tuple[float, float]:
    """CPU seconds and statements per request deactivating the users ``offset …`` (each holding a session),
    applied in their requests (the appliers are off); checks that every session was revoked."""
    with app.app_context(), _Statements(db.engine) as statements:
        if profiler is not None:
            profiler.enable()
        cpu = _post_all(ours, _bodies(count, offset, version=2, state="inactive"))
        if profiler is not None:
            profiler.disable()
    with app.app_context():
        live = db.session.query(AuthSession).join(User, User.id == AuthSession.user_id).filter(
            User.email.in_([f"bench{offset + n}@acme.test" for n in range(count)]),
            AuthSession.revoked_at.is_(None)).count()
        db.session.remove()
    assert live == 0, f"{live} sessions left live: not applied in the request"
    return cpu, statements.count / count


def _drain_all(app: Any, batch: int) -> tuple[float, int, int]:
    """Apply every due event and job (the deactivations' WorkOS revocations too); CPU seconds of this process (the
    bundled emulator's answers to WorkOS's calls included), statements and batches it took."""
    with app.app_context(), _Statements(db.engine) as statements:
        start, batches = time.process_time(), 0
        while inbox_worker.apply_batch(db.session(), app.extensions["hatidata_workos"].client, limit=batch).claimed:
            batches += 1
        cpu = time.process_time() - start
        db.session.remove()
    return cpu, statements.count, batches


def _deactivate_rounds(app: Any, ours: Any, args: argparse.Namespace) -> cProfile.Profile:
    n, offset = args.events, 0
    profiler = cProfile.Profile(time.process_time)
    for r in range(4):  # the first warms (statements compiled, caches filled); the last is profiled
        _post_all(ours, _bodies(n, offset))
        _drain_all(app, args.batch)
        _with_sessions(app, offset, n)
        updated = _post_all(ours, _bodies(n, offset, version=1))  # acknowledged only: the appliers are off
        _drain_all(app, args.batch)
        cpu, statements = _deactivate(app, ours, offset, n, profiler if r == 3 else None)
        jobs_cpu, jobs_sql, batches = _drain_all(app, args.batch)
        if r:
            print(f"round {r}: update acknowledged {updated * 1e3:.3f} ms CPU/request; deactivation applied in its "
                  f"request {cpu * 1e3:.3f} ms ({cpu / updated:.1f}x, {statements:.1f} statements/request); the "
                  f"jobs it queued: {jobs_cpu / n * 1e3:.3f} ms CPU per deactivation ({jobs_cpu / n / updated:.1f}x, "
                  f"{jobs_sql / n:.1f} statements, {batches / n:.2f} batches)", flush=True)
        offset += n
    return profiler


def _apply_rounds(app: Any, minimal: Any, ours: Any, args: argparse.Namespace) -> cProfile.Profile:
    n = args.events
    _drain(app, ours, _bodies(min(200, n), 900_000), args.batch)  # warm: statements compiled, caches filled
    for r in range(3):  # interleaved with the baseline, against the drift of a shared machine
        base = _post_all(minimal, _bodies(n, 600_000 + r * n), args.duration)
        created, created_sql = _drain(app, ours, _bodies(n, r * n), args.batch)
        updated, updated_sql = _drain(app, ours, _bodies(n, r * n, version=1), args.batch)
        print(f"round {r}: minimal {base * 1e3:.3f} ms CPU/request; applier created {created * 1e3:.3f} ms CPU/event "
              f"(minimal/applier {base / created:.2f}, {created_sql:.2f} statements/event), updated "
              f"{updated * 1e3:.3f} ms (minimal/applier {base / updated:.2f}, {updated_sql:.2f} statements/event)",
              flush=True)
    profiler = cProfile.Profile(time.process_time)
    if args.profiled == "updated":
        _drain(app, ours, _bodies(n, 500_000), args.batch)
    _drain(app, ours, _bodies(n, 500_000, version=int(args.profiled == "updated")), args.batch, profiler)
    return profiler


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    url = os.environ.get("BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    with tempfile.TemporaryDirectory() as tmp, private_database(url) as database_url, \
            EmulatorServer(data_dir=tmp) as emulator:
        os.environ["HATIDATA_INSTANCE_PATH"] = str(Path(tmp) / "instance")
        engine = create_engine(database_url)
        minimal_pipeline.create_tables(engine)
        engine.dispose()
        minimal = minimal_pipeline.create_app(database_url, SECRET).test_client()
        app = create_app({**app_config(database_url, emulator.url), "HATIDATA_INBOX_APPLIERS": 0,
                          "HATIDATA_AUDIT_WORKER": 0})  # its passes are not what is measured
        with app.app_context():
            upgrade()
            sync_from_workos(db.session(), app.extensions["hatidata_workos"].client, Actor.system("bench"))
            db.session.remove()
        ours = app.test_client()
        warm = min(200, args.events)
        _post_all(minimal, _bodies(warm, 900_000))
        if args.deactivate:
            profiler = _deactivate_rounds(app, ours, args)
        elif args.apply:
            profiler = _apply_rounds(app, minimal, ours, args)
        else:
            profiler = _ack_rounds(minimal, ours, args)
        if args.save:
            profiler.dump_stats(args.save)
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(args.top)
        print(out.getvalue())


def _ack_rounds(minimal: Any, ours: Any, args: argparse.Namespace) -> cProfile.Profile:
    _post_all(ours, _bodies(min(200, args.events), 900_000))
    for r in range(3):  # interleaved, against the drift of a shared machine
        base = _post_all(minimal, _bodies(args.events, r * args.events), args.duration)
        mine = _post_all(ours, _bodies(args.events, r * args.events), args.duration)
        print(f"round {r}: minimal {base * 1e3:.3f} ms CPU/request, ours {mine * 1e3:.3f} ms; "
              f"ours/minimal CPU {mine / base:.2f} (throughput ratio {base / mine:.2f})")
    profiler = cProfile.Profile(time.process_time)  # CPU time: a wait for PostgreSQL costs the worker none
    bodies = _bodies(args.events, 500_000)
    profiler.enable()
    _post_all(ours, bodies, args.duration)
    profiler.disable()
    return profiler


if __name__ == "__main__":
    main()
