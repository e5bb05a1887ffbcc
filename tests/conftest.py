"""Shared fixtures: the emulator, a migrated database, the app and its clients.

Backends are chosen by the environment:

- ``TEST_DATABASE_URL`` (e.g. ``postgresql+psycopg://postgres@127.0.0.1:5432/test``): run on PostgreSQL. The
  session creates a private database next to the named one and drops it at the end, so runs don't collide.
  Unset: a SQLite file in a temporary folder.
- ``TEST_REDIS_URL`` (e.g. ``redis://127.0.0.1:6379/0``): use Redis as the cache, under a private key prefix.
- ``HATIDATA_TEST_REQUIRE_SERVICES=1``: a service that is named but unreachable, or not named at all, fails
  the run instead of skipping the tests that need it (CI sets it).
"""

from __future__ import annotations

import functools
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from cryptography.fernet import Fernet
from flask import Flask
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

pytest_plugins = ["tests.support.openapi", "tests.support.servers"]

REQUIRE_SERVICES = os.environ.get("HATIDATA_TEST_REQUIRE_SERVICES") == "1"
TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL") or None
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL") or None
SESSION_TAG = uuid.uuid4().hex[:10]


def _check_postgres(url: str) -> None:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    finally:
        engine.dispose()


def _check_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    finally:
        client.close()


def pytest_sessionstart(session: pytest.Session) -> None:
    """Fail the whole run at once when a required service is missing."""
    problems = []
    if REQUIRE_SERVICES and not TEST_DATABASE_URL:
        problems.append("HATIDATA_TEST_REQUIRE_SERVICES=1 but TEST_DATABASE_URL is not set")
    if REQUIRE_SERVICES and not TEST_REDIS_URL:
        problems.append("HATIDATA_TEST_REQUIRE_SERVICES=1 but TEST_REDIS_URL is not set")
    for name, url, check in (("PostgreSQL", TEST_DATABASE_URL, _check_postgres),
                             ("Redis", TEST_REDIS_URL, _check_redis)):
        if url:
            try:
                check(url)
            except Exception as exc:  # noqa: BLE001 - report any connection failure
                problems.append(f"{name} at {make_url(url).render_as_string(hide_password=True)} "
                                f"is unreachable: {exc}")
    if problems:
        raise pytest.UsageError("test services missing:\n  " + "\n  ".join(problems))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip PostgreSQL- or Redis-only tests on the embedded backends, unless services are required."""
    for item in items:
        if "postgres" in item.keywords and not TEST_DATABASE_URL:
            item.add_marker(pytest.mark.skip(reason="needs PostgreSQL: set TEST_DATABASE_URL"))
        if "redis" in item.keywords and not TEST_REDIS_URL:
            item.add_marker(pytest.mark.skip(reason="needs Redis: set TEST_REDIS_URL"))


# --- the WorkOS emulator ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def emulator_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One emulator on a free port for the whole session (real HTTP, demo seed)."""
    from workos_emulator.testing import EmulatorServer

    server = EmulatorServer(data_dir=str(tmp_path_factory.mktemp("emulator")))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def emulator(emulator_server: Any) -> Any:
    """The session's emulator, reset to the demo seed before the test."""
    emulator_server.reset()
    return emulator_server


# --- the database ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated, empty database private to this test session."""
    from flask_migrate import upgrade

    from hatidata_auth import create_app

    if TEST_DATABASE_URL:
        admin_url = make_url(TEST_DATABASE_URL)
        name = f"hd_test_{SESSION_TAG}"
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = admin_url.set(database=name).render_as_string(hide_password=False)
    else:
        admin = None
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.sqlite3'}"
    app = create_app(_base_config(url, tmp_path_factory.mktemp("instance")))
    with app.app_context():
        upgrade()
        from hatidata_auth.extensions import db

        db.engine.dispose()
    yield url
    if admin is not None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _base_config(database_url: str, instance: Path) -> dict[str, Any]:
    config: dict[str, Any] = {
        "HATIDATA_ENV": "testing",
        "SQLALCHEMY_DATABASE_URI": database_url,
        "SECRET_KEY": "test-secret-key-" + "x" * 32,
        "HATIDATA_COOKIE_KEY": Fernet.generate_key().decode(),
        "WORKOS_WEBHOOK_SECRET": "whsec_test_secret_value",
        "CACHE_DIR": str(instance / "cache"),
        "CACHE_KEY_PREFIX": f"hatidata-test-{SESSION_TAG}:",
        "HATIDATA_PUBLIC_URL": "http://localhost",  # the Flask test client's origin
    }
    if TEST_REDIS_URL:
        config["REDIS_URL"] = TEST_REDIS_URL
    return config


