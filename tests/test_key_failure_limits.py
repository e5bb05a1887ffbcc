"""Brute-force limits on API keys count and refuse only failures: a correct key is accepted after any number
of wrong attempts, from its own address or another, and a sprayed prefix never locks its key out (issue #10,
rule 6). Real requests; with ``TEST_REDIS_URL`` the limiter's storage is Redis."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api_support import make_tenant
from tests.conftest import TEST_REDIS_URL
from tests.credential_support import bearer, new_key

ADDRESS_LIMIT = 3
PREFIX_LIMIT = 5


@pytest.fixture
def limited_app(app_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[Flask]:
    from hatidata_auth import create_app
    from hatidata_auth.extensions import db
    from tests.conftest import _empty_tables

    monkeypatch.setenv("HATIDATA_INSTANCE_PATH", str(tmp_path / "instance"))
    app_config.update(HATIDATA_API_KEY_FAILURE_RATE_LIMIT=f"{ADDRESS_LIMIT} per minute",
                      HATIDATA_API_KEY_PREFIX_FAILURE_RATE_LIMIT=f"{PREFIX_LIMIT} per minute",
                      RATELIMIT_STORAGE_URI=TEST_REDIS_URL or "memory://")
    application = create_app(app_config)
    _empty_tables(application)
    yield application
    with application.app_context():
        db.session.remove()
        db.engine.dispose()
    application.extensions["hatidata_workos"].close()


def _address() -> str:
    """An address no other test (or earlier run against the same Redis) has used."""
    value = uuid.uuid4().int
    return f"10.{value % 250}.{(value >> 8) % 250}.{(value >> 16) % 250 + 1}"


def _me(app: Flask, credential: str, address: str) -> int:
    response = app.test_client().get("/api/v1/me", headers=bearer(credential),
                                     environ_base={"REMOTE_ADDR": address})
    return response.status_code


def _wrong_secret(secret: str, salt: str) -> str:
    """Same public prefix, another secret."""
    tail = (salt * 64)[: len(secret) - 16]
    return secret[:16] + (tail if tail != secret[16:] else tail[::-1])


def _unknown_prefix_key() -> str:
    return "hd_live_" + uuid.uuid4().hex + uuid.uuid4().hex[:12]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(wrong=st.integers(min_value=ADDRESS_LIMIT + 1, max_value=3 * ADDRESS_LIMIT),
       same_prefix=st.booleans(), salt=st.sampled_from("ABCxyz019-_"))
def test_a_correct_key_is_accepted_after_wrong_attempts(limited_app: Flask, wrong: int, same_prefix: bool,
                                                        salt: str) -> None:
    tenant = make_tenant(limited_app, f"Heron{uuid.uuid4().hex[:8]}")
    _, secret = new_key(limited_app, tenant.id, tenant.users["developer"], ["data:read"])
    here, elsewhere = _address(), _address()
    answers = [_me(limited_app, _wrong_secret(secret, salt) if same_prefix else _unknown_prefix_key(), here)
               for _ in range(wrong)]
    assert set(answers[:ADDRESS_LIMIT]) == {401}
    assert answers[-1] == 429  # the address is limited for failures...
    assert _me(limited_app, secret, here) == 200  # ...never for the correct key
    assert _me(limited_app, secret, elsewhere) == 200


def test_a_sprayed_prefix_never_locks_its_key_out(limited_app: Flask) -> None:
    tenant = make_tenant(limited_app, f"Egret{uuid.uuid4().hex[:8]}")
    _, victim = new_key(limited_app, tenant.id, tenant.users["viewer"], ["data:read"])
    _, bystander = new_key(limited_app, tenant.id, tenant.users["viewer"], ["data:read"])
    # Each attacker address stays under its own limit; together they pass the victim prefix's limit.
    answers = [_me(limited_app, _wrong_secret(victim, salt), _address()) for salt in "abcdefgh"]
    assert answers[:PREFIX_LIMIT] == [401] * PREFIX_LIMIT
    assert set(answers[PREFIX_LIMIT:]) == {429}
    assert _me(limited_app, victim, _address()) == 200
    assert _me(limited_app, bystander, _address()) == 200
    # Unknown prefixes from a fresh address are not limited by the victim prefix's count.
    assert _me(limited_app, _unknown_prefix_key(), _address()) == 401
