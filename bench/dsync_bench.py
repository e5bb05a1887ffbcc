"""Directory-sync benchmark (not a timed test): ``.venv/bin/python -m bench.dsync_bench [--events N]``.

Needs PostgreSQL (``BENCH_DATABASE_URL``, default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``; a
private database is created next to it and dropped afterwards) and optionally Redis (``BENCH_REDIS_URL``).

0. Baselines measured in the same run, under the same gunicorn settings (2 sync workers, access log off) and on
   the same database: the load generator alone (the same signed requests as ``GET /healthz``), and the minimal
   pipeline (``bench/minimal_pipeline.py``: HMAC check + one inbox insert + one guarded upsert + one audit insert,
   the practical ceiling of a signed webhook on this machine).
1. Webhook throughput: signed ``dsync.user.*`` events for many users with 10% duplicates in shuffled order,
   sent by concurrent keep-alive clients, first to the minimal pipeline, then to the app. Reports the app's
   *acknowledged* events/s (answers received) and *applied* events/s (until the inbox is drained: no row of
   ``webhook_events`` is left outside ``applied``/``ignored``/``failed``/``duplicate``, polled every 20 ms; equal
   to acknowledged while the view applies inline) as ratios to the minimal pipeline's events/s
   (targets: >= 0.8 and >= 0.6), with p50/p99 latency.
2. Deactivation to rejection, under that load: while the app's run is in flight, a probe sends one deactivation
   at a time for a user holding a live session and polls the session row until it is revoked (the post-commit
   cache eviction in every worker is ``bench/auth.py``'s revocation figure); reports p50/p99 (target p99 <= 1 s).
3. Full resync of a 10,000-user, 200-group directory from the emulator, in process: seconds and peak
   memory (target < 60 s and < 300 MB).

Options: ``--events`` (6000), ``--users`` (1500), ``--concurrency`` (8), ``--probes`` (200 deactivations at
most), ``--rounds`` (1: more repeat the minimal-then-app pair with new events and print each round's ratios and
their median, against the drift of a shared machine), ``--resync-users``, ``--resync-groups``, ``--skip-resync``,
``--wrk``/``--wrk-seconds``, ``--trace-memory``, ``--duration`` (seconds each webhook round sends for at most),
``--fanout N`` (only the fan-out benchmark, ``bench/fanout.py``: the rename of an N-member group, acknowledged and
applied in chunks; with ``--fanout-chunk``, ``--compare-inline``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import appliers as bench_appliers  # noqa: E402
from bench.options import add_duration  # noqa: E402
from tests.support.dsync import sign  # noqa: E402
from workos_emulator.testing import EmulatorServer  # noqa: E402

SECRET = "whsec_bench_secret_value_0123456789"
ACME_DIR = "directory_01HTDQ8D100000000000000001"
ACME_ORG = "org_01HTDQ8A100000000000000001"


@contextmanager
def private_database(url: str) -> Iterator[str]:
    admin_url = make_url(url)
    name = f"hd_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def app_config(database_url: str, emulator_url: str) -> dict[str, Any]:
    config = {"SQLALCHEMY_DATABASE_URI": database_url, "WORKOS_BASE_URL": emulator_url,
              "WORKOS_WEBHOOK_SECRET": SECRET, "HATIDATA_ENV": "development"}
    if os.environ.get("BENCH_REDIS_URL"):
        config["REDIS_URL"] = os.environ["BENCH_REDIS_URL"]
    return config


def user_payload(n: int, version: int, state: str = "active") -> dict[str, Any]:
    stamp = f"2030-01-01T00:{version // 60:02d}:{version % 60:02d}.000Z"
    return {
        "id": f"event_B{n:06d}_{version:04d}", "event": "dsync.user.updated" if version else "dsync.user.created",
        "created_at": stamp,
        "data": {"object": "directory_user", "id": f"directory_user_B{n:06d}", "directory_id": ACME_DIR,
                 "organization_id": ACME_ORG, "idp_id": f"b{n}", "email": f"bench{n}@acme.test",
                 "first_name": "Bench", "last_name": f"V{version}", "state": state, "custom_attributes": {},
                 "created_at": "2030-01-01T00:00:00.000Z", "updated_at": stamp},
    }


def send_all(port: int, bodies: list[str], concurrency: int, *, path: str = "/webhooks/workos",
             seconds: float | None = None) -> tuple[float, list[float], dict[int, int]]:
    """POST every body (signed just before sending) from *concurrency* keep-alive connections; with *seconds*
    (``--duration``), stop taking new bodies once that many seconds have passed.

    With ``path="/healthz"`` the same requests (signed the same way) go as ``GET`` to the bare health route:
    the load generator's own ceiling, measured in the same run as the baseline for the webhook figure.
    """
    method = "POST" if path.startswith("/webhooks") else "GET"
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    cursor = iter(range(len(bodies)))
    deadline = None if seconds is None else time.perf_counter() + seconds

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: list[float] = []
        codes: dict[int, int] = {}
        while True:
            with lock:
                i = None if deadline is not None and time.perf_counter() >= deadline else next(cursor, None)
            if i is None:
                break
            body = bodies[i]
            started = time.perf_counter()
            conn.request(method, path, body=body if method == "POST" else None,
                         headers={"Content-Type": "application/json", "WorkOS-Signature": sign(SECRET, body)})
            response = conn.getresponse()
            response.read()
            mine.append(time.perf_counter() - started)
            codes[response.status] = codes.get(response.status, 0) + 1
        conn.close()
        with lock:
            latencies.extend(mine)
            for k, v in codes.items():
                statuses[k] = statuses.get(k, 0) + v

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started, latencies, statuses


def run_wrk(port: int, bodies: list[str], *, threads: int, connections: int, seconds: int,
            method: str = "POST", path: str = "/webhooks/workos") -> dict[str, Any]:
    """Replay *bodies*, signed now, with ``wrk`` (C, keep-alive) for *seconds*; returns its JSON summary."""
    with tempfile.NamedTemporaryFile("w", suffix=".tsv", delete=False) as handle:
        for body in bodies:
            handle.write(f"{sign(SECRET, body)}\t{body}\n")
    try:
        out = subprocess.run(
            ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--timeout", "10s",
             "-s", str(ROOT / "bench" / "presigned.lua"), f"http://127.0.0.1:{port}", "--", handle.name,
             str(threads), method, path], capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(handle.name)
    line = next(x for x in out.splitlines() if x.startswith("WRKJSON "))
    result: dict[str, Any] = json.loads(line[len("WRKJSON "):])
    result["rate"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] * 1000 if ordered else float("nan")


# Rows still to be applied: ``received``, the appliers' own definition of pending (``models.inbox``: the claim reads
# its partial indexes). Polled every 20 ms, it must not grow with the inbox: ``status NOT IN (<the settled ones>)``
# could use no index and scanned the whole table on every poll (10M rows: the poll's reads delayed the appliers and
# the drain, applied events/s 0.68-0.73 of the empty inbox with the CPU per event unchanged).
PENDING_SQL = text("SELECT 1 FROM webhook_events WHERE status = 'received' LIMIT 1")


def start_server(spec: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """gunicorn with ``config/gunicorn.conf.py`` serving *spec* on ``env["PORT"]``, once ``/healthz`` answers."""
    server = subprocess.Popen([str(ROOT / ".venv/bin/gunicorn"), "-c", "config/gunicorn.conf.py", spec],
                              cwd=ROOT, env=env)
    port = int(env["PORT"])
    deadline = time.monotonic() + 120  # a machine other jobs share can take this long
    while time.monotonic() < deadline and server.poll() is None:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", "/healthz")
            if c.getresponse().status == 200:
                return server
        except OSError:
            pass
        time.sleep(0.1)
    stop_server(server)
    raise RuntimeError(f"gunicorn serving {spec} did not start")


def stop_server(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def server_env(database_url: str, emulator_url: str, instance: Path) -> dict[str, str]:
    """The environment both servers run with (the same gunicorn settings; a fresh port each time)."""
    env = {**os.environ, "HATIDATA_ENV": "development", "DATABASE_URL": database_url,
           "WORKOS_BASE_URL": emulator_url, "WORKOS_WEBHOOK_SECRET": SECRET, "WEB_CONCURRENCY": "2",
           "PORT": str(free_port()), "GUNICORN_ACCESS_LOG": "/dev/null", "HATIDATA_INSTANCE_PATH": str(instance),
           "PROMETHEUS_MULTIPROC_DIR": str(instance / "metrics")}  # every worker's (and applier's) samples at once
    if os.environ.get("BENCH_REDIS_URL"):
        env["REDIS_URL"] = os.environ["BENCH_REDIS_URL"]
    return env


def batches(port: int) -> tuple[float, float]:
    """The appliers' batches so far (``hatidata_inbox_batch_events`` of the batch threads, all processes): (events,
    batches)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/metrics")
    values = {"sum": 0.0, "count": 0.0}
    for line in c.getresponse().read().decode().splitlines():
        for part in values:
            if line.startswith(f'hatidata_inbox_batch_events_{part}{{thread="batch"}}'):
                values[part] += float(line.rsplit(" ", 1)[1])
    return values["sum"], values["count"]


