"""The shared (Redis) status entry of a session in use lives on: extended on a hit, never as a stale marker."""

from __future__ import annotations

import time

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st

from hatidata_auth.services.introspection import STALE, token_hash
from tests.auth_support import csrf_headers, login, sync_organizations

pytestmark = pytest.mark.redis


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


def test_no_layer_answers_with_a_status_older_than_the_max_age(app: Flask, client: FlaskClient) -> None:
    """Sessions and API keys, whatever the pace of use: renewed on hits, never past ``max_age`` since the database
    read (the clock is the introspector's, so hours pass while the Redis entries, in real time, stay live)."""
    from hatidata_auth.extensions import db
    from hatidata_auth.models import AuthSession

    sync_organizations(app)
    assert login(client, "admin@acme.test").status_code == 302
    me = client.get("/api/v1/me").get_json()
    created = client.post("/api/v1/api-keys", json={"name": "age"}, headers=csrf_headers(client)).get_json()
    rt = app.extensions["hatidata_auth"]
    introspector, redis, prefix = rt.introspector, rt.backend._write_client, rt.backend._get_prefix()
    with app.app_context():
        sid = db.session.get(AuthSession, me["session_id"]).workos_session_id
        db.session.remove()
    key_hash = token_hash(created["secret"])
    now = [time.time()]
    real_clock, introspector.clock = introspector.clock, lambda: now[0]
    max_age = introspector.max_age

    @settings(max_examples=30, deadline=None)
    @given(steps=st.lists(st.tuples(st.sampled_from(["session", "api_key"]), st.integers(0, max_age // 2),
                                    st.booleans()), min_size=1, max_size=15))
    def uses(steps: list[tuple[str, int, bool]]) -> None:
        for kind, wait, forget in steps:
            now[0] += wait
            if forget:
                rt.bus.clear()  # the shared entry answers, not this process's memory
            with app.app_context():
                if kind == "session":
                    status = introspector.session_status(db.session, sid)
                    entry = f"{prefix}auth:ses:{sid}"
                else:
                    status = introspector.api_key_status(db.session, key_hash)  # type: ignore[assignment]
                db.session.remove()
            assert status is not None
            left = status.loaded_at + max_age - now[0]
            assert left > 0
            if forget and kind == "session":  # read through the shared entry, renewed: never past the bound
                assert redis.ttl(entry) <= left + 1

    try:
        uses()
    finally:
        introspector.clock = real_clock
