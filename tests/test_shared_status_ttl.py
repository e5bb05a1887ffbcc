"""The status of a credential in use lives on in every layer: the shared (Redis) entry is extended on a hit (never
a stale marker), the in-process one renewed on a hit once half its TTL is gone; none past the max age."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hatidata_auth.services.introspection import STALE, token_hash
from tests.auth_support import access_token, cookie_value, csrf_headers, login, sync_organizations
from tests.sql_support import sent_statements

PROFILES = pytest.mark.parametrize("app_config", ["file_cache", pytest.param("redis", marks=pytest.mark.redis)],
                                   indirect=True)


@pytest.fixture
def app_config(request: pytest.FixtureRequest, app_config: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """Redis unless a test asks for ``make run``'s file cache (the in-process layer then follows the revocation
    log); no last-seen writes (not what is counted here)."""
    if getattr(request, "param", "redis") == "file_cache":
        app_config.pop("REDIS_URL", None)
        app_config["CACHE_TYPE"] = "FileSystemCache"
        app_config["CACHE_DIR"] = str(tmp_path / "shared-cache")
    app_config["HATIDATA_SESSION_TOUCH_INTERVAL"] = 3600
    return app_config


@pytest.fixture
def status_reads(app: Flask) -> Iterator[list[str]]:
    """Every SELECT of a session's or API key's status the app sends to its database from now on."""
    def keep(statement: str) -> bool:
        return statement.lstrip().upper().startswith("SELECT") and ("FROM auth_sessions" in statement
                                                                    or "FROM api_keys" in statement)

    with sent_statements(app, keep) as found:
        yield found


class _CountingCache:
    """The introspector's shared cache, counting reads (to tell an in-process answer from a shared one)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.reads = inner, 0

    def get(self, key: str) -> Any:
        self.reads += 1
        return self.inner.get(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.redis
def test_extend_gives_a_live_entry_a_full_ttl_and_leaves_a_stale_marker_alone(app: Flask) -> None:
    rt = app.extensions["hatidata_auth"]
    proxy, backend = rt.introspector.shared_cache, rt.backend
    client, prefix = backend._write_client, backend._get_prefix()
    proxy.set("auth:ses:live", {"a": 1}, timeout=5)
    assert proxy.extend("auth:ses:live", 300, unless=STALE)
    assert client.ttl(f"{prefix}auth:ses:live") > 200
    proxy.set("auth:ses:stale", STALE, timeout=10)
    assert not proxy.extend("auth:ses:stale", 300, unless=STALE)
    assert client.ttl(f"{prefix}auth:ses:stale") <= 10
    assert not proxy.extend("auth:ses:missing", 300, unless=STALE)


@pytest.mark.redis
def test_a_session_read_from_the_shared_entry_extends_it(app: Flask, client: FlaskClient) -> None:
    sync_organizations(app)
    assert login(client, "admin@acme.test").status_code == 302
    me = client.get("/api/v1/me").get_json()
    rt = app.extensions["hatidata_auth"]
    backend = rt.backend
    with app.app_context():
        from hatidata_auth.extensions import db
        from hatidata_auth.models import AuthSession

        sid = db.session.get(AuthSession, me["session_id"]).workos_session_id
    key = f"{backend._get_prefix()}auth:ses:{sid}"
    backend._write_client.delete(key)  # the sign-in left a stale marker: start from a live entry
    rt.bus.clear()
    assert client.get("/api/v1/me").status_code == 200
    assert backend._write_client.expire(key, 5)
    rt.bus.clear()  # this process's memory no longer answers: the next request reads the shared entry
    assert client.get("/api/v1/me").status_code == 200
    assert backend._write_client.ttl(key) > 200


@PROFILES
def test_no_layer_answers_with_a_status_older_than_the_max_age(app: Flask, client: FlaskClient,
                                                               status_reads: list[str]) -> None:
    """Sessions and API keys, whatever the pace of use, on both profiles: renewed on hits in every layer, never past
    ``max_age`` since the database read; and one read again within half its TTL (its in-process entry not
    forgotten) before that bound is answered from this process's memory, asking neither the shared cache nor the
    database. The introspector's clocks (wall and monotonic) are faked, so hours pass while the shared entries, in
    real time, stay live."""
    from hatidata_auth.extensions import db
    from hatidata_auth.models import AuthSession

    sync_organizations(app)
    assert login(client, "admin@acme.test").status_code == 302
    me = client.get("/api/v1/me").get_json()
    created = client.post("/api/v1/api-keys", json={"name": "age"}, headers=csrf_headers(client)).get_json()
    rt = app.extensions["hatidata_auth"]
    assert rt.bus.wait_until_ready()
    introspector = rt.introspector
    redis = rt.backend._write_client if app.config.get("REDIS_URL") else None
    with app.app_context():
        sid = db.session.get(AuthSession, me["session_id"]).workos_session_id
        db.session.remove()
    key_hash = token_hash(created["secret"])
    start, start_mono = time.time(), time.monotonic()
    now, mono = [start], [start_mono]
    clocks = introspector.clock, introspector.monotonic, introspector.shared_cache, introspector.max_age
    introspector.clock, introspector.monotonic = (lambda: now[0]), (lambda: mono[0])
    shared = introspector.shared_cache = _CountingCache(introspector.shared_cache)
    introspector.max_age = max_age = 3 * introspector.cache_ttl  # a few renewals reach the bound
    ttl = introspector.cache_ttl
    waits = st.one_of(st.integers(0, ttl // 2 - 1), st.integers(0, max_age // 2))  # kept in use, or long idles

    @settings(max_examples=60, deadline=None)
    @given(steps=st.lists(st.tuples(st.sampled_from(["session", "api_key"]), waits,
                                    st.sampled_from([False, False, False, True])), min_size=1, max_size=20))
    # in use past its TTL (renewed in memory), then up to the bound (reloaded)
    @example(steps=[("session", 0, False)] + [("session", ttl // 2 - 1, False)] * 8)
    @example(steps=[("api_key", 0, False)] + [("api_key", ttl // 2 - 1, False)] * 8)
    def uses(steps: list[tuple[str, int, bool]]) -> None:
        now[0], mono[0] = start, start_mono  # within the session's lifetime: hours at most per example
        rt.bus.clear()
        last: dict[str, tuple[float, float]] = {}  # kind -> (read at, loaded_at of the answer)
        for kind, wait, forget in steps:
            now[0] += wait
            mono[0] += wait
            if forget:
                rt.bus.clear()  # the shared entry answers, not this process's memory
                last.clear()
            before = (len(status_reads), shared.reads)
            with app.app_context():
                if kind == "session":
                    status = introspector.session_status(db.session, sid)
                else:
                    status = introspector.api_key_status(db.session, key_hash)  # type: ignore[assignment]
                db.session.remove()
            assert status is not None
            left = status.loaded_at + max_age - now[0]
            assert left > 0
            if redis is not None and forget and kind == "session":  # read through the shared entry, renewed:
                assert redis.ttl(f"{rt.backend._get_prefix()}auth:ses:{sid}") <= left + 1  # never past the bound
            previous = last.get(kind)
            # 1 s of slack: a lifetime is whole seconds when first stored
            if previous is not None and now[0] - previous[0] < ttl / 2 and now[0] < previous[1] + max_age - 1:
                assert (len(status_reads), shared.reads) == before, "renewed in memory: no other layer asked"
                assert status.loaded_at == previous[1]
            last[kind] = (now[0], status.loaded_at)

    try:
        uses()
    finally:
        introspector.clock, introspector.monotonic, introspector.shared_cache, introspector.max_age = clocks


@PROFILES
def test_a_session_in_use_past_its_ttl_is_not_reloaded_before_the_max_age(request: pytest.FixtureRequest,
                                                                         app_config: dict[str, Any]) -> None:
    """In real time, by cookie and by bearer token, a request every 50 ms: no status read from the shared cache's
    TTL (2 s) on, until the max age (6 s) since the database read; then one reload. The unsealed cookie is kept
    the whole time (renewed on its hits, its token lives far longer)."""
    ttl, max_age = 2, 6
    app_config.update(HATIDATA_SESSION_CACHE_TTL=ttl, HATIDATA_SESSION_CACHE_MAX_AGE=max_age)
    app: Flask = request.getfixturevalue("app")
    client: FlaskClient = request.getfixturevalue("client")
    reads: list[str] = request.getfixturevalue("status_reads")
    from hatidata_auth.extensions import db
    from hatidata_auth.models import AuthSession

    sync_organizations(app)
    assert login(client, "dev@acme.test").status_code == 302
    rt = app.extensions["hatidata_auth"]
    assert rt.bus.wait_until_ready()
    bearer = {"Authorization": f"Bearer {access_token(app, client)}"}
    other = app.test_client()
    me = client.get("/api/v1/me").get_json()
    with app.app_context():
        sid = db.session.get(AuthSession, me["session_id"]).workos_session_id
        db.session.remove()
    rt.backend.delete(f"auth:ses:{sid}")
    rt.bus.clear()  # from the database, now
    reads.clear()
    loaded = time.time()
    assert client.get("/api/v1/me").status_code == 200
    loaded_by = time.time()
    assert len(reads) == 1
    memo = rt.cookies.unsealed.get(hashlib.sha256((cookie_value(client) or "").encode()).digest())
    reads.clear()
    previous = last_hit = time.time()
    while time.time() < loaded + max_age - 0.5:  # three TTLs
        started = time.time()
        assert client.get("/api/v1/me").status_code == 200
        kept = rt.cookies.unsealed.get(hashlib.sha256((cookie_value(client) or "").encode()).digest())
        if started - last_hit >= ttl / 2:
            # The memo is renewed by a hit that finds less than half its TTL left, so a stall this long between hits
            # may have let it expire: unsealed anew, it is kept from here (CI's PostgreSQL run saw an equal copy).
            memo = kept
        assert kept is not None
        assert kept is memo
        last_hit = started
        assert other.get("/api/v1/me", headers=bearer).status_code == 200
        if time.time() >= loaded + max_age:  # a slow machine took this pair past the bound: a reload is due
            break
        if reads and time.time() - previous >= ttl / 2:
            # A stalled machine left the session unused for half a TTL (it is renewed once half is gone), so a
            # reload was due; the bounds count from it (CI's embedded run: reloaded 2.6 s after the read).
            # The read came between this pair's start and its end: the bounds below take the safe side of each.
            loaded, loaded_by = started, time.time()
            previous = loaded_by
            reads.clear()
            continue
        assert reads == [], f"reloaded {time.time() - loaded:.1f} s after the database read"
        previous = time.time()
        time.sleep(0.05)
    stalls = 0
    while time.time() < loaded_by + max_age + 1.5:
        assert client.get("/api/v1/me").status_code == 200
        stalls += time.time() - previous >= ttl / 2  # a reload was due as above
        previous = time.time()
        time.sleep(0.05)
    assert 1 <= len(reads) <= 1 + stalls  # past the bound: read from the database again, once, then renewed anew
