"""Authentication throughput and revocation propagation, measured against a baseline in the same run.

    python -m bench.auth [--duration 5] [--clients 4] [--trials 20] \\
        [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres] [--redis-url redis://127.0.0.1:6379/0]

Starts the WorkOS emulator (in this process), creates a private PostgreSQL database, runs gunicorn with the
production profile (2 sync workers, PostgreSQL + Redis) and measures requests/s of:

- ``GET /healthz`` (unauthenticated baseline of the same app),
- ``GET /api/v1/me`` with ``Authorization: Bearer <access token>`` (session),
- ``GET /api/v1/me`` with ``Authorization: Bearer hd_live_…`` (API key),

then the revocation propagation: from the revoke call returning until every worker rejects the session.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "sk_bench_" + "b" * 24
CLIENT_ID = "client_emulator"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _request(port: int, raw: bytes) -> int:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(raw)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return int(data[9:12]) if data.startswith(b"HTTP/") else 0


def _raw(path: str, token: str | None) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _load_worker(port: int, raw: bytes, duration: float, out: Any) -> None:
    deadline = time.monotonic() + duration
    ok = bad = 0
    while time.monotonic() < deadline:
        if _request(port, raw) == 200:
            ok += 1
        else:
            bad += 1
    out.put((ok, bad))


def measure(port: int, path: str, token: str | None, duration: float, clients: int) -> tuple[float, int]:
    """Requests/s (2xx only) with *clients* closed-loop processes; returns (rps, non-2xx count)."""
    raw = _raw(path, token)
    for _ in range(50):  # warm both workers' caches
        _request(port, raw)
    out: Any = mp.Queue()
    procs = [mp.Process(target=_load_worker, args=(port, raw, duration, out)) for _ in range(clients)]
    started = time.monotonic()
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    elapsed = time.monotonic() - started
    return sum(r[0] for r in results) / elapsed, sum(r[1] for r in results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2, help="alternate baseline/auth measurements this often")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL",
                                                                 "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args(argv)

    from cryptography.fernet import Fernet
    from flask_migrate import upgrade
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from hatidata_auth import create_app
    from hatidata_auth.causes import Actor, Cause
    from hatidata_auth.extensions import db
    from hatidata_auth.services import api_keys, organizations
    from hatidata_auth.services import sessions as session_service
    from workos_emulator.testing import EmulatorServer

    tmp = Path(tempfile.mkdtemp(prefix="hd-bench-"))
    emulator = EmulatorServer(api_key=API_KEY, client_id=CLIENT_ID).start()
    admin_url = make_url(args.database_url)
    name = f"hd_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    database_url = admin_url.set(database=name).render_as_string(hide_password=False)
    prefix = f"hd-bench-{uuid.uuid4().hex[:6]}:"
    secrets_env = {
        "DATABASE_URL": database_url, "REDIS_URL": args.redis_url, "WORKOS_API_KEY": API_KEY,
        "WORKOS_CLIENT_ID": CLIENT_ID, "WORKOS_BASE_URL": emulator.url,
        "WORKOS_WEBHOOK_SECRET": "whsec_bench_" + "w" * 20, "HATIDATA_COOKIE_KEY": Fernet.generate_key().decode(),
        "SECRET_KEY": "bench-secret-" + "s" * 40, "HATIDATA_METRICS_TOKEN": "bench-metrics-" + "m" * 24,
    }
    settings = tmp / "settings.py"
    settings.write_text(f"CACHE_KEY_PREFIX = {prefix!r}\nHATIDATA_API_KEY_FAILURE_RATE_LIMIT = '100000 per minute'\n")
    gunicorn = None
    try:
        local_config = {"HATIDATA_ENV": "testing", "SQLALCHEMY_DATABASE_URI": database_url,
                        "SECRET_KEY": secrets_env["SECRET_KEY"],
                        "HATIDATA_COOKIE_KEY": secrets_env["HATIDATA_COOKIE_KEY"],
                        "WORKOS_API_KEY": API_KEY, "WORKOS_CLIENT_ID": CLIENT_ID, "WORKOS_BASE_URL": emulator.url,
                        "REDIS_URL": args.redis_url, "CACHE_KEY_PREFIX": prefix}
        os.environ["HATIDATA_INSTANCE_PATH"] = str(tmp / "instance")
        app = create_app(local_config)
        with app.app_context():
            upgrade()
            organizations.sync_from_workos(db.session(), app.extensions["hatidata_workos"].client, Actor.system())
            db.session.commit()
        port = _free_port()
        # The server's logs go to a file: a pipe nobody reads would fill up and block the workers.
        server_log = (tmp / "gunicorn.log").open("w")
        env = {**os.environ, **secrets_env, "HATIDATA_ENV": "production", "HATIDATA_SETTINGS": str(settings),
               "PYTHONPATH": str(ROOT), "WEB_CONCURRENCY": "2", "PORT": str(port),
               "GUNICORN_ACCESS_LOG": "/dev/null", "HATIDATA_PUBLIC_URL": f"http://127.0.0.1:{port}"}
        gunicorn = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "config" / "gunicorn.conf.py"),
             "hatidata_auth:create_app()"], env=env, cwd=str(ROOT), stdout=server_log, stderr=server_log)
        deadline = time.monotonic() + 30
        while _safe_status(port, "/healthz") != 200:
            if time.monotonic() > deadline or gunicorn.poll() is not None:
                server_log.flush()
                raise RuntimeError("gunicorn did not start: " + Path(server_log.name).read_text()[-4000:])
            time.sleep(0.2)

        client = app.test_client()
        token, me = _login(client, "dev@acme.test")
        with app.app_context():
            created = api_keys.create_key(db.session(), organization_id=me["organization_id"],
                                          owner_user_id=me["user_id"], name="bench-agent", scopes=["data:read"],
                                          cause=Cause.by(Actor.system()))
            db.session.commit()
        assert _safe_status(port, "/api/v1/me", token) == 200, "session token rejected"
        assert _safe_status(port, "/api/v1/me", created.secret) == 200, "API key rejected"

        print(f"gunicorn 2 workers (production, PostgreSQL + Redis), {args.clients} clients, "
              f"{args.duration:.0f} s x {args.rounds} rounds each")
        totals: dict[str, list[float]] = {"baseline": [], "session": [], "api_key": []}
        errors: dict[str, int] = dict.fromkeys(totals, 0)
        for _ in range(args.rounds):
            for label, path, credential in (("baseline", "/healthz", None), ("session", "/api/v1/me", token),
                                            ("api_key", "/api/v1/me", created.secret)):
                rps, bad = measure(port, path, credential, args.duration, args.clients)
                totals[label].append(rps)
                errors[label] += bad
        base = statistics.mean(totals["baseline"])
        for label in totals:
            mean = statistics.mean(totals[label])
            print(f"  {label:9s} {mean:8.0f} req/s  ratio {mean / base:5.2f}  non-2xx {errors[label]}")

        delays: list[float] = []
        for trial in range(args.trials):
            tc = app.test_client()
            trial_token, trial_me = _login(tc, "viewer@acme.test" if trial % 2 else "admin@acme.test")
            for _ in range(20):
                _request(port, _raw("/api/v1/me", trial_token))
            with app.app_context():
                session_service.revoke_session(db.session(), app.extensions["hatidata_workos"].client,
                                               organization_id=trial_me["organization_id"],
                                               session_id=trial_me["session_id"], cause=Cause(Actor.system(),
                                                                                              reason="bench"))
                db.session.commit()
            returned = time.monotonic()
            delays.append(_until_rejected(port, trial_token, returned))
        delays.sort()
        p99 = delays[min(len(delays) - 1, round(0.99 * (len(delays) - 1)))]
        print(f"revocation propagation over {len(delays)} trials: p50 {statistics.median(delays) * 1000:.1f} ms, "
              f"p99 {p99 * 1000:.1f} ms, max {delays[-1] * 1000:.1f} ms")
        ratio_s = statistics.mean(totals["session"]) / base
        ratio_k = statistics.mean(totals["api_key"]) / base
        ok = ratio_s >= 0.8 and ratio_k >= 0.8 and p99 <= 1.0
        print("targets (ratio >= 0.80, p99 <= 1 s):", "met" if ok else "NOT met")
        return 0 if ok else 1
    finally:
        if gunicorn is not None:
            print(f"(server log: {tmp / 'gunicorn.log'})")
            gunicorn.terminate()
            try:
                gunicorn.wait(timeout=10)
            except subprocess.TimeoutExpired:
                gunicorn.kill()
        emulator.stop()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _safe_status(port: int, path: str, token: str | None = None) -> int:
    try:
        return _request(port, _raw(path, token))
    except OSError:
        return 0


def _login(client: Any, email: str) -> tuple[str, dict[str, Any]]:
    import httpx2
    from workos.session import unseal_data

    response = client.get("/auth/login", query_string={"email": email})
    hop = httpx2.get(response.headers["Location"], follow_redirects=False, timeout=10)
    parts = urlsplit(hop.headers["location"])
    done = client.get(f"{parts.path}?{parts.query}")
    assert done.status_code == 302, done.get_data(as_text=True)
    cookie = client.get_cookie("hatidata_session")
    data = unseal_data(cookie.value, client.application.config["HATIDATA_COOKIE_KEY"])
    return str(data["access_token"]), client.get("/api/v1/me").get_json()


def _until_rejected(port: int, token: str, since: float, needed: int = 20) -> float:
    """Seconds from *since* until *needed* consecutive requests (spread over both workers) are refused."""
    raw = _raw("/api/v1/me", token)
    streak = 0
    first_reject = None
    while streak < needed:
        status = _request(port, raw)
        if status == 401:
            if streak == 0:
                first_reject = time.monotonic()
            streak += 1
        else:
            streak = 0
            first_reject = None
        if time.monotonic() - since > 10:
            return float("inf")
    assert first_reject is not None
    return first_reject - since


if __name__ == "__main__":
    raise SystemExit(main())
