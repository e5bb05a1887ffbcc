"""Sessions under concurrency, against real gunicorn processes (2 workers; two instances on PostgreSQL + Redis).

- many requests carrying one cookie whose access token expired: one refresh reaches WorkOS, every request
  gets its tokens, the session stays active and the cookie they return works;
- an organization switch with an expired access token rotates the request's CURRENT tokens;
- parallel refreshes of different sessions of one organization keep one unbroken audit chain;
- a failure after WorkOS rotated the refresh token never loses the new one.

The emulator issues access tokens that live one second (``access_token_ttl``, the setting behind
``WORKOS_EMULATOR_ACCESS_TOKEN_TTL``) while the test signs in, and long-lived ones afterwards.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from hatidata_auth.extensions import db
from hatidata_auth.models import AuditEvent, AuthSession
from hatidata_auth.services import audit
from tests.auth_support import GLOBEX, cookie_value, login, sync_organizations, workos_membership
from tests.support.processes import AppProcess, PrivateRedis, app_settings

pytestmark = pytest.mark.slow

COOKIE = "hatidata_session"
# Cookie-authenticated GETs that any admin may call: one burst spreads over all of them.
ROUTES = ("/api/v1/me", "/auth/organizations", "/api/v1/sessions", "/api/v1/api-keys", "/api/v1/members",
          "/api/v1/organization/settings", "/api/v1/audit-events", "/api/v1/role-mappings")


@pytest.fixture
def redis_url(app_config: dict[str, Any]) -> Iterator[str | None]:
    """PostgreSQL runs get Redis (the suite's, else a private one); SQLite runs the embedded file cache."""
    if not app_config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        yield app_config.get("REDIS_URL")
        return
    if app_config.get("REDIS_URL"):
        yield app_config["REDIS_URL"]
        return
    server = PrivateRedis()
    server.start()
    yield server.url
    server.stop()


@pytest.fixture
def app_config(app_config: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """Without Redis, every process (this one too) shares the file cache."""
    if not app_config.get("REDIS_URL"):
        app_config["CACHE_TYPE"] = "FileSystemCache"
        app_config["CACHE_DIR"] = str(tmp_path / "shared-cache")
    return app_config


@pytest.fixture
def instances(app: Flask, app_config: dict[str, Any], redis_url: str | None,
              tmp_path: Path) -> Iterator[list[str]]:
    """Base URLs: one gunicorn with 2 workers on the embedded default, two such instances on Redis; they take
    an access token as expired the moment it is (no leeway), this process keeps the leeway to sign in."""
    settings = app_settings(app_config, WORKOS_JWT_LEEWAY=0, SQLALCHEMY_ENGINE_OPTIONS={
        "pool_pre_ping": True, **({"connect_args": {"timeout": 1}} if redis_url is None else {})})
    if redis_url is not None:
        settings.update(REDIS_URL=redis_url, CACHE_TYPE="RedisCache")
    names = ["a", "b"] if redis_url is not None else ["a"]
    servers = [AppProcess(settings, tmp_path / name, workers=2, name=name) for name in names]
    try:
        for server in servers:
            server.start()
        yield [server.url for server in servers]
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def short_lived(emulator: Any) -> Iterator[Any]:
    """The emulator's access-token lifetime (s): set it short to sign in, then long for the refreshed tokens."""
    config = emulator.emulator.config
    original = config.access_token_ttl
    config.access_token_ttl = 1
    yield config
    config.access_token_ttl = original


def _claims(cookie: str, app: Flask) -> dict[str, Any]:
    from workos.session import unseal_data

    data = unseal_data(cookie, app.config["HATIDATA_COOKIE_KEY"])
    return dict(jwt.decode(data["access_token"], options={"verify_signature": False}))


def _sign_in(app: Flask, email: str) -> str:
    client: FlaskClient = app.test_client()
    assert login(client, email).status_code == 302
    value = cookie_value(client)
    assert value
    return value


def _expired(app: Flask, emulator: Any, cookies: list[str], short_lived: Any) -> None:
    """Wait until every cookie's access token has expired; tokens issued from now on live long, and WorkOS
    answers a token exchange after a realistic 300 ms (so concurrent requests overlap it)."""
    latest = max(int(_claims(c, app)["exp"]) for c in cookies)
    time.sleep(max(0.0, latest - time.time() + 0.05))
    short_lived.access_token_ttl = 600
    response = httpx2.post(f"{emulator.url}/_emulator/faults", headers={"Authorization": "Bearer sk_test_emulator"},
                           json={"method": "POST", "path": "/user_management/authenticate", "delay_ms": 300},
                           timeout=10)
    assert response.status_code == 201, response.text


def _rotations(emulator: Any, sid: str) -> int:
    """Refresh-token exchanges of the session that reached the emulator (WorkOS)."""
    store = emulator.emulator.store
    with store.lock:
        return sum(1 for rec in store.refresh_tokens.values()
                   if rec["session_id"] == sid and rec["rotated_at"] is not None)


def _record(app: Flask, sid: str) -> AuthSession:
    with app.app_context():
        record = db.session.scalar(select(AuthSession).where(AuthSession.workos_session_id == sid))
        assert record is not None
        db.session.expunge(record)
        db.session.remove()
        return record


def _refreshed_events(app: Flask, session_id: str) -> int:
    with app.app_context():
        found = db.session.scalar(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.action == "session.refreshed", AuditEvent.target_id == session_id))
        db.session.remove()
        return int(found or 0)


def _burst(calls: list[tuple[str, str, str]]) -> list[httpx2.Response]:
    """Send (method, url, cookie) calls at the same instant, one connection each."""
    barrier = threading.Barrier(len(calls))

    def one(call: tuple[str, str, str]) -> httpx2.Response:
        method, url, cookie = call
        with httpx2.Client(timeout=30, cookies={COOKIE: cookie}) as client:
            barrier.wait()
            return client.request(method, url, headers={"Accept": "application/json"})

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(one, calls))


