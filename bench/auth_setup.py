"""What ``bench.auth`` serves and sends: one profile's gunicorn, its signed-in credentials, many live sessions.

Kept apart from the measuring loop so that ``bench/auth.py`` reads as the procedure it is.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.auth_warm import worker_ports

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "sk_bench_" + "b" * 24
CLIENT_ID = "client_emulator"
COOKIE = "hatidata_session"


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


REQUEST_TIMEOUT = 30.0
"""Seconds :func:`request` waits to connect, and then for each read (gunicorn's worker timeout)."""


def request(port: int, raw: bytes) -> int:
    """Send one raw HTTP/1.1 request (``Connection: close``); the status, 0 when there was no HTTP answer. Raises
    ``OSError`` when the connection fails or :data:`REQUEST_TIMEOUT` passes without an answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=REQUEST_TIMEOUT) as sock:
        sock.sendall(raw)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return int(data[9:12]) if data.startswith(b"HTTP/") else 0


def raw(path: str, *, bearer: str | None = None, cookie: str | None = None) -> bytes:
    """A ``GET`` with an optional bearer credential or session cookie."""
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    if bearer:
        lines.append(f"Authorization: Bearer {bearer}")
    if cookie:
        lines.append(f"Cookie: {COOKIE}={cookie}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def safe_status(port: int, data: bytes) -> int:
    """:func:`request`, 0 when the server is not answering."""
    try:
        return request(port, data)
    except OSError:
        return 0


@dataclass
class Served:
    """One profile under gunicorn, and an in-process app on the same database and cache for the setup."""

    profile: str
    port: int
    app: Any
    process: subprocess.Popen[bytes]
    folder: Path
    cleanup: list[Any] = field(default_factory=list)
    warm_ports: list[int] = field(default_factory=list)  # each worker's private warm-up port (bench.auth_warm)

    def stop(self) -> None:
        """Stop gunicorn, then run the profile's cleanups (drop the private database)."""
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        for action in self.cleanup:
            action()


def serve(profile: str, emulator_url: str, *, workers: int, database_url: str, redis_url: str,
          expected_sessions: int | None, cache_ttl: int | None = None) -> Served:
    """Start *profile* (``production``: PostgreSQL + Redis; ``embedded``: ``make run``'s SQLite + file cache), its
    status cache TTL *cache_ttl* seconds when given."""
    from cryptography.fernet import Fernet
    from flask_migrate import upgrade
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from hatidata_auth import create_app
    from hatidata_auth.causes import Actor
    from hatidata_auth.extensions import db
    from hatidata_auth.services import organizations

    folder = Path(tempfile.mkdtemp(prefix=f"hd-bench-{profile}-"))
    port = free_port()
    public_url = f"http://127.0.0.1:{port}"
    cleanup: list[Any] = []
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WEB_CONCURRENCY": str(workers), "PORT": str(port),
           "GUNICORN_ACCESS_LOG": "/dev/null", "HATIDATA_PUBLIC_URL": public_url, "WORKOS_API_KEY": API_KEY,
           "WORKOS_CLIENT_ID": CLIENT_ID, "WORKOS_BASE_URL": emulator_url,
           "HATIDATA_INSTANCE_PATH": str(folder / "instance"), "BENCH_WARM_DIR": str(folder / "warm")}
    env.pop("REDIS_URL", None)
    env.pop("DATABASE_URL", None)
    if expected_sessions:
        env["HATIDATA_EXPECTED_LIVE_SESSIONS"] = str(expected_sessions)
    if cache_ttl:
        env["HATIDATA_SESSION_CACHE_TTL"] = str(cache_ttl)
    settings = folder / "settings.py"
    settings.write_text("HATIDATA_API_KEY_FAILURE_RATE_LIMIT = '100000 per minute'\n")
    local: dict[str, Any] = {"WORKOS_API_KEY": API_KEY, "WORKOS_CLIENT_ID": CLIENT_ID,
                             "WORKOS_BASE_URL": emulator_url, "HATIDATA_PUBLIC_URL": public_url}
    if profile == "production":
        admin_url = make_url(database_url)
        name = f"hd_bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))

        def drop() -> None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()

        cleanup.append(drop)
        url = admin_url.set(database=name).render_as_string(hide_password=False)
        secrets = {"DATABASE_URL": url, "REDIS_URL": redis_url, "WORKOS_WEBHOOK_SECRET": "whsec_bench_" + "w" * 20,
                   "HATIDATA_COOKIE_KEY": Fernet.generate_key().decode(), "SECRET_KEY": "bench-secret-" + "s" * 40,
                   "HATIDATA_METRICS_TOKEN": "bench-metrics-" + "m" * 24}
        prefix = f"hd-bench-{uuid.uuid4().hex[:6]}:"
        settings.write_text(settings.read_text() + f"CACHE_KEY_PREFIX = {prefix!r}\n")
        env.update(secrets, HATIDATA_ENV="production")
        local.update(HATIDATA_ENV="testing", SQLALCHEMY_DATABASE_URI=url, SECRET_KEY=secrets["SECRET_KEY"],
                     HATIDATA_COOKIE_KEY=secrets["HATIDATA_COOKIE_KEY"], REDIS_URL=redis_url,
                     CACHE_KEY_PREFIX=prefix)
    else:
        # make run's defaults: SQLite and the file cache under the instance folder, secrets generated there
        env["HATIDATA_ENV"] = "development"
        local["HATIDATA_ENV"] = "development"
    env["HATIDATA_SETTINGS"] = str(settings)
    os.environ["HATIDATA_INSTANCE_PATH"] = env["HATIDATA_INSTANCE_PATH"]
    app = create_app(local)
    with app.app_context():
        upgrade()
        organizations.sync_from_workos(db.session(), app.extensions["hatidata_workos"].client, Actor.system())
        db.session.commit()
    (folder / "warm").mkdir()
    log = (folder / "gunicorn.log").open("w")  # a pipe nobody reads would fill up and block the workers
    process = subprocess.Popen(  # our own interpreter and arguments
        [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "bench" / "auth_gunicorn.py"), "wsgi:app"],
        env=env, cwd=str(ROOT), stdout=log, stderr=log)
    served = Served(profile, port, app, process, folder, cleanup)
    deadline = time.monotonic() + 30
    while safe_status(port, raw("/healthz")) != 200:
        if time.monotonic() > deadline or process.poll() is not None:
            served.stop()
            raise RuntimeError("gunicorn did not start: " + (folder / "gunicorn.log").read_text()[-4000:])
        time.sleep(0.2)
    served.warm_ports = worker_ports(folder / "warm", workers)
    return served


