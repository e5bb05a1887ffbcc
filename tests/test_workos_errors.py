"""One translation of WorkOS's failures, over every failure the emulator can inject (real SDK, real HTTP).

``WorkOSUnavailable`` (transient: connection refused, timeout, 5xx, 429 rate limit), ``WorkOSNotFound`` (404),
``WorkOSRejected`` (any other 4xx, carrying WorkOS's code); and the app treats a rate limit as transient
everywhere: a login and a refresh alike answer 503 and keep the session.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from workos.session import seal_data, unseal_data

from hatidata_auth.errors import ServiceUnavailable
from hatidata_auth.extensions import db
from hatidata_auth.models import AuthSession
from hatidata_auth.services import login as login_service
from hatidata_auth.services.login import LoginFailed
from hatidata_auth.services.session_refresh import Tokens
from hatidata_auth.workos import (
    WorkOSFailure,
    WorkOSGateway,
    WorkOSNotFound,
    WorkOSRejected,
    WorkOSSettings,
    WorkOSUnavailable,
    translate_errors,
)
from tests.auth_support import authorize, callback_path, cookie_value, forge_token, login, start_login
from tests.auth_support import sync_organizations as mirror_demo
from tests.support.servers import http_json
from workos_emulator import DEFAULT_API_KEY, DEFAULT_CLIENT_ID

KEY = {"Authorization": f"Bearer {DEFAULT_API_KEY}"}
BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def _gateway(base_url: str) -> WorkOSGateway:
    return WorkOSGateway(WorkOSSettings(api_key=DEFAULT_API_KEY, client_id=DEFAULT_CLIENT_ID, base_url=base_url,
                                        timeout=1.0, max_retries=0, jwt_leeway=5.0, webhook_secret=None,
                                        webhook_tolerance=180))


@pytest.fixture
def gateway(emulator: Any) -> Iterator[WorkOSGateway]:
    gw = _gateway(emulator.url)
    yield gw
    gw.close()


def _inject(emulator: Any, **fault: Any) -> None:
    code, body = http_json("POST", f"{emulator.url}/_emulator/faults", {"count": 1, **fault}, KEY)
    assert code == 201, body


def _other_organizations(gateway: WorkOSGateway) -> list[str]:
    """Seeded organizations other than Acme (the issue's example)."""
    orgs = gateway.client.organizations.list_organizations(limit=100, order="asc").data
    ids = [o.id for o in orgs if "acme" not in o.name.lower()]
    assert ids
    return ids


def _expected(status: int) -> type[WorkOSFailure]:
    if status == 404:
        return WorkOSNotFound
    if status == 429 or status >= 500:
        return WorkOSUnavailable
    return WorkOSRejected


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422, 429, 500, 502, 503, 504])
def test_each_injected_status_translates_to_one_class(emulator: Any, gateway: WorkOSGateway, status: int) -> None:
    for workos_id in _other_organizations(gateway):
        _inject(emulator, method="GET", path="/organizations/*", status=status)
        with pytest.raises(WorkOSFailure) as info, translate_errors():
            gateway.client.organizations.get_organization(workos_id)
        error = info.value
        assert type(error) is _expected(status)
        assert error.http_status == status
        assert error.transient is (status == 429 or status >= 500)
        assert error.workos_code  # WorkOS's code travels with the error
        assert error.request_id
        assert gateway.client.organizations.get_organization(workos_id).id == workos_id  # one-shot fault


def test_a_rate_limit_is_transient_with_its_retry_hint(emulator: Any, gateway: WorkOSGateway) -> None:
    _inject(emulator, method="GET", path="/directories", status=429)
    with pytest.raises(WorkOSUnavailable) as info, translate_errors():
        gateway.client.directory_sync.list_directories(limit=5)
    assert info.value.reason == "http_429"
    assert info.value.status == 503
    assert info.value.headers["Retry-After"].isdigit()


def test_a_slow_workos_is_unavailable(emulator: Any, gateway: WorkOSGateway) -> None:
    _inject(emulator, method="GET", path="/organizations", delay_ms=8000)
    started = time.monotonic()
    with pytest.raises(WorkOSUnavailable) as info, translate_errors():
        gateway.client.organizations.list_organizations(limit=1)
    assert info.value.reason == "timeout"
    assert info.value.http_status is None
    assert time.monotonic() - started < 5.0  # cut at the 1 s timeout, not the 8 s answer, with room for a loaded CI


