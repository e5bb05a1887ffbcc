"""Directory-sync benchmark (not a timed test): ``.venv/bin/python bench/dsync_bench.py [--events N]``.

Needs PostgreSQL (``BENCH_DATABASE_URL``, default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``; a
private database is created next to it and dropped afterwards) and optionally Redis (``BENCH_REDIS_URL``).

1. Webhook throughput: gunicorn with 2 sync workers; signed ``dsync.user.*`` events for many users with 10%
   duplicates in shuffled order, sent by concurrent keep-alive clients. Reports events/s and p50/p99 latency
   (target: >= 300 events/s).
2. Deactivation to rejection: each deactivation webhook revokes the user's live session before it answers,
   so the time from arrival to the session being rejected is the webhook's latency (plus the post-commit
   cache eviction); reports p50/p99 and checks the session rows (target p99 < 1 s).
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


def send_all(port: int, bodies: list[str], concurrency: int) -> tuple[float, list[float], dict[int, int]]:
    """POST every body (signed just before sending) from *concurrency* keep-alive connections."""
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
            conn.request("POST", "/webhooks/workos", body=body,
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
    args = parser.parse_args()
    base = os.environ.get("BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

    from flask_migrate import upgrade

    from hatidata_auth import create_app
    from hatidata_auth.context import Actor
    from hatidata_auth.extensions import db
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
            sync_from_workos(db.session, client, Actor.system("bench"))
            for report in reconcile.resync_all(db.session, client):
                reconcile.ensure_demo_mappings(db.session, client, organization_id=report.organization_id,
                                               actor=Actor.system("bench"))
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
            send_all(port, bodies[:200], args.concurrency)  # warm-up (also part of the state)
            elapsed, latencies, statuses = send_all(port, bodies[200:], args.concurrency)
            rate = len(latencies) / elapsed
            print(f"[webhooks] {len(latencies)} events in {elapsed:.2f}s = {rate:.0f} events/s "
                  f"(10% duplicates, shuffled, {args.concurrency} clients, 2 gunicorn workers); "
                  f"p50 {pct(latencies, .5):.1f} ms, p99 {pct(latencies, .99):.1f} ms; statuses {statuses}")

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
            _, deact_lat, deact_status = send_all(port, deact, 4)
            with app.app_context():
                live = db.session.query(AuthSession).filter(AuthSession.workos_session_id.like("session_bench_%"),
                                                            AuthSession.revoked_at.is_(None)).count()
            print(f"[deprovision] {len(deact_lat)} deactivations: arrival->session revoked p50 "
                  f"{pct(deact_lat, .5):.1f} ms, p99 {pct(deact_lat, .99):.1f} ms; sessions still live: {live}; "
                  f"statuses {deact_status}")
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
        tracemalloc.start()
        with app.app_context():
            started = time.perf_counter()
            report = reconcile.full_resync(db.session, app.extensions["hatidata_workos"].client,
                                           organization_id=acme_id)
            seconds = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"[resync] {report.users_seen} users, {report.groups_seen} groups in {seconds:.1f}s; "
              f"{report.differences} differences fixed; peak traced Python memory {peak / 2**20:.0f} MB; "
              f"process max RSS {rss_after:.0f} MB (before {rss_before:.0f} MB; includes the in-process emulator)")
        print(json.dumps({k: v for k, v in report.to_dict().items() if k != "examples"}))
        statistics.mean([1.0])


if __name__ == "__main__":
    main()
