"""The unsealed-cookie memo: renewed while in use, never past its access token's ``exp``, evicted with its session.

It only spares the Fernet unsealing (whether the session is good is asked of the introspector after every answer),
but it must not keep tokens longer than they are good, nor those of a revoked session.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st

from hatidata_auth.cookie_tokens import CookieSessions
from hatidata_auth.revocation_bus import RevocationBus
from tests.auth_support import cookie_value, csrf_headers, login, sync_organizations, use_file_cache


def _data(exp: float | None, sid: str | None = "session_1") -> dict[str, Any]:
    claims: dict[str, Any] = {"sub": "user_1"}
    if exp is not None:
        claims["exp"] = int(exp)
    if sid is not None:
        claims["sid"] = sid
    # never verified here: the memo only reads when its token ends and which session it belongs to
    return {"access_token": jwt.encode(claims, "k" * 32, algorithm="HS256"), "refresh_token": "rt"}


@settings(max_examples=200, deadline=None)
@given(ttl=st.integers(1, 600), token_left=st.integers(-60, 2_000), pace=st.integers(1, 400))
def test_the_memo_never_outlives_its_token(ttl: int, token_left: int, pace: int) -> None:
    """Any TTL, token lifetime and pace of hits: answered only before the token's ``exp``, and (read at least every
    half TTL) up to it."""
    memo = CookieSessions(4, ttl=ttl)
    exp = int(time.time()) + token_left
    start = time.monotonic()
    memo.keep(b"digest", _data(exp), None)
    ends_in = exp - time.time()  # the token's remaining life, as the memo saw it (whole seconds of exp)
    if ends_in <= 0:
        assert memo.unsealed.get(b"digest") is None
        return
    now = start
    while now < start + ends_in + pace:
        found = memo.unsealed.get(b"digest", now=now)
        if now >= start + ends_in + 0.01:
            assert found is None, "answered past the token's exp"
        elif pace * 2 < ttl and now < start + ends_in - 0.01:
            assert found is not None, "dropped while in use before the token's exp"
        if found is None and now < start + ends_in:
            break  # let lapse (pace over half the TTL): gone until unsealed again
        now += pace


def test_a_token_without_exp_or_session_is_not_memoised_nor_one_unsealed_across_an_eviction() -> None:
    bus = RevocationBus(None)
    memo = CookieSessions(4, ttl=300, bus=bus)
    memo.keep(b"no-exp", _data(None), bus.epoch)
    memo.keep(b"no-sid", _data(time.time() + 300, sid=None), bus.epoch)
    memo.keep(b"garbage", {"access_token": "not a jwt", "refresh_token": "rt"}, bus.epoch)
    assert len(memo.unsealed) == 0
    epoch = bus.epoch
    bus.evict("session", "session_1")  # a revocation while the cookie was being unsealed
    memo.keep(b"raced", _data(time.time() + 300), epoch)
    assert memo.unsealed.get(b"raced") is None
    memo.keep(b"kept", _data(time.time() + 300), bus.epoch)
    assert memo.unsealed.get(b"kept") is not None
    bus.evict("session", "session_2")  # another session's eviction leaves it
    assert memo.unsealed.get(b"kept") is not None
    bus.evict("session", "session_1")
    assert memo.unsealed.get(b"kept") is None
    memo.keep(b"kept", _data(time.time() + 300), bus.epoch)
    bus.clear()  # a message may have been missed: everything goes
    assert len(memo.unsealed) == 0


@pytest.fixture(params=["file_cache", pytest.param("redis", marks=pytest.mark.redis)])
def app_config(request: pytest.FixtureRequest, app_config: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """Each profile with an in-process layer."""
    if request.param == "file_cache":
        use_file_cache(app_config, tmp_path / "shared-cache")
    return app_config


def test_a_revoked_sessions_cookie_leaves_the_memo(app: Flask, client: FlaskClient) -> None:
    from hatidata_auth.extensions import db
    from hatidata_auth.models import AuthSession

    sync_organizations(app)
    rt = app.extensions["hatidata_auth"]
    assert rt.bus.wait_until_ready()
    assert login(client, "admin@acme.test").status_code == 302
    victim = app.test_client()
    assert login(victim, "dev@acme.test").status_code == 302
    victim_id = victim.get("/api/v1/me").get_json()["session_id"]
    digests = {name: hashlib.sha256((cookie_value(c) or "").encode()).digest()
               for name, c in (("admin", client), ("victim", victim))}
    started = time.monotonic()
    # The sign-ins' own evictions (applied again from the log or the channel) may drop what their first request
    # memoised: conservative, and once only.
    while not all(rt.cookies.unsealed.get(d) is not None for d in digests.values()):
        assert time.monotonic() - started < 2, "the cookies in use were not memoised"
        assert client.get("/api/v1/me").status_code == victim.get("/api/v1/me").status_code == 200
        time.sleep(0.05)
    with app.app_context():
        assert db.session.get(AuthSession, victim_id) is not None
        db.session.remove()

    revoked = client.post(f"/api/v1/sessions/{victim_id}/revoke", json={"reason": "lost laptop"},
                          headers=csrf_headers(client))
    assert revoked.status_code == 200
    assert rt.cookies.unsealed.get(digests["victim"]) is None
    assert rt.cookies.unsealed.get(digests["admin"]) is not None  # only that session's
    assert victim.get("/api/v1/me").status_code == 401