def test_an_unreachable_workos_is_unavailable() -> None:
    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    gw = _gateway(f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(WorkOSUnavailable) as info:
            gw.ping()
        assert info.value.reason == "connection"
        assert info.value.transient
    finally:
        gw.close()


def test_errors_that_are_not_workos_pass_through_unchanged() -> None:
    with pytest.raises(KeyError), translate_errors():
        raise KeyError("not WorkOS")
    already = WorkOSNotFound("gone", reason="entity_not_found", http_status=404)
    with pytest.raises(WorkOSNotFound) as info, translate_errors():
        raise already
    assert info.value is already


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(status=st.integers(min_value=400, max_value=599),
       code=st.from_regex(r"[a-z][a-z_]{2,30}", fullmatch=True))
def test_the_class_follows_from_the_status_alone(emulator: Any, gateway: WorkOSGateway, status: int,
                                                code: str) -> None:
    _inject(emulator, method="GET", path="/directories", status=status,
            body={"message": f"injected {code}", "code": code})
    with pytest.raises(WorkOSFailure) as info, translate_errors():
        gateway.client.directory_sync.list_directories(limit=3, order="asc")
    assert type(info.value) is _expected(status)
    assert info.value.workos_code == code
    assert info.value.message == f"injected {code}"
    assert info.value.transient is isinstance(info.value, WorkOSUnavailable)


# --- the app: a rate limit is transient at login and at refresh alike ------------------------------------


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    app_config["WORKOS_MAX_RETRIES"] = 0  # the SDK would otherwise retry the one-shot 429 away
    return app_config


def test_a_rate_limited_login_is_a_503_to_retry(app: Flask, client: FlaskClient, emulator: Any) -> None:
    mirror_demo(app)
    for email in ("dev@globex.test", "viewer@initech.test"):
        pending = callback_path(authorize(start_login(client, email=email)))
        _inject(emulator, method="POST", path="/user_management/authenticate", status=429)
        response = client.get(pending, headers=BROWSER)
        assert response.status_code == 503
        assert response.headers["Retry-After"].isdigit()
        assert "WorkOS is unreachable" in response.get_data(as_text=True)


def test_a_rate_limited_organization_selection_is_a_503_to_retry(app: Flask, client: FlaskClient,
                                                                  emulator: Any) -> None:
    # consultant@ is in Acme and Globex: the code exchange answers organization_selection_required and the login
    # continues with a second call, which is the one rate-limited (a delay-only fault lets the first one pass).
    mirror_demo(app)
    pending = callback_path(authorize(start_login(client, email="consultant@partners.test")))
    _inject(emulator, method="POST", path="/user_management/authenticate", delay_ms=1)
    _inject(emulator, method="POST", path="/user_management/authenticate", status=429)
    response = client.get(pending, headers=BROWSER)
    assert response.status_code == 503
    assert response.headers["Retry-After"].isdigit()
    assert "WorkOS is unreachable" in response.get_data(as_text=True)
    assert cookie_value(client) is None
    code, faults = http_json("GET", f"{emulator.url}/_emulator/faults", None, KEY)
    assert code == 200
    assert faults["data"] == []  # both calls were made: the second one met the 429


@pytest.mark.parametrize(("status", "expected"), [(429, ServiceUnavailable), (503, ServiceUnavailable),
                                                  (403, LoginFailed)])
def test_a_failed_organization_listing_at_login_is_translated(emulator: Any, gateway: WorkOSGateway, status: int,
                                                              expected: type[Exception]) -> None:
    # A login that WorkOS answered without an organization lists the user's memberships to pick one.
    tokens = Tokens("access", "refresh", {"id": "user_01HTDQ8G900000000000000001"}, None, "password")
    _inject(emulator, method="GET", path="/user_management/organization_memberships", status=status)
    with pytest.raises(expected):
        login_service.choose_organization(gateway.client, tokens)


def test_a_rate_limited_refresh_keeps_the_session(app: Flask, client: FlaskClient, emulator: Any) -> None:
    mirror_demo(app)
    assert login(client, "admin@umbrella.test").status_code == 302
    data = unseal_data(cookie_value(client) or "", app.config["HATIDATA_COOKIE_KEY"])
    claims = jwt.decode(data["access_token"], options={"verify_signature": False})
    now = int(time.time())
    data["access_token"] = forge_token(emulator, **{**claims, "iat": now - 600, "exp": now - 300})
    client.set_cookie("hatidata_session", seal_data(data, app.config["HATIDATA_COOKIE_KEY"]))
    _inject(emulator, method="POST", path="/user_management/authenticate", status=429)

    response = client.get("/api/v1/me")
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "refresh_unavailable"
    assert response.get_json()["error"]["details"]["cause"] == "http_429"
    with app.app_context():
        record = db.session.scalar(select(AuthSession).where(AuthSession.workos_session_id == claims["sid"]))
        assert record is not None
        assert record.revoked_at is None
        db.session.remove()
    assert client.get("/api/v1/me").status_code == 200  # the fault was one-shot: the refresh now succeeds
