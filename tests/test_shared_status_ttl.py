"""The shared (Redis) status entry of a session in use lives on: extended on a hit, never as a stale marker."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from hatidata_auth.services.introspection import STALE
from tests.auth_support import login, sync_organizations

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