def _empty_tables(app: Flask) -> None:
    from hatidata_auth.extensions import db

    with app.app_context():
        db.session.remove()
        with db.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # The append-only trigger on audit_events refuses DELETE; this transaction alone skips it.
                conn.execute(text("SET LOCAL session_replication_role = replica"))
            for table in reversed(db.metadata.sorted_tables):
                conn.execute(table.delete())


# --- the app -----------------------------------------------------------------------------------------


@pytest.fixture
def app_config(database_url: str, emulator: Any, tmp_path: Path) -> dict[str, Any]:
    """The configuration of the app under test; tests may change it before asking for ``app``."""
    config = _base_config(database_url, tmp_path)
    config["WORKOS_BASE_URL"] = emulator.url
    return config


@pytest.fixture
def app(app_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Flask]:
    """The app, on an emptied database, against the emulator reset to the demo seed."""
    monkeypatch.setenv("HATIDATA_INSTANCE_PATH", str(tmp_path / "instance"))
    from hatidata_auth import create_app
    from hatidata_auth.extensions import cache, db

    application = create_app(app_config)
    _register_redirect_uris(application)
    _empty_tables(application)
    with application.app_context():
        cache.clear()
    yield application
    with application.app_context():
        db.session.remove()
        db.engine.dispose()
    application.extensions["hatidata_workos"].close()


def _register_redirect_uris(app: Flask) -> None:
    """Register the app's callbacks and its sign-out return at its public URL with the emulator, as an operator
    does in the WorkOS dashboard (WorkOS sends a code only to a registered redirect URI)."""
    from hatidata_auth.idp.registry import get_registry

    public = str(app.config["HATIDATA_PUBLIC_URL"]).rstrip("/")
    paths = [rule.rule for rule in app.url_map.iter_rules() if rule.rule.endswith("/callback")]
    names = get_registry(app).names()
    uris = [public + path.replace("<plugin>", name) for path in paths for name in names if "<plugin>" in path]
    uris += [public + path for path in paths if "<" not in path]
    http = _emulator_http(str(app.config["WORKOS_BASE_URL"]))
    for kind, uri in [*(("redirect", u) for u in uris), ("logout", public + "/")]:
        response = http.post("/_emulator/redirect_uris", json={"kind": kind, "uri": uri})
        assert response.status_code in (200, 201), response.text


@functools.cache
def _emulator_http(base_url: str) -> httpx2.Client:
    """One kept-alive client per emulator for the session: a new client per test cost ~0.1 s of every setup."""
    return httpx2.Client(base_url=base_url, timeout=10, headers={"Authorization": "Bearer sk_test_emulator"})


@pytest.fixture
def clock(app: Flask) -> Iterator[list[float]]:
    """The introspector's and the last-seen writer's clock (epoch seconds), moved by the test (no sleeps)."""
    rt = app.extensions["hatidata_auth"]
    now = [time.time()]
    saved = rt.introspector.clock, rt.last_seen.clock
    rt.introspector.clock = rt.last_seen.clock = lambda: now[0]
    yield now
    rt.introspector.clock, rt.last_seen.clock = saved


@pytest.fixture
def db_session(app: Flask) -> Iterator[Any]:
    """The SQLAlchemy session inside an app context."""
    from hatidata_auth.extensions import db

    with app.app_context():
        yield db.session


@pytest.fixture
def workos_client(app: Flask) -> Any:
    """The app's own SDK client (real HTTP to the emulator)."""
    return app.extensions["hatidata_workos"].client