def _new_cookie(response: httpx2.Response) -> str | None:
    return response.cookies.get(COOKIE)


def test_one_refresh_for_many_concurrent_requests_with_one_expired_cookie(
    app: Flask, emulator: Any, short_lived: Any, instances: list[str],
) -> None:
    sync_organizations(app)
    cookie = _sign_in(app, "admin@globex.test")
    sid = str(_claims(cookie, app)["sid"])
    _expired(app, emulator, [cookie], short_lived)
    calls = [("GET", f"{instances[i % len(instances)]}{route}", cookie) for i, route in enumerate(ROUTES)]
    responses = _burst(calls)
    assert [r.status_code for r in responses] == [200] * len(ROUTES), [r.text[:200] for r in responses]
    assert _rotations(emulator, sid) == 1
    record = _record(app, sid)
    assert record.revoked_at is None
    assert _refreshed_events(app, record.id) == 1
    returned = {_new_cookie(r) for r in responses}
    assert len(returned) == 1  # every request answered with the winner's tokens
    new_cookie = returned.pop()
    assert new_cookie is not None
    for url in instances:  # the new cookie works everywhere, without another refresh
        again = httpx2.get(f"{url}/api/v1/me", cookies={COOKIE: new_cookie}, timeout=10)
        assert again.status_code == 200
        assert _new_cookie(again) is None
    # The spent cookie still leads to its successor for a while (a tab that missed the new cookie).
    late = httpx2.get(f"{instances[-1]}/api/v1/me", cookies={COOKIE: cookie}, timeout=10)
    assert late.status_code == 200
    assert _new_cookie(late) == new_cookie
    assert _rotations(emulator, sid) == 1


def _csrf(url: str, cookie: str) -> tuple[dict[str, str], dict[str, str]]:
    """A CSRF token and the Flask session cookie it is bound to."""
    response = httpx2.get(f"{url}/auth/csrf", cookies={COOKIE: cookie}, timeout=10)
    assert response.status_code == 200
    return {"X-CSRFToken": response.json()["csrf_token"]}, dict(response.cookies)


def test_switch_after_expiry_and_concurrent_requests_use_the_current_tokens(
    app: Flask, emulator: Any, short_lived: Any, instances: list[str],
) -> None:
    orgs = sync_organizations(app)
    # A member of two organizations whose sign-in Acme (the owner of acme.test) vouches for in both.
    workos_membership(app, "dev@acme.test", GLOBEX, "viewer")
    cookie = _sign_in(app, "dev@acme.test")
    sid = str(_claims(cookie, app)["sid"])
    current = _record(app, sid).organization_id
    target = next(org for org in orgs.values() if org != current and _member(app, sid, org))
    headers, flask_cookies = _csrf(instances[0], cookie)
    _expired(app, emulator, [cookie], short_lived)
    barrier = threading.Barrier(6)

    def switch() -> httpx2.Response:
        with httpx2.Client(timeout=30, cookies={COOKIE: cookie, **flask_cookies}) as client:
            barrier.wait()
            return client.post(f"{instances[0]}/auth/switch-organization", json={"organization_id": target},
                               headers={**headers, "Accept": "application/json"})

    def read(i: int) -> httpx2.Response:
        with httpx2.Client(timeout=30, cookies={COOKIE: cookie}) as client:
            barrier.wait()
            return client.get(f"{instances[i % len(instances)]}/api/v1/me")

    with ThreadPoolExecutor(6) as pool:
        switched = pool.submit(switch)
        reads = [pool.submit(read, i) for i in range(5)]
        response = switched.result()
        others = [r.result() for r in reads]
    assert response.status_code == 200, response.text
    assert response.json()["organization_id"] == target
    assert [r.status_code for r in others] == [200] * 5, [r.text[:200] for r in others]
    assert _rotations(emulator, sid) <= 2  # at most one refresh, plus the switch itself
    new_cookie = _new_cookie(response)
    assert new_cookie is not None
    me = httpx2.get(f"{instances[-1]}/api/v1/me", cookies={COOKIE: new_cookie}, timeout=10)
    assert me.status_code == 200
    assert me.json()["organization_id"] == target
    record = _record(app, sid)
    assert record.revoked_at is None
    assert record.organization_id == target
    # Logout reads the request's tokens too: a cookie rotated twice since still ends the session.
    headers, flask_cookies = _csrf(instances[0], cookie)
    out = httpx2.post(f"{instances[0]}/auth/logout", cookies={COOKIE: cookie, **flask_cookies}, headers=headers,
                      timeout=10)
    assert out.status_code == 303
    assert _record(app, sid).revoked_at is not None
    assert httpx2.get(f"{instances[-1]}/api/v1/me", cookies={COOKIE: new_cookie}, timeout=10).status_code == 401