def login(app: Any, email: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Sign in through the emulator's hosted flow: ``(the cookie's tokens + 'sealed', /api/v1/me)``."""
    import httpx2
    from workos.session import unseal_data

    client = app.test_client()
    response = client.get("/auth/login", query_string={"email": email})
    hop = httpx2.get(response.headers["Location"], follow_redirects=False, timeout=10)
    parts = urlsplit(hop.headers["location"])
    done = client.get(f"{parts.path}?{parts.query}")
    assert done.status_code == 302, done.get_data(as_text=True)
    sealed = client.get_cookie(COOKIE).value
    data = dict(unseal_data(sealed, app.config["HATIDATA_COOKIE_KEY"]))
    data["sealed"] = sealed
    return data, client.get("/api/v1/me").get_json()


def live_sessions(app: Any, emulator: Any, template: dict[str, Any], me: dict[str, Any],
                  count: int) -> list[tuple[str, str]]:
    """*count* more live sessions of the signed-in user: rows as a sign-in writes them, and for each an access
    token signed by the emulator's key and a sealed cookie. Returns ``[(access token, sealed cookie)]``."""
    import jwt
    from sqlalchemy import insert
    from workos.session import seal_session_from_auth_response

    from hatidata_auth.extensions import db
    from hatidata_auth.models import AuthSession

    claims = jwt.decode(template["access_token"], options={"verify_signature": False})
    now = datetime.now(UTC)
    tag = uuid.uuid4().hex[:6]
    rows, out = [], []
    for index in range(count):
        sid = f"session_bench_{tag}_{index:07d}"
        rows.append({"id": f"ses_bench_{tag}_{index:07d}", "workos_session_id": sid, "user_id": me["user_id"],
                     "organization_id": me["organization_id"], "auth_method": "sso", "remembered": False,
                     "created_at": now, "updated_at": now, "expires_at": now + timedelta(days=1)})
        token = emulator.keys.sign({**claims, "sid": sid, "jti": f"jti_{tag}_{index}", "iat": int(time.time()),
                                    "exp": int(time.time()) + 3600})
        sealed = seal_session_from_auth_response(access_token=token, refresh_token=f"rt_{tag}_{index}",
                                                 user=template["user"], cookie_password=app.config[
                                                     "HATIDATA_COOKIE_KEY"])
        out.append((token, sealed))
    with app.app_context():
        for start in range(0, len(rows), 1000):
            db.session.execute(insert(AuthSession), rows[start:start + 1000])
        db.session.commit()
    return out
