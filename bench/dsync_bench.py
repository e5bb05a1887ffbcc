"""Directory-sync benchmark (not a timed test): ``.venv/bin/python bench/dsync_bench.py [--events N]``.

Needs PostgreSQL (``BENCH_DATABASE_URL``, default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``; a
private database is created next to it and dropped afterwards) and optionally Redis (``BENCH_REDIS_URL``).

1. Webhook throughput: gunicorn with 2 sync workers; signed ``dsync.user.*`` events for many users with 10%
   duplicates in shuffled order, sent by concurrent keep-alive clients. Reports acknowledged events/s and
   p50/p99 latency, then applied events/s (from the first request until the inbox holds nothing ``received``:
   the appliers' backlog drained), each as a ratio to the generator alone against ``/healthz``.
2. Deactivation to rejection: one deactivation webhook at a time; the time from sending it until its user's
   session row is revoked (polled every 2 ms; the cache eviction follows the same commit). Reports p50/p99,
   idle (``--deactivations``) and while a second client keeps sending webhooks (target p99 < 1 s).
3. Full resync of a 10,000-user, 200-group directory from the emulator, in process: seconds and peak
   memory (target < 60 s and < 300 MB).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

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


def send_all(port: int, bodies: list[str], concurrency: int, *,
             path: str = "/webhooks/workos") -> tuple[float, list[float], dict[int, int]]:
    """POST every body (signed just before sending) from *concurrency* keep-alive connections.

    With ``path="/healthz"`` the same requests (signed the same way) go as ``GET`` to the bare health route:
    the load generator's own ceiling, measured in the same run as the baseline for the webhook figure.
    """
    method = "POST" if path.startswith("/webhooks") else "GET"
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    cursor = iter(range(len(bodies)))

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: list[float] = []
        codes: dict[int, int] = {}
        while True:
            with lock:
                i = next(cursor, None)
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


def _received(database_url: str) -> int:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM webhook_events WHERE status = 'received'")).scalar_one())
    finally:
        engine.dispose()


def wait_drained(database_url: str, timeout: float = 600) -> float:
    """Wait until the inbox holds nothing ``received`` (the appliers caught up); returns the seconds waited."""
    started = time.perf_counter()
    while _received(database_url) and time.perf_counter() - started < timeout:
        time.sleep(0.02)
    return time.perf_counter() - started


def deactivation_latencies(port: int, database_url: str, bodies: list[str], sessions: list[str]) -> list[float]:
    """Send each deactivation alone and time it until its session row is revoked."""
    engine = create_engine(database_url)
    out: list[float] = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        with engine.connect() as db_conn:
            for body, session_id in zip(bodies, sessions, strict=True):
                started = time.perf_counter()
                conn.request("POST", "/webhooks/workos", body=body,
                             headers={"Content-Type": "application/json", "WorkOS-Signature": sign(SECRET, body)})
                conn.getresponse().read()
                while time.perf_counter() - started < 30:
                    revoked = db_conn.execute(text("SELECT revoked_at FROM auth_sessions WHERE workos_session_id = :s"),
                                              {"s": session_id}).scalar()
                    db_conn.rollback()
                    if revoked is not None:
                        break
                    time.sleep(0.002)
                out.append(time.perf_counter() - started)
    finally:
        conn.close()
        engine.dispose()
    return out


@contextmanager
def background_load(port: int, bodies: list[str], concurrency: int) -> Iterator[list[int]]:
    """Keep sending *bodies* (in a loop) from *concurrency* clients while the block runs; yields the count sent."""
    stop = threading.Event()
    sent = [0]
    lock = threading.Lock()

    def worker(offset: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        i = offset
        while not stop.is_set() and i < len(bodies):
            body = bodies[i]
            conn.request("POST", "/webhooks/workos", body=body,
                         headers={"Content-Type": "application/json", "WorkOS-Signature": sign(SECRET, body)})
            conn.getresponse().read()
            i += concurrency
            with lock:
                sent[0] += 1
        conn.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    for t in threads:
        t.start()
    try:
        yield sent
    finally:
        stop.set()
        for t in threads:
            t.join()


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=6000)
    parser.add_argument("--users", type=int, default=1500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--resync-users", type=int, default=10000)
    parser.add_argument("--resync-groups", type=int, default=200)
    parser.add_argument("--skip-resync", action="store_true")
    parser.add_argument("--deactivations", type=int, default=100)
    parser.add_argument("--wrk", action="store_true",
                        help="also measure with wrk (pre-signed requests, 2 threads) if it is installed")
    parser.add_argument("--wrk-seconds", type=int, default=20)
    parser.add_argument("--trace-memory", action="store_true",
                        help="also trace Python allocations during the resync (slows it down several times)")
    args = parser.parse_args()
    base = os.environ.get("BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

    from flask_migrate import upgrade

    from hatidata_auth import create_app
    from hatidata_auth.causes import Actor
    from hatidata_auth.extensions import db
    from hatidata_auth.idp import get_registry
    from hatidata_auth.models import AuthSession, Organization, User, utcnow
    from hatidata_auth.services import reconcile
    from hatidata_auth.services.organizations import sync_from_workos

    with tempfile.TemporaryDirectory() as tmp, private_database(base) as database_url, \
            EmulatorServer(data_dir=tmp) as emulator:
        os.environ["HATIDATA_INSTANCE_PATH"] = str(Path(tmp) / "instance")
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

        env = {**os.environ, "HATIDATA_ENV": "development", "DATABASE_URL": database_url,
               "WORKOS_BASE_URL": emulator.url, "WORKOS_WEBHOOK_SECRET": SECRET, "WEB_CONCURRENCY": "2",
               "PORT": str(18000 + random.randint(0, 999)), "GUNICORN_ACCESS_LOG": "/dev/null",
               "HATIDATA_INSTANCE_PATH": str(Path(tmp) / "instance")}
        if os.environ.get("BENCH_REDIS_URL"):
            env["REDIS_URL"] = os.environ["BENCH_REDIS_URL"]
        port = int(env["PORT"])
        server = subprocess.Popen([str(ROOT / ".venv/bin/gunicorn"), "-c", "config/gunicorn.conf.py", "wsgi:app"],
                                  cwd=ROOT, env=env)
        try:
            for _ in range(100):
                try:
                    c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                    c.request("GET", "/healthz")
                    c.getresponse().read()
                    break
                except OSError:
                    time.sleep(0.1)
            # 1. throughput: creates then updates for many users, 10% duplicates, shuffled.
            per_user = max(1, args.events // args.users)
            events = [user_payload(n, v) for n in range(args.users) for v in range(per_user)]
            bodies = [json.dumps(e, separators=(",", ":")) for e in events]
            bodies += random.sample(bodies, len(bodies) // 10)
            random.shuffle(bodies)
            # 0. the generator alone: the same signed requests against the bare health route.
            base_elapsed, base_lat, base_status = send_all(port, bodies[:3000], args.concurrency, path="/healthz")
            base_rate = len(base_lat) / base_elapsed
            print(f"[generator] {len(base_lat)} signed GET /healthz in {base_elapsed:.2f}s = {base_rate:.0f} req/s "
                  f"({args.concurrency} keep-alive clients); p50 {pct(base_lat, .5):.1f} ms, "
                  f"p99 {pct(base_lat, .99):.1f} ms; statuses {base_status}")
            send_all(port, bodies[:200], args.concurrency)  # warm-up (also part of the state)
            wait_drained(database_url)
            cpu_before = resource.getrusage(resource.RUSAGE_SELF)
            elapsed, latencies, statuses = send_all(port, bodies[200:], args.concurrency)
            cpu_after = resource.getrusage(resource.RUSAGE_SELF)
            applied_elapsed = elapsed + wait_drained(database_url)
            generator_cpu = (cpu_after.ru_utime - cpu_before.ru_utime + cpu_after.ru_stime - cpu_before.ru_stime)
            rate = len(latencies) / elapsed
            print(f"[webhooks] {len(latencies)} events in {elapsed:.2f}s = {rate:.0f} events/s "
                  f"(10% duplicates, shuffled, {args.concurrency} clients, 2 gunicorn workers); "
                  f"p50 {pct(latencies, .5):.1f} ms, p99 {pct(latencies, .99):.1f} ms; statuses {statuses}; "
                  f"ratio to the generator-alone baseline {rate / base_rate:.2f}; the generator used "
                  f"{100 * generator_cpu / elapsed:.0f}% of one core")
            applied_rate = len(latencies) / applied_elapsed
            print(f"[applied] the same events applied (inbox drained) {applied_elapsed:.2f}s after the first was "
                  f"sent = {applied_rate:.0f} events/s; ratio to the generator-alone baseline "
                  f"{applied_rate / base_rate:.2f}")

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

            # 2. deactivation -> session rejected.
            with app.app_context():
                users = db.session.query(User).filter(User.email.like("bench%@acme.test")).limit(200).all()
                for user in users:
                    db.session.add(AuthSession(organization_id=acme_id, workos_session_id=f"session_bench_{user.id}",
                                               user_id=user.id, expires_at=utcnow() + timedelta(hours=1)))
                db.session.commit()
                emails = [u.email for u in users]
            deact = [json.dumps(user_payload(int(e[5:].split("@")[0]), 3000, "inactive"), separators=(",", ":"))
                     for e in emails]
            sessions = [f"session_bench_{u.id}" for u in users]
            half = min(len(deact), args.deactivations) // 2
            idle = deactivation_latencies(port, database_url, deact[:half], sessions[:half])
            load_bodies = [json.dumps(user_payload(n + 200_000, v), separators=(",", ":"))
                           for n in range(args.users) for v in range(per_user)]
            with background_load(port, load_bodies, 4) as sent:
                busy = deactivation_latencies(port, database_url, deact[half:2 * half], sessions[half:2 * half])
            wait_drained(database_url)
            with app.app_context():
                live = db.session.query(AuthSession).filter(AuthSession.workos_session_id.in_(sessions[:2 * half]),
                                                            AuthSession.revoked_at.is_(None)).count()
            print(f"[deprovision] {len(idle)} deactivations, idle: sent->session revoked p50 {pct(idle, .5):.1f} ms, "
                  f"p99 {pct(idle, .99):.1f} ms; {len(busy)} under load ({sent[0]} other webhooks meanwhile): "
                  f"p50 {pct(busy, .5):.1f} ms, p99 {pct(busy, .99):.1f} ms; sessions still live: {live}")
        finally:
            server.terminate()
            server.wait(timeout=10)

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
        statistics.mean([1.0])


if __name__ == "__main__":
    main()