def batch_figure(before: tuple[float, float], after: tuple[float, float]) -> str:
    """The mean batch between two :func:`batches` readings, as printed."""
    events, count = after[0] - before[0], after[1] - before[1]
    return f"{events / count:.1f} events per batch ({count:.0f} batches)" if count else "no batch"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def seconds_until_drained(engine: Engine, since: float, timeout: float = 600.0) -> float:
    """Seconds from *since* (a ``perf_counter``) until no inbox row is pending (polled every 20 ms)."""
    deadline = time.perf_counter() + timeout
    with engine.connect() as conn:
        while time.perf_counter() < deadline:
            if conn.execute(PENDING_SQL).first() is None:
                return time.perf_counter() - since
            conn.rollback()
            time.sleep(0.02)
    raise RuntimeError(f"the inbox did not drain within {timeout:.0f} s")


class DeactivationProbe(threading.Thread):
    """Sends one deactivation at a time (while *running* is set) and times it until the session row is revoked."""

    def __init__(self, port: int, engine: Engine, targets: list[tuple[int, str]]) -> None:
        super().__init__(daemon=True)
        self.port, self.engine, self.targets = port, engine, targets
        self.running = threading.Event()
        self.running.set()
        self.delays: list[float] = []
        self.statuses: dict[int, int] = {}

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        check = text("SELECT revoked_at IS NOT NULL FROM auth_sessions WHERE workos_session_id = :sid")
        with self.engine.connect() as db_conn:
            for n, session_id in self.targets:
                if not self.running.is_set():
                    break
                body = json.dumps(user_payload(n, 3000, "inactive"), separators=(",", ":"))
                started = time.perf_counter()
                conn.request("POST", "/webhooks/workos", body=body,
                             headers={"Content-Type": "application/json", "WorkOS-Signature": sign(SECRET, body)})
                response = conn.getresponse()
                response.read()
                self.statuses[response.status] = self.statuses.get(response.status, 0) + 1
                while time.perf_counter() - started < 10:
                    revoked = db_conn.execute(check, {"sid": session_id}).scalar()
                    db_conn.rollback()
                    if revoked:
                        self.delays.append(time.perf_counter() - started)
                        break
                    time.sleep(0.005)
                else:
                    self.delays.append(float("inf"))
                time.sleep(0.02)
        conn.close()


