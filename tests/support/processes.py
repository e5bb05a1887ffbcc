"""Real server processes for the fault tests: a private PostgreSQL, a private Redis and gunicorn app instances.

Every process listens on 127.0.0.1 on a free port and is stopped by its fixture; none of them touches the
shared PostgreSQL (:5432) or Redis (:6379). A missing binary skips the test, or fails it when
``HATIDATA_TEST_REQUIRE_SERVICES=1`` (CI).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

ROOT = Path(__file__).resolve().parents[2]
PG_BIN = Path(os.environ.get("HATIDATA_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
REQUIRE_SERVICES = os.environ.get("HATIDATA_TEST_REQUIRE_SERVICES") == "1"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def missing(what: str) -> None:
    """Skip, or fail when services are required."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{what} is missing and HATIDATA_TEST_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(f"{what} is missing")


def wait_for_port(port: int, timeout: float = 20.0, up: bool = True) -> None:
    """Wait until 127.0.0.1:*port* accepts connections (or, with ``up=False``, refuses them)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                if up:
                    return
        except OSError:
            if not up:
                return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} did not come {'up' if up else 'down'} within {timeout}s")


# --- PostgreSQL ----------------------------------------------------------------------------------------------


class PrivatePostgres:
    """A throw-away PostgreSQL cluster (trust auth, fsync off) that tests may stop and start."""

    def __init__(self) -> None:
        for tool in ("initdb", "pg_ctl", "postgres"):
            if not (PG_BIN / tool).exists():
                missing(f"PostgreSQL binary {PG_BIN / tool}")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="hd-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "--no-sync", "-E", "UTF8")

    def _run(self, *argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        command = ["runuser", "-u", "postgres", "--", *argv] if self._as_postgres else list(argv)
        return subprocess.run(command, check=check, capture_output=True, text=True, timeout=timeout,
                              cwd=str(self.dir))

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL of *database*."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync=off "
                   "-c client_connection_check_interval=200 -c max_connections=100")
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options, "-w",
                  "-t", "30", "start")
        wait_for_port(self.port)

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server (``immediate``: like a crash, connections are cut)."""
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop", check=False)
        wait_for_port(self.port, up=False)

    def create_database(self, name: str) -> str:
        """Create a database; returns its URL."""
        from sqlalchemy import create_engine, text

        engine = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        return self.url(name)

    def destroy(self) -> None:
        """Stop and delete the cluster."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PrivatePostgres]:
    """A private PostgreSQL for the module (port free, data in a temp dir)."""
    server = PrivatePostgres()
    server.start()
    yield server
    server.destroy()


def migrated_database(server: PrivatePostgres, name: str, instance: Path) -> str:
    """Create *name* on *server* and run the migrations into it; returns the URL."""
    from cryptography.fernet import Fernet
    from flask_migrate import upgrade

    from hatidata_auth import create_app
    from hatidata_auth.extensions import db

    url = server.create_database(name)
    app = create_app({"HATIDATA_ENV": "testing", "SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": "x" * 40,
                      "HATIDATA_COOKIE_KEY": Fernet.generate_key().decode(), "CACHE_DIR": str(instance)})
    with app.app_context():
        upgrade()
        db.engine.dispose()
    return url


# --- Redis ---------------------------------------------------------------------------------------------------


class PrivateRedis:
    """A redis-server of our own (no persistence) that tests may kill, pause and restart."""

    def __init__(self) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            missing("redis-server")
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The Redis URL (database 0)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start and wait until it accepts connections."""
        assert self.binary is not None
        self.proc = subprocess.Popen(  # our own arguments
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)

    def kill(self) -> None:
        """Kill the server (every connection drops; the data is gone)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None
        wait_for_port(self.port, up=False)

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open, nothing answers."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Unfreeze after :meth:`pause`."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Stop for good (resuming first, if paused)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
        self.kill()


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A private Redis for one test."""
    server = PrivateRedis()
    server.start()
    yield server
    server.stop()


# --- gunicorn app instances ------------------------------------------------------------------------------------


class AppProcess:
    """The app under gunicorn in its own process group, configured by a settings file."""

    def __init__(self, settings: dict[str, Any], workdir: Path, *, workers: int = 2, threads: int = 1,
                 env: dict[str, str] | None = None, name: str = "app") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.settings_file = workdir / f"{name}-settings.py"
        self.settings_file.write_text("".join(f"{k} = {v!r}\n" for k, v in settings.items()))
        self.log_path = workdir / f"{name}-gunicorn.log"
        self.workers = workers
        self.threads = threads
        self.extra_env = env or {}
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> AppProcess:
        """Start gunicorn and wait for ``/healthz``."""
        env = {**os.environ, "HATIDATA_ENV": "testing", "HATIDATA_SETTINGS": str(self.settings_file),
               "HATIDATA_INSTANCE_PATH": str(self.workdir / f"{self.name}-instance"), "PYTHONPATH": str(ROOT),
               "PORT": str(self.port), "WEB_CONCURRENCY": str(self.workers), "GUNICORN_THREADS": str(self.threads),
               "GUNICORN_ACCESS_LOG": "-", **self.extra_env}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        env.update({k: v for k, v in self.extra_env.items()})
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(  # our own interpreter and arguments
            [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "config" / "gunicorn.conf.py"), "wsgi:app"],
            env=env, cwd=str(ROOT), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.log_text()[-3000:]}")
            try:
                if httpx2.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx2.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gunicorn did not start: {self.log_text()[-3000:]}")

    def log_text(self) -> str:
        """Everything gunicorn and the app wrote."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def worker_pids(self) -> list[int]:
        """The current worker processes (children of the master)."""
        assert self.proc is not None
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(p) for p in children.read_text().split()] if children.exists() else []

    def stop(self) -> None:
        """Stop gunicorn (TERM, then KILL)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self.proc = None

    def __enter__(self) -> AppProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def app_settings(app_config: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """The settings an :class:`AppProcess` needs to act as the same deployment as the test's ``app``."""
    keys = ("SQLALCHEMY_DATABASE_URI", "SECRET_KEY", "HATIDATA_COOKIE_KEY", "WORKOS_BASE_URL", "CACHE_KEY_PREFIX",
            "WORKOS_WEBHOOK_SECRET", "REDIS_URL", "CACHE_TYPE", "CACHE_DIR")
    values = {k: app_config[k] for k in keys if app_config.get(k) is not None}
    values["HATIDATA_INBOX_APPLIERS"] = 1  # the testing profile runs none unless asked: these serve webhooks
    values.update(overrides)
    return values
