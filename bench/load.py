"""Mixed load against gunicorn: logins, API calls with sessions and keys, webhooks. Run on demand:

    python -m bench.load [--duration 120] [--clients 8] [--workers 2] \\
        [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres] [--redis-url redis://127.0.0.1:6379/0]

Everything stays on 127.0.0.1: the WorkOS emulator runs in this process, the app runs under gunicorn with the
production profile on a private database (created next to ``--database-url`` and dropped at the end) and
Redis (under a private key prefix). ``--clients`` closed-loop threads pick an operation by weight:

- ``login``: the whole browser flow (``/auth/login`` -> the emulator's authorize -> ``/auth/callback``);
- ``me_cookie``: ``GET /api/v1/me`` with a session cookie; ``me_bearer``: with the access token;
- ``me_key``: ``GET /api/v1/me`` with an ``hd_live_`` API key; ``keys_list``: ``GET /api/v1/api-keys``;
- ``webhook``: a signed ``dsync.user.created`` for a new user (5% are sent twice, like WorkOS redeliveries).

Reports throughput, p50/p99 latency per operation, errors (any unexpected status or exception) and lost events
(webhook events acknowledged with 200 but not in the inbox as applied). Target: zero errors, zero lost.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx2

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "sk_bench_" + "l" * 24
CLIENT_ID = "client_emulator"
WEBHOOK_SECRET = "whsec_bench_" + "w" * 24
ACME_DIR = "directory_01HTDQ8D100000000000000001"
USERS = ["admin@acme.test", "dev@acme.test", "viewer@acme.test", "admin@globex.test", "dev@globex.test",
         "admin@initech.test", "dev@umbrella.test"]
WEIGHTS = {"login": 4, "me_cookie": 25, "me_bearer": 25, "me_key": 20, "keys_list": 6, "webhook": 20}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sign(body: str) -> str:
    ts = str(int(time.time() * 1000))
    digest = hmac.new(WEBHOOK_SECRET.encode(), f"{ts}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"t={ts}, v1={digest}"


def _ulid() -> str:
    return uuid.uuid4().hex[:26].upper()


class Load:
    """Shared state of one run: credentials, results, and the webhook events sent."""

    def __init__(self, base: str, template: dict[str, Any]) -> None:
        self.base = base
        self.template = template
        self.lock = threading.Lock()
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, int] = defaultdict(int)
        self.samples: list[str] = []
        self.sessions: list[tuple[dict[str, str], str]] = []  # (cookies, access token)
        self.keys: list[str] = []
        self.events_acked: set[str] = set()

    def record(self, op: str, seconds: float, ok: bool, detail: str = "") -> None:
        with self.lock:
            self.latencies[op].append(seconds)
            if not ok:
                self.errors[op] += 1
                if len(self.samples) < 10:
                    self.samples.append(f"{op}: {detail[:200]}")

    # --- operations ---------------------------------------------------------------------------------------

    def login(self, http: httpx2.Client, email: str) -> tuple[bool, str]:
        with httpx2.Client(timeout=30, follow_redirects=False) as browser:
            first = browser.get(f"{self.base}/auth/login", params={"email": email})
            if first.status_code != 302:
                return False, f"login {first.status_code} {first.text[:100]}"
            at_workos = browser.get(first.headers["location"])
            if at_workos.status_code != 302:
                return False, f"authorize {at_workos.status_code}"
            back = browser.get(at_workos.headers["location"])
            if back.status_code != 302 or "hatidata_session" not in back.cookies:
                return False, f"callback {back.status_code} {back.text[:100]}"
            cookies = {"hatidata_session": back.cookies["hatidata_session"]}
            me = browser.get(f"{self.base}/api/v1/me", cookies=cookies)
            token = ""
            if me.status_code == 200:
                token = self._token_from_cookie(cookies)
            with self.lock:
                self.sessions.append((cookies, token))
                if len(self.sessions) > 200:
                    self.sessions.pop(0)
            return me.status_code == 200, f"me after login {me.status_code}"

    def _token_from_cookie(self, cookies: dict[str, str]) -> str:
        from workos.session import unseal_data

        data = unseal_data(cookies["hatidata_session"], os.environ["BENCH_COOKIE_KEY"])
        return str(data["access_token"])

    def webhook(self, http: httpx2.Client) -> tuple[bool, str]:
        event = json.loads(json.dumps(self.template))
        event["id"] = "event_" + _ulid()
        n = uuid.uuid4().hex[:10]
        data = event["data"]
        data["id"] = "directory_user_" + _ulid()
        data["idp_id"] = f"bench-{n}"
        data["email"] = f"load-{n}@acme.test"
        if isinstance(data.get("emails"), list) and data["emails"]:
            data["emails"] = [{**data["emails"][0], "value": data["email"]}]
        data["first_name"], data["last_name"] = "Load", n
        body = json.dumps(event, separators=(",", ":"))
        times = 2 if random.random() < 0.05 else 1
        for _ in range(times):
            r = http.post(f"{self.base}/webhooks/workos", content=body,
                          headers={"WorkOS-Signature": _sign(body), "Content-Type": "application/json"})
            if r.status_code != 200:
                return False, f"webhook {r.status_code} {r.text[:100]}"
        with self.lock:
            self.events_acked.add(event["id"])
        return True, ""


def _worker(load: Load, deadline: float, max_requests: int, counter: list[int]) -> None:
    ops, weights = zip(*WEIGHTS.items(), strict=True)
    with httpx2.Client(timeout=30) as http:
        while time.monotonic() < deadline:
            with load.lock:
                if counter[0] >= max_requests:
                    return
                counter[0] += 1
                sessions = list(load.sessions[-50:])
                keys = list(load.keys)
            op = random.choices(ops, weights)[0]
            if op in ("me_cookie", "me_bearer") and not sessions:
                op = "login"
            started = time.perf_counter()
            ok, detail = False, ""
            try:
                if op == "login":
                    ok, detail = load.login(http, random.choice(USERS))
                elif op == "me_cookie":
                    r = http.get(f"{load.base}/api/v1/me", cookies=random.choice(sessions)[0])
                    ok, detail = r.status_code == 200, f"{r.status_code} {r.text[:100]}"
                elif op == "me_bearer":
                    token = random.choice(sessions)[1]
                    r = http.get(f"{load.base}/api/v1/me", headers={"Authorization": f"Bearer {token}"})
                    ok, detail = r.status_code == 200, f"{r.status_code} {r.text[:100]}"
                elif op == "me_key":
                    r = http.get(f"{load.base}/api/v1/me", headers={"Authorization": f"Bearer {random.choice(keys)}"})
                    ok, detail = r.status_code == 200, f"{r.status_code} {r.text[:100]}"
                elif op == "keys_list":
                    r = http.get(f"{load.base}/api/v1/api-keys",
                                 headers={"Authorization": f"Bearer {random.choice(keys)}"})
                    ok, detail = r.status_code == 200, f"{r.status_code} {r.text[:100]}"
                else:
                    ok, detail = load.webhook(http)
            except Exception as exc:  # noqa: BLE001 - every failure is counted as an error
                ok, detail = False, f"{type(exc).__name__}: {exc}"
            load.record(op, time.perf_counter() - started, ok, detail)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


def build_parser() -> argparse.ArgumentParser:
    """The options (``BENCH_ARGS``); ``--duration`` is common to every benchmark (``bench/options.py``)."""
    parser = argparse.ArgumentParser(prog="bench.load", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=float(os.environ.get("BENCH_DURATION", "120")))
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-requests", type=int, default=2_000_000, help="a hard bound on requests sent")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL",
                                                                 "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    return parser


def main(argv: list[str] | None = None) -> int:  # noqa: C901 - one CLI flow (setup, phases, report); splitting it hides the sequence
    parser = build_parser()
    args = parser.parse_args(argv)
    for url in (args.database_url, args.redis_url):
        if "127.0.0.1" not in url and "localhost" not in url:
            parser.error("loopback only: the database and Redis must be on 127.0.0.1")

    from cryptography.fernet import Fernet
    from flask_migrate import upgrade
    from sqlalchemy import create_engine, func, select, text
    from sqlalchemy.engine import make_url

    from hatidata_auth import create_app
    from hatidata_auth.causes import Actor, Cause
    from hatidata_auth.extensions import db
    from hatidata_auth.models import Membership, User, WebhookEvent
    from hatidata_auth.services import api_keys, organizations
    from workos_emulator.testing import EmulatorServer

    tmp = Path(tempfile.mkdtemp(prefix="hd-load-"))
    emulator = EmulatorServer(api_key=API_KEY, client_id=CLIENT_ID, data_dir=str(tmp / "emulator")).start()
    admin_url = make_url(args.database_url)
    name = f"hd_load_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    database_url = admin_url.set(database=name).render_as_string(hide_password=False)
    cookie_key = Fernet.generate_key().decode()
    os.environ["BENCH_COOKIE_KEY"] = cookie_key
    prefix = f"hd-load-{uuid.uuid4().hex[:6]}:"
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    secrets_env = {
        "DATABASE_URL": database_url, "REDIS_URL": args.redis_url, "WORKOS_API_KEY": API_KEY,
        "WORKOS_CLIENT_ID": CLIENT_ID, "WORKOS_BASE_URL": emulator.url, "WORKOS_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "HATIDATA_COOKIE_KEY": cookie_key, "SECRET_KEY": "load-secret-" + "s" * 40, "HATIDATA_PUBLIC_URL": base,
        "HATIDATA_METRICS_TOKEN": "load-metrics-" + "m" * 24,
    }
    settings = tmp / "settings.py"
    settings.write_text(f"CACHE_KEY_PREFIX = {prefix!r}\nSESSION_COOKIE_SECURE = False\n"
                        "HATIDATA_LOGIN_RATE_LIMIT = '1000000 per minute'\n"
                        "HATIDATA_API_KEY_FAILURE_RATE_LIMIT = '1000000 per minute'\n")
    gunicorn = None
    log_path = tmp / "gunicorn.log"
    try:
        os.environ["HATIDATA_INSTANCE_PATH"] = str(tmp / "instance")
        app = create_app({"HATIDATA_ENV": "testing", "SQLALCHEMY_DATABASE_URI": database_url,
                          "SECRET_KEY": secrets_env["SECRET_KEY"], "HATIDATA_COOKIE_KEY": cookie_key,
                          "WORKOS_API_KEY": API_KEY, "WORKOS_CLIENT_ID": CLIENT_ID, "WORKOS_BASE_URL": emulator.url,
                          "REDIS_URL": args.redis_url, "CACHE_KEY_PREFIX": prefix})
        client = app.extensions["hatidata_workos"].client
        with app.app_context():
            upgrade()
            organizations.sync_from_workos(db.session(), client, Actor.system())
            db.session.commit()
        # A template dsync.user.created event, as the emulator (WorkOS) shapes it.
        emulator.emulator  # noqa: B018 - the emulator is up
        httpx2.post(f"{emulator.url}/_emulator/directories/{ACME_DIR}/users",
                    json={"email": "template@acme.test", "first_name": "T", "last_name": "T"},
                    headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10).raise_for_status()
        events = httpx2.get(f"{emulator.url}/_emulator/events", headers={"Authorization": f"Bearer {API_KEY}"},
                            timeout=10).json()["data"]
        template = next(e for e in reversed(events) if e["event"] == "dsync.user.created")
        template = {k: template[k] for k in ("id", "event", "data", "created_at")}

        env = {**os.environ, **secrets_env, "HATIDATA_ENV": "production", "HATIDATA_SETTINGS": str(settings),
               "PYTHONPATH": str(ROOT), "WEB_CONCURRENCY": str(args.workers), "PORT": str(port),
               "GUNICORN_ACCESS_LOG": "/dev/null", "HATIDATA_LOG_LEVEL": "WARNING"}
        log = log_path.open("wb")
        gunicorn = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "config" / "gunicorn.conf.py"), "wsgi:app"],
            env=env, cwd=str(ROOT), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx2.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx2.HTTPError:
                pass
            if time.monotonic() > deadline or gunicorn.poll() is not None:
                raise RuntimeError("gunicorn did not start: " + log_path.read_text()[-2000:])
            time.sleep(0.2)

        load = Load(base, template)
        with httpx2.Client(timeout=30) as http:
            for email in USERS[:3]:
                ok, detail = load.login(http, email)
                if not ok:
                    raise RuntimeError(f"warm-up login failed: {detail}")
        with app.app_context():
            for user_email in ("admin@acme.test", "dev@acme.test"):
                user = db.session.scalar(select(User).where(User.email == user_email))
                if user is None:
                    raise RuntimeError(f"{user_email} not found; users: "
                                       f"{db.session.execute(select(User.email)).all()}")
                membership = db.session.scalar(select(Membership).where(Membership.user_id == user.id))
                assert membership is not None
                created = api_keys.create_key(db.session(), organization_id=membership.organization_id,
                                              owner_user_id=user.id, name="load", scopes=["keys:read"],
                                              cause=Cause.by(Actor.system()))
                load.keys.append(created.secret)
            db.session.commit()

        print(f"gunicorn {args.workers} sync workers, production profile, PostgreSQL + Redis; "
              f"{args.clients} closed-loop clients for {args.duration:.0f} s; mix {WEIGHTS}", flush=True)
        counter = [0]
        end = time.monotonic() + args.duration
        threads = [threading.Thread(target=_worker, args=(load, end, args.max_requests, counter), daemon=True)
                   for _ in range(args.clients)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(args.duration + 60)
        elapsed = time.monotonic() - started

        total = sum(len(v) for v in load.latencies.values())
        errors = sum(load.errors.values())
        every = [x for v in load.latencies.values() for x in v]
        print(f"\n{'operation':10s} {'count':>8s} {'req/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s} {'errors':>7s}")
        for op in WEIGHTS:
            values = load.latencies.get(op, [])
            print(f"{op:10s} {len(values):8d} {len(values) / elapsed:8.1f} {_pct(values, 0.5) * 1000:8.1f} "
                  f"{_pct(values, 0.99) * 1000:8.1f} {load.errors.get(op, 0):7d}")
        print(f"{'all':10s} {total:8d} {total / elapsed:8.1f} {_pct(every, 0.5) * 1000:8.1f} "
              f"{_pct(every, 0.99) * 1000:8.1f} {errors:7d}")

        with app.app_context():
            stored = {e for (e,) in db.session.execute(
                select(WebhookEvent.event_id).where(WebhookEvent.status == "applied")).all()}
            failed = db.session.scalar(select(func.count()).select_from(WebhookEvent)
                                       .where(WebhookEvent.status == "failed"))
            db.session.remove()
        lost = load.events_acked - stored
        print(f"\nwebhook events acknowledged: {len(load.events_acked)}, applied in the inbox: "
              f"{len(load.events_acked & stored)}, lost: {len(lost)}, failed rows: {failed}")
        for sample in load.samples:
            print("  error sample:", sample)
        return 0 if errors == 0 and not lost else 1
    finally:
        if gunicorn is not None:
            gunicorn.terminate()
            try:
                gunicorn.wait(timeout=15)
            except subprocess.TimeoutExpired:
                gunicorn.kill()
        emulator.stop()
        from hatidata_auth.extensions import db as _db

        with contextlib.suppress(Exception):  # no app context: nothing to dispose
            _db.engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    raise SystemExit(main())