def _member(app: Flask, sid: str, organization_id: str) -> bool:
    from hatidata_auth.models import Membership

    record = _record(app, sid)
    with app.app_context():
        found = db.session.scalar(select(Membership.id).where(Membership.organization_id == organization_id,
                                                              Membership.user_id == record.user_id,
                                                              Membership.status == "active"))
        db.session.remove()
    return found is not None


def test_parallel_refreshes_of_different_sessions_in_one_organization(
    app: Flask, emulator: Any, short_lived: Any, instances: list[str],
) -> None:
    sync_organizations(app)
    emails = ["admin@initech.test", "dev@initech.test", "viewer@initech.test"]
    cookies = [_sign_in(app, email) for email in emails for _ in range(2)]  # six sessions of one organization
    sids = [str(_claims(c, app)["sid"]) for c in cookies]
    organization_id = _record(app, sids[0]).organization_id
    _expired(app, emulator, cookies, short_lived)
    calls = [("GET", f"{instances[i % len(instances)]}/api/v1/me", cookie)
             for i, cookie in enumerate(cookies * 2)]
    responses = _burst(calls)
    assert [r.status_code for r in responses] == [200] * len(calls), [r.text[:200] for r in responses]
    for sid in sids:
        assert _rotations(emulator, sid) == 1
        record = _record(app, sid)
        assert record.revoked_at is None
        assert record.organization_id == organization_id
        assert _refreshed_events(app, record.id) == 1
    with app.app_context():
        report = audit.verify_organization(db.session, organization_id)
        db.session.remove()
    assert report.ok, report


class _ChainHeld:
    """Hold the organization's audit chain from outside the app (the SQLite write lock, or the head row on
    PostgreSQL) so that the app's append after WorkOS rotated the token fails; :meth:`fail_waiter` makes a
    waiting PostgreSQL append fail now (its connection is cut), SQLite's fails on its own (busy timeout)."""

    def __init__(self, url: str, organization_id: str) -> None:
        self.url = url
        self.organization_id = organization_id
        self._conn: Any = None

    def __enter__(self) -> _ChainHeld:
        if self.url.startswith("sqlite"):
            import sqlite3

            self._conn = sqlite3.connect(self.url.removeprefix("sqlite:///"), isolation_level=None)
            self._conn.execute("BEGIN IMMEDIATE")
        else:
            import psycopg

            self._conn = psycopg.connect(self.url.replace("postgresql+psycopg", "postgresql"))
            self._conn.execute("SELECT seq FROM audit_chain_heads WHERE chain_key = %s FOR UPDATE",
                               (self.organization_id,))
        return self

    def fail_waiter(self, deadline: float) -> None:
        if self.url.startswith("sqlite"):
            return
        import psycopg

        with psycopg.connect(self.url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as admin:
            while time.monotonic() < deadline:
                killed = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                                       "datname = current_database() AND wait_event_type = 'Lock'").fetchall()
                if killed:
                    return
                time.sleep(0.05)
        raise AssertionError("the app never waited for the audit chain")

    def __exit__(self, *exc: object) -> None:
        self._conn.rollback()
        self._conn.close()


def test_a_failure_after_rotation_never_loses_the_new_refresh_token(
    app: Flask, app_config: dict[str, Any], emulator: Any, short_lived: Any, instances: list[str],
) -> None:
    sync_organizations(app)
    cookie = _sign_in(app, "dev@globex.test")
    sid = str(_claims(cookie, app)["sid"])
    record = _record(app, sid)
    _expired(app, emulator, [cookie], short_lived)
    with _ChainHeld(app_config["SQLALCHEMY_DATABASE_URI"], record.organization_id) as held, \
            ThreadPoolExecutor(1) as pool:
        pending = pool.submit(httpx2.get, f"{instances[0]}/api/v1/me", cookies={COOKIE: cookie}, timeout=30)
        held.fail_waiter(time.monotonic() + 20)
        failed = pending.result()
    assert failed.status_code == 503, failed.text  # the audit append failed after WorkOS rotated the token
    assert _rotations(emulator, sid) == 1
    new_cookie = _new_cookie(failed)
    assert new_cookie is not None  # the failing answer still carries the successor
    retried = httpx2.get(f"{instances[-1]}/api/v1/me", cookies={COOKIE: cookie}, timeout=10)
    assert retried.status_code == 200, retried.text  # the spent cookie leads to the successor
    assert _new_cookie(retried) == new_cookie
    assert httpx2.get(f"{instances[0]}/api/v1/me", cookies={COOKIE: new_cookie}, timeout=10).status_code == 200
    assert _rotations(emulator, sid) == 1
    assert _record(app, sid).revoked_at is None
