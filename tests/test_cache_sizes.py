"""Cache sizes: a deployment whose live sessions number ``HATIDATA_EXPECTED_LIVE_SESSIONS`` keeps every one in
memory, on the embedded profile (SQLite or PostgreSQL, the file cache and its revocation log) and on the
production one (Redis).

N sessions are requested in the same order pass after pass, the order in which an LRU smaller than N never hits.
Each session presents two access tokens (its cookie's and another as bearer: around a refresh a session has two).
After the first pass no request reads the database nor renders ``/api/v1/me``'s body again, and a process that
has lost its in-process caches (a new worker) answers every session from the shared cache: it reads only its
organization's access policy.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import insert
from workos.session import seal_session_from_auth_response

from hatidata_auth.api import identity_api
from hatidata_auth.embedding import cache_sizes
from hatidata_auth.extensions import db
from hatidata_auth.models import AuthSession
from tests.auth_support import access_token, login, sync_organizations, use_file_cache
from tests.sql_support import sent_statements

pytestmark = pytest.mark.slow
EXPECTED = 1_200  # past the status caches' floor (1,000) and past cachelib's default file-cache threshold (500)


@pytest.fixture(params=["file_cache", pytest.param("redis", marks=pytest.mark.redis)])
def app_config(request: pytest.FixtureRequest, app_config: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """Each profile with an in-process layer, sized for :data:`EXPECTED` live sessions; no last-seen writes."""
    if request.param == "file_cache":
        use_file_cache(app_config, tmp_path / "shared-cache")
    app_config["HATIDATA_EXPECTED_LIVE_SESSIONS"] = EXPECTED
    app_config["HATIDATA_SESSION_TOUCH_INTERVAL"] = 3600  # the writes are not what is counted here
    return app_config


@pytest.fixture
def reads(app: Flask) -> Iterator[list[str]]:
    """Every read the app sends to its database from now on: a SELECT, not the last-seen writer's lock of the rows
    it writes (``FOR UPDATE SKIP LOCKED``, off the request path)."""
    def read(statement: str) -> bool:
        flat = statement.strip().upper()
        return flat.startswith("SELECT") and not flat.endswith("FOR UPDATE SKIP LOCKED")

    with sent_statements(app, read) as found:
        yield found


def _live_sessions(app: Flask, emulator: Any, client: FlaskClient, count: int) -> list[tuple[str, str]]:
    """*count* live sessions of the signed-in member: ``[(sealed cookie, another access token)]``."""
    template = jwt.decode(access_token(app, client), options={"verify_signature": False})
    me = client.get("/api/v1/me").get_json()
    now = datetime.now(UTC)
    tag = uuid.uuid4().hex[:6]
    rows, out = [], []
    for index in range(count):
        sid = f"session_cache_{tag}_{index:05d}"
        rows.append({"id": f"ses_cache_{tag}_{index:05d}", "workos_session_id": sid, "user_id": me["user_id"],
                     "organization_id": me["organization_id"], "auth_method": "sso", "remembered": False,
                     "created_at": now, "updated_at": now, "expires_at": now + timedelta(hours=2)})
        tokens = [emulator.emulator.keys.sign({**template, "sid": sid, "jti": f"{tag}-{index}-{n}",
                                               "iat": int(time.time()), "exp": int(time.time()) + 3600})
                  for n in (1, 2)]
        sealed = seal_session_from_auth_response(access_token=tokens[0], refresh_token=f"rt_{tag}_{index}",
                                                 user={"id": template["sub"], "email": "dev@acme.test"},
                                                 cookie_password=app.config["HATIDATA_COOKIE_KEY"])
        out.append((sealed, tokens[1]))
    with app.app_context():
        db.session.execute(insert(AuthSession), rows)
        db.session.commit()
        db.session.remove()
    return out


def _one_pass(app: Flask, sessions: list[tuple[str, str]]) -> None:
    cookie_client, bearer_client = app.test_client(), app.test_client()
    for sealed, token in sessions:
        cookie_client.set_cookie(app.config["HATIDATA_COOKIE_NAME"], sealed)
        assert cookie_client.get("/api/v1/me").status_code == 200
        assert bearer_client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_the_expected_live_sessions_are_all_kept_in_memory(app: Flask, client: FlaskClient, emulator: Any,
                                                           reads: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    sync_organizations(app)
    assert login(client, "dev@acme.test").status_code == 302
    sessions = _live_sessions(app, emulator, client, EXPECTED)
    rt = app.extensions["hatidata_auth"]
    assert rt.bus.wait_until_ready()
    status_size, token_size = cache_sizes(app.config)
    assert (status_size, token_size) == (EXPECTED + EXPECTED // 4, 2 * (EXPECTED + EXPECTED // 4))

    _one_pass(app, sessions)
    assert len(rt.bus.sessions) >= EXPECTED
    assert len(rt.verifier.cache) >= 2 * EXPECTED
    assert len(rt.cookies.unsealed) >= EXPECTED
    assert len(rt.me_bodies) >= EXPECTED  # each session's identity, rendered once

    rendered: list[object] = []
    render = identity_api.jsonify
    monkeypatch.setattr(identity_api, "jsonify", lambda *a, **k: rendered.append(a) or render(*a, **k))
    for _ in range(2):  # every cache hits: not one database read, not one body rendered again
        reads.clear()
        _one_pass(app, sessions)
        assert reads == []
    assert rendered == []

    rt.bus.clear()  # a new worker: nothing in process memory, every status in the shared cache
    reads.clear()
    _one_pass(app, sessions)
    assert [r for r in reads if "auth_sessions" in r] == []
    assert len(reads) == 1  # the organization's access policy, which only process memory caches
