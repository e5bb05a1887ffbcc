"""Break-it: in-process renewal on hit (issue #14) against revocations, sign-outs, refreshes and the cache max age.

Each test states the promise of docs/auth.md ("Session status", "Caching and cross-process invalidation") it holds
the code to: a revocation is honoured by every layer at once in this process and within 1 s in every other worker,
and no layer answers with a status read from the database more than ``HATIDATA_SESSION_CACHE_MAX_AGE`` ago.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from flask import Flask

from hatidata_auth.extensions import db
from tests.auth_support import access_token, csrf_headers, login, sync_organizations


@pytest.fixture(params=["embedded", "suite"])
def app_config(app_config: dict[str, Any], tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, Any]:
    """``embedded``: the file cache and its revocation log, no Redis; ``suite``: the suite's backends (Redis and its
    bus when ``TEST_REDIS_URL`` is set)."""
    if request.param == "embedded":
        app_config.pop("REDIS_URL", None)
        app_config["CACHE_TYPE"] = "FileSystemCache"
        app_config["CACHE_DIR"] = str(tmp_path / "shared-cache")
    return app_config


def _sid(app: Flask, client: Any) -> str:
    return str(jwt.decode(access_token(app, client), options={"verify_signature": False})["sid"])


@pytest.mark.parametrize("credential", ["cookie", "bearer"])
def test_a_last_seen_touch_racing_a_revocation_does_not_bring_the_active_status_back(
        app: Flask, credential: str) -> None:
    """A request reads its session's status (active, from memory), a revocation evicts it (another thread of the
    worker applying the log, or the bus listener), then the same request notes the session's use: the status it
    keeps must not be the pre-revocation one, or every later request of this worker is answered "active"."""
    sync_organizations(app)
    rt = app.extensions["hatidata_auth"]
    client, admin = app.test_client(), app.test_client()
    assert login(client, "dev@acme.test").status_code == 302
    assert login(admin, "admin@acme.test").status_code == 302
    me = client.get("/api/v1/me").get_json()
    sid = _sid(app, client)
    headers = {} if credential == "cookie" else {"Authorization": f"Bearer {access_token(app, client)}"}
    probe = client if credential == "cookie" else app.test_client()
    assert probe.get("/api/v1/me", headers=headers).status_code == 200
    assert rt.bus.wait_until_ready() or not rt.bus.local_enabled()
    with app.app_context():
        status = rt.introspector.session_status(db.session(), sid)  # the request's read: active
        assert status is not None
        assert status.active
        revoked = admin.post(f"/api/v1/sessions/{me['session_id']}/revoke", json={"reason": "test"},
                             headers=csrf_headers(admin))
        assert revoked.status_code == 200, revoked.get_json()
        time.sleep(0.3)  # the bus listener has applied the revocation's echo from Redis (none on the embedded profile)
        rt.bus.local_enabled()  # another thread's request of this worker applies the log (or the bus listener ran)
        rt.introspector.touch(status)  # the same request, after the eviction: its last-seen note
        db.session.remove()
    assert probe.get("/api/v1/me", headers=headers).status_code == 401


@pytest.mark.parametrize("credential", ["cookie", "bearer", "api_key"])
def test_a_revocation_whose_invalidation_was_lost_is_honoured_within_the_max_age_under_continuous_use(
        app_config: dict[str, Any], request: pytest.FixtureRequest, credential: str) -> None:
    """The revocation is committed but never evicted nor published (a lost message): memory, the shared cache and
    the cookie memo are all renewed by a hit every 0.2 s, yet none answers from a status read more than max_age
    ago (+1 s: whole-second TTLs). Refused: 401, then 429 once the failed attempts are rate-limited."""
    from datetime import UTC, datetime

    from sqlalchemy import update

    from hatidata_auth.models import ApiKey, AuthSession, Organization

    ttl, max_age = 2, 3
    app_config["HATIDATA_SESSION_CACHE_TTL"] = ttl
    app_config["HATIDATA_SESSION_CACHE_MAX_AGE"] = max_age
    app: Flask = request.getfixturevalue("app")
    sync_organizations(app)
    with app.app_context():
        db.session.execute(update(Organization).values(session_cache_ttl=ttl))
        db.session.commit()
        db.session.remove()
    rt = app.extensions["hatidata_auth"]
    client = app.test_client()
    assert login(client, "dev@acme.test").status_code == 302
    session_id = client.get("/api/v1/me").get_json()["session_id"]
    headers: dict[str, str] = {}
    probe = client
    if credential != "cookie":
        probe = app.test_client()
        if credential == "bearer":
            headers = {"Authorization": f"Bearer {access_token(app, client)}"}
        else:
            created = client.post("/api/v1/api-keys", json={"name": "agent"},
                                  headers=csrf_headers(client)).get_json()
            headers = {"Authorization": f"Bearer {created['secret']}"}
    rt.bus.wait_until_ready()
    rt.bus.clear()
    loaded = time.monotonic()
    assert probe.get("/api/v1/me", headers=headers).status_code == 200  # read from the database now
    with app.app_context():
        if credential == "api_key":
            db.session.execute(update(ApiKey).where(ApiKey.id == created["key"]["id"])
                               .values(status="revoked", revoked_at=datetime.now(UTC)))
        else:
            db.session.execute(update(AuthSession).where(AuthSession.id == session_id)
                               .values(revoked_at=datetime.now(UTC)))
        db.session.commit()
        db.session.remove()
    answers = []
    while time.monotonic() < loaded + 2 * max_age:
        answers.append((round(time.monotonic() - loaded, 2), probe.get("/api/v1/me", headers=headers).status_code))
        time.sleep(0.2)
    shown = " ".join(f"{age}:{code}" for age, code in answers)
    assert all(code in (401, 429) for age, code in answers if age > max_age + 1), shown