BENCH_APPLICATION = "hd_bench_probe"  # the bench's own connections, left out of the database CPU


def bench_engine(database_url: str) -> Engine:
    """The bench's own connections (polling, probes), named so :class:`CpuMeter` leaves them out."""
    return create_engine(database_url, pool_size=2, connect_args={"application_name": BENCH_APPLICATION})


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds *pid* has used (``/proc/<pid>/stat``); 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds used by a gunicorn server's workers and by the database's other backends, between two reads.

    CPU per event is the figure that stays comparable on a machine other jobs share (throughput drifts with
    their load; the work done per event does not)."""

    def __init__(self, server_pid: int, engine: Engine, others: list[int] | None = None) -> None:
        self.server_pid, self.engine, self.others = server_pid, engine, others or []
        self.start = self._read()

    def _pids(self) -> tuple[list[int], list[int]]:
        children = Path(f"/proc/{self.server_pid}/task/{self.server_pid}/children")
        workers = [int(x) for x in children.read_text().split()] if children.exists() else []
        workers += self.others  # a separate applier process
        with self.engine.connect() as conn:
            backends = list(conn.execute(text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name <> :me"),
                {"me": BENCH_APPLICATION}).scalars())
        return workers, backends

    def _read(self) -> dict[tuple[str, int], float]:
        workers, backends = self._pids()
        return {**{("app", pid): cpu_seconds(pid) for pid in workers},
                **{("db", pid): cpu_seconds(pid) for pid in backends}}

    def used(self) -> tuple[float, float]:
        """(app, database) CPU seconds since the meter was made (processes started since count whole)."""
        now = self._read()
        spent = {"app": 0.0, "db": 0.0}
        for key, seconds in now.items():
            spent[key[0]] += seconds - self.start.get(key, 0.0)
        return spent["app"], spent["db"]


@dataclass(frozen=True, slots=True)
class RoundResult:
    """One server's run: events/s acknowledged and applied, CPU milliseconds per event (gunicorn workers,
    database backends), latencies (s) and statuses."""

    acknowledged: float
    applied: float
    app_cpu_ms: float
    db_cpu_ms: float
    latencies: list[float]
    statuses: dict[int, int]
    elapsed: float
    batches: str = ""


def mixed_bodies(users: int, per_user: int, offset: int = 0) -> list[str]:
    """Signed-to-be bodies: creates then updates for *users* users (ids from *offset*), 10% duplicates, shuffled."""
    events = [user_payload(offset + n, v) for n in range(users) for v in range(per_user)]
    bodies = [json.dumps(e, separators=(",", ":")) for e in events]
    bodies += random.sample(bodies, len(bodies) // 10)
    random.shuffle(bodies)
    return bodies


def one_round(spec: str, env: dict[str, str], bodies: list[str], concurrency: int, engine: Engine,
              inline: bool, seconds: float | None = None, appliers: tuple[str, int] = ("threads", 0)) -> RoundResult:
    """Serve *spec*, warm it up with the first 200 bodies, send the rest. Applied events/s wait for the inbox to
    drain unless the server applies *inline* (the minimal pipeline); *appliers*: ``(mode, niceness)``
    (``bench/appliers.py``)."""
    mode = "threads" if inline else appliers[0]
    server = start_server(spec, bench_appliers.server_env(env, mode))
    with bench_appliers.separate(env, mode, appliers[1]) as others:
        try:
            return _measure(server, env, bodies, concurrency, engine, inline, seconds, others)
        finally:
            stop_server(server)


def _measure(server: subprocess.Popen[bytes], env: dict[str, str], bodies: list[str], concurrency: int,
             engine: Engine, inline: bool, seconds: float | None, others: list[int]) -> RoundResult:
    port = int(env["PORT"])
    send_all(port, bodies[:200], concurrency)
    if not inline:
        seconds_until_drained(engine, time.perf_counter())
    meter = CpuMeter(server.pid, engine, others)
    before = (0.0, 0.0) if inline else batches(port)
    started = time.perf_counter()
    elapsed, latencies, statuses = send_all(port, bodies[200:], concurrency, seconds=seconds)
    applied = elapsed if inline else max(seconds_until_drained(engine, started), elapsed)
    app_cpu, db_cpu = meter.used()
    n = len(latencies)
    return RoundResult(n / elapsed, n / applied, 1000 * app_cpu / n, 1000 * db_cpu / n, latencies, statuses,
                       elapsed, "" if inline else batch_figure(before, batches(port)))


def build_parser() -> argparse.ArgumentParser:
    """The options (``BENCH_ARGS``), with ``--duration`` common to every benchmark (``bench/options.py``)."""
    parser = argparse.ArgumentParser(prog="bench.dsync_bench")
    add_duration(parser, "seconds each webhook round sends for at most (default: until every event is sent)")
    parser.add_argument("--events", type=int, default=6000)
    parser.add_argument("--users", type=int, default=1500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat minimal pipeline then app this often (new events each time); ratios per round")
    parser.add_argument("--resync-users", type=int, default=10000)
    parser.add_argument("--resync-groups", type=int, default=200)
    parser.add_argument("--skip-resync", action="store_true")
    parser.add_argument("--wrk", action="store_true",
                        help="also measure with wrk (pre-signed requests, 2 threads) if it is installed")
    parser.add_argument("--wrk-seconds", type=int, default=20)
    parser.add_argument("--trace-memory", action="store_true",
                        help="also trace Python allocations during the resync (slows it down several times)")
    parser.add_argument("--fanout", type=int, default=0,
                        help="run only the fan-out benchmark: a rename of a group of this many members")
    parser.add_argument("--fanout-chunk", type=int, default=None)
    parser.add_argument("--compare-inline", action="store_true",
                        help="with --fanout, also the same rename in one transaction")
    bench_appliers.add_options(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.fanout:
        from bench.fanout import run

        run(args.fanout, args.fanout_chunk, args.compare_inline)
        return
    base = os.environ.get("BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

    from flask_migrate import upgrade

    from bench.minimal_pipeline import create_tables
    from hatidata_auth import create_app
    from hatidata_auth.causes import Actor
    from hatidata_auth.extensions import db
    from hatidata_auth.idp import get_registry
    from hatidata_auth.models import AuthSession, Organization, User, utcnow
    from hatidata_auth.services import reconcile
    from hatidata_auth.services.organizations import sync_from_workos

    with tempfile.TemporaryDirectory() as tmp, private_database(base) as database_url, \
            EmulatorServer(data_dir=tmp) as emulator:
        instance = Path(tmp) / "instance"
        os.environ["HATIDATA_INSTANCE_PATH"] = str(instance)
        config = app_config(database_url, emulator.url)
        app = create_app(config)
        with app.app_context():
            upgrade()
            client = app.extensions["hatidata_workos"].client
            session = db.session()
            sync_from_workos(session, client, Actor.system("bench"))
            for report in reconcile.resync_all(session, client):
                reconcile.ensure_demo_mappings(session, client, organization_id=report.organization_id,
                                               actor=Actor.system("bench"), plugins=get_registry(app))
                db.session.commit()
            acme_id = db.session.query(Organization.id).filter_by(workos_organization_id=ACME_ORG).scalar()
        probe_engine = bench_engine(database_url)
        create_tables(probe_engine)

        # The same bodies for both servers (each has its own inbox): creates then updates for many users,
        # 10% duplicates, shuffled.
        per_user = max(1, args.events // args.users)
        bodies = mixed_bodies(args.users, per_user)

        # 0. the minimal pipeline: the physical baseline.
        minimal = one_round("bench.minimal_pipeline:app", server_env(database_url, emulator.url, instance), bodies,
                            args.concurrency, probe_engine, inline=True, seconds=args.duration)
        min_rate = minimal.acknowledged
        print(f"[minimal pipeline] {len(minimal.latencies)} events in {minimal.elapsed:.2f}s = {min_rate:.0f} "
              f"events/s; p50 {pct(minimal.latencies, .5):.1f} ms, p99 {pct(minimal.latencies, .99):.1f} ms; "
              f"CPU per event {minimal.app_cpu_ms:.2f} ms app + {minimal.db_cpu_ms:.2f} ms database; "
              f"statuses {minimal.statuses}")

        env = server_env(database_url, emulator.url, instance)
        port = int(env["PORT"])
        server = start_server("wsgi:app", bench_appliers.server_env(env, args.appliers))
        separate = bench_appliers.separate(env, args.appliers, args.applier_nice)
        others = separate.__enter__()
        try:
            # 0b. the generator alone: the same signed requests against the app's bare health route.
            base_elapsed, base_lat, base_status = send_all(port, bodies[:3000], args.concurrency, path="/healthz")
            base_rate = len(base_lat) / base_elapsed
            print(f"[generator] {len(base_lat)} signed GET /healthz in {base_elapsed:.2f}s = {base_rate:.0f} req/s "
                  f"({args.concurrency} keep-alive clients); p50 {pct(base_lat, .5):.1f} ms, "
                  f"p99 {pct(base_lat, .99):.1f} ms; statuses {base_status}; the minimal pipeline is "
                  f"{min_rate / base_rate:.2f} of it")

            # The probe's users (outside the load's range) exist and hold live sessions before the load starts.
            probe_users = list(range(900_000, 900_000 + args.probes))
            send_all(port, [json.dumps(user_payload(n, 0), separators=(",", ":")) for n in probe_users],
                     args.concurrency)
            seconds_until_drained(probe_engine, time.perf_counter())
            targets: list[tuple[int, str]] = []
            with app.app_context():
                by_email = {u.email: u for u in db.session.query(User).filter(
                    User.email.in_([f"bench{n}@acme.test" for n in probe_users]))}
                for n in probe_users:
                    user = by_email[f"bench{n}@acme.test"]
                    db.session.add(AuthSession(organization_id=acme_id, workos_session_id=f"session_probe_{n}",
                                               user_id=user.id, expires_at=utcnow() + timedelta(hours=1)))
                    targets.append((n, f"session_probe_{n}"))
                db.session.commit()

            # 1. throughput, with the deactivation probe running alongside.
            send_all(port, bodies[:200], args.concurrency)  # warm-up (also part of the state)
            seconds_until_drained(probe_engine, time.perf_counter())
            probe = DeactivationProbe(port, probe_engine, targets)
            meter = CpuMeter(server.pid, probe_engine, others)
            cpu_before = resource.getrusage(resource.RUSAGE_SELF)
            batches_before = batches(port)
            started = time.perf_counter()
            probe.start()
            elapsed, latencies, statuses = send_all(port, bodies[200:], args.concurrency, seconds=args.duration)
            probe.running.clear()
            applied_seconds = seconds_until_drained(probe_engine, started)
            cpu_after = resource.getrusage(resource.RUSAGE_SELF)
            probe.join()
            app_cpu, db_cpu = meter.used()
            batch_mean = batch_figure(batches_before, batches(port))
            handled = len(latencies) + len(probe.delays)
            app_cpu_ms, db_cpu_ms = 1000 * app_cpu / handled, 1000 * db_cpu / handled
            generator_cpu = (cpu_after.ru_utime - cpu_before.ru_utime + cpu_after.ru_stime - cpu_before.ru_stime)
            rate = len(latencies) / elapsed
            applied_rate = len(latencies) / max(applied_seconds, elapsed)
            print(f"[webhooks] {len(latencies)} events (10% duplicates, shuffled, {args.concurrency} clients, "
                  f"2 gunicorn workers, appliers: {args.appliers}): acknowledged in {elapsed:.2f}s = {rate:.0f} "
                  f"events/s, applied (inbox "
                  f"drained) in {applied_seconds:.2f}s = {applied_rate:.0f} events/s; p50 {pct(latencies, .5):.1f} ms, "
                  f"p99 {pct(latencies, .99):.1f} ms; statuses {statuses}; the generator used "
                  f"{100 * generator_cpu / elapsed:.0f}% of one core; appliers' batches: {batch_mean}")
            print(f"[ratios to the minimal pipeline] acknowledged {rate / min_rate:.2f} (target >= 0.80), "
                  f"applied {applied_rate / min_rate:.2f} (target >= 0.60); to the generator alone "
                  f"{rate / base_rate:.2f}")
            print(f"[CPU per event] app {app_cpu_ms:.2f} ms + database {db_cpu_ms:.2f} ms; the minimal pipeline's "
                  f"total is {(minimal.app_cpu_ms + minimal.db_cpu_ms) / (app_cpu_ms + db_cpu_ms):.2f} of ours "
                  f"(app {minimal.app_cpu_ms / app_cpu_ms:.2f}, database {minimal.db_cpu_ms / db_cpu_ms:.2f}; the "
                  f"throughput ratio a CPU-bound machine allows, steadier than events/s when other jobs share it)")
            with app.app_context():
                live = db.session.query(AuthSession).filter(AuthSession.workos_session_id.in_(
                    [sid for _, sid in targets[:len(probe.delays)]]), AuthSession.revoked_at.is_(None)).count()
            print(f"[deprovision under load] {len(probe.delays)} deactivations, one at a time during the run: "
                  f"arrival->session revoked p50 {pct(probe.delays, .5):.1f} ms, p99 {pct(probe.delays, .99):.1f} ms "
                  f"(target <= 1000 ms); sessions still live: {live}; statuses {probe.statuses}")

            if args.wrk and shutil.which("wrk"):
                # 1b. the same mix with wrk (no Python client in the way): bare route first, then webhooks
                # (new ids, so they are not all duplicates of the run above).
                wrk_events = [user_payload(n + 100_000, v) for n in range(args.users) for v in range(per_user)]
                wrk_bodies = [json.dumps(e, separators=(",", ":")) for e in wrk_events]
                wrk_bodies += random.sample(wrk_bodies, len(wrk_bodies) // 10)
                random.shuffle(wrk_bodies)
                bare = run_wrk(port, wrk_bodies[:2000], threads=2, connections=args.concurrency,
                               seconds=max(5, args.wrk_seconds // 2), method="GET", path="/healthz")
                hooks = run_wrk(port, wrk_bodies, threads=2, connections=args.concurrency, seconds=args.wrk_seconds)
                print(f"[wrk generator] GET /healthz {bare['rate']:.0f} req/s, p50 {bare['p50_us'] / 1000:.1f} ms, "
                      f"p99 {bare['p99_us'] / 1000:.1f} ms; statuses {bare['statuses']}")
                print(f"[wrk webhooks] {hooks['requests']} events in {hooks['duration_us'] / 1e6:.1f}s = "
                      f"{hooks['rate']:.0f} events/s; p50 {hooks['p50_us'] / 1000:.1f} ms, "
                      f"p99 {hooks['p99_us'] / 1000:.1f} ms; statuses {hooks['statuses']}; "
                      f"socket errors {hooks['socket_errors']}; ratio to bare {hooks['rate'] / bare['rate']:.2f}")
        finally:
            stop_server(server)
            separate.__exit__(None, None, None)

        # 1c. more rounds: the machine's other load drifts; each round is a pair measured back to back.
        ratios = [(rate / min_rate, applied_rate / min_rate,
                   (minimal.app_cpu_ms + minimal.db_cpu_ms) / (app_cpu_ms + db_cpu_ms))]
        for r in range(1, args.rounds):
            round_bodies = mixed_bodies(args.users, per_user, offset=(r + 1) * 1_000_000)
            base_round = one_round("bench.minimal_pipeline:app", server_env(database_url, emulator.url, instance),
                                   round_bodies, args.concurrency, probe_engine, inline=True, seconds=args.duration)
            ours = one_round("wsgi:app", server_env(database_url, emulator.url, instance), round_bodies,
                             args.concurrency, probe_engine, inline=False, seconds=args.duration,
                             appliers=(args.appliers, args.applier_nice))
            cpu_ratio = (base_round.app_cpu_ms + base_round.db_cpu_ms) / (ours.app_cpu_ms + ours.db_cpu_ms)
            ratios.append((ours.acknowledged / base_round.acknowledged, ours.applied / base_round.acknowledged,
                           cpu_ratio))
            print(f"[round {r + 1}] minimal {base_round.acknowledged:.0f} events/s; app acknowledged "
                  f"{ratios[-1][0]:.2f}, applied {ratios[-1][1]:.2f} of it; CPU per event: minimal's is "
                  f"{cpu_ratio:.2f} of ours ({ours.app_cpu_ms:.2f} + {ours.db_cpu_ms:.2f} ms); appliers' batches: "
                  f"{ours.batches}")
        if len(ratios) > 1:
            for i, name in enumerate(("acknowledged", "applied", "CPU per event (minimal / ours)")):
                values = sorted(r[i] for r in ratios)
                print(f"[over {len(ratios)} rounds] {name}: median {values[len(values) // 2]:.2f} "
                      f"(min {values[0]:.2f}, max {values[-1]:.2f})")
        probe_engine.dispose()

        if args.skip_resync:
            return
        # 3. full resync of a big directory.
        from tests.support.servers import http_json

        headers = {"Authorization": "Bearer sk_test_emulator"}
        groups = [{"name": f"Team {g:03d}"} for g in range(args.resync_groups)]
        status, body = http_json("POST", f"{emulator.url}/_emulator/directories/{ACME_DIR}/bulk",
                                 {"groups": groups, "users": [], "emit_events": False}, headers, timeout=600)
        assert status == 201, body
        group_ids = body["groups"]
        for start in range(0, args.resync_users, 1000):
            users_batch = [{"email": f"big{n}@acme.test", "first_name": "Big", "last_name": str(n),
                            "groups": [group_ids[n % len(group_ids)], group_ids[(n * 7) % len(group_ids)]]}
                           for n in range(start, min(start + 1000, args.resync_users))]
            status, body = http_json("POST", f"{emulator.url}/_emulator/directories/{ACME_DIR}/bulk",
                                     {"users": users_batch, "emit_events": False}, headers, timeout=600)
            assert status == 201, body
        import tracemalloc

        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if args.trace_memory:  # tracemalloc slows Python down several times: not in the timed run by default
            tracemalloc.start()
        with app.app_context():
            started = time.perf_counter()
            report = reconcile.full_resync(db.session(), app.extensions["hatidata_workos"].client,
                                           organization_id=acme_id)
            seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1] if args.trace_memory else 0
        tracemalloc.stop()
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"[resync] {report.users_seen} users, {report.groups_seen} groups in {seconds:.1f}s; "
              f"{report.differences} differences fixed; "
              + (f"peak traced Python memory {peak / 2**20:.0f} MB; " if args.trace_memory else "")
              + f"process max RSS {rss_after:.0f} MB (before {rss_before:.0f} MB; includes the in-process emulator)")
        print(json.dumps({k: v for k, v in report.to_dict().items() if k != "examples"}))


if __name__ == "__main__":
    main()
