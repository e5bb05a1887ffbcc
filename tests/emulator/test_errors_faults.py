"""WorkOS-shaped errors (status, message, code, x-request-id) and fault injection."""

from __future__ import annotations

import time

import httpx2
import pytest
from workos import AuthenticationError, NotFoundError, ServerError, UnprocessableEntityError, WorkOSClient

from workos_emulator.testing import EmulatorServer

from .conftest import ACME


def _assert_shaped(resp: httpx2.Response, status: int, code: str | None = None) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert isinstance(body["message"], str)
    assert body["message"]
    if code:
        assert body["code"] == code
    assert resp.headers["x-request-id"]


def test_auth_required(emu: EmulatorServer) -> None:
    with httpx2.Client(base_url=emu.url) as anon:
        _assert_shaped(anon.get("/organizations"), 401, "unauthorized")
        _assert_shaped(anon.get("/organizations", headers={"Authorization": "Bearer nope"}), 401)
        _assert_shaped(anon.post("/sso/logout/authorize", json={"profile_id": "x"}), 401)
        assert anon.get("/_emulator/health").status_code == 200
        assert anon.get("/sso/jwks/client_emulator").status_code == 200


def test_bad_input(http: httpx2.Client) -> None:
    _assert_shaped(http.get("/organizations/org_missing"), 404, "entity_not_found")
    _assert_shaped(http.post("/organizations", content=b"{not json", headers={"Content-Type": "application/json"}),
                   400, "invalid_json")
    _assert_shaped(http.post("/organizations", json=[1, 2]), 422, "invalid_request_parameters")
    _assert_shaped(http.post("/organizations", json={}), 422, "invalid_request_parameters")
    _assert_shaped(http.get("/organizations", params={"limit": 1000}), 422)
    _assert_shaped(http.get("/organizations", params={"order": "sideways"}), 422)
    _assert_shaped(http.get("/nope"), 404, "not_found")
    _assert_shaped(http.delete("/events"), 405)
    _assert_shaped(http.post("/user_management/authenticate", json={"grant_type": "authorization_code",
                                                                     "client_id": "wrong", "code": "x"}), 400)
    resp = http.post("/user_management/authenticate",
                     json={"grant_type": "refresh_token", "client_id": "client_emulator", "refresh_token": "bogus"})
    _assert_shaped(resp, 400, "invalid_grant")
    assert resp.json()["error"] == "invalid_grant"
    assert resp.json()["error_description"]
    _assert_shaped(http.get("/user_management/authorize", params={"client_id": "client_emulator"}), 422)
    _assert_shaped(http.post("/_emulator/directories/directory_missing/users", json={"email": "a@b.c"}), 404)
    _assert_shaped(http.patch("/_emulator/directory_users/directory_user_missing", json={}), 404)
    _assert_shaped(http.post("/_emulator/faults", json={"path": "/x", "status": 200}), 422)


def test_sdk_errors_carry_request_id(workos: WorkOSClient) -> None:
    with pytest.raises(NotFoundError) as err:
        workos.organizations.get_organization("org_nope")
    assert err.value.code == "entity_not_found"
    assert err.value.request_id
    with pytest.raises(UnprocessableEntityError):
        workos.events.list_events(events=[])


def test_fault_injection(emu: EmulatorServer, http: httpx2.Client, workos: WorkOSClient) -> None:
    assert http.post("/_emulator/faults", json={"method": "GET", "path": "/organizations/*", "status": 503,
                                                "count": 2}).status_code == 201
    for _ in range(2):
        with pytest.raises(ServerError) as err:
            workos.organizations.get_organization(ACME)
        assert err.value.status_code == 503
        assert err.value.code == "server_error"
    assert workos.organizations.get_organization(ACME).id == ACME  # count exhausted
    http.post("/_emulator/faults", json={"method": "POST", "path": "/user_management/authenticate", "status": 401})
    with pytest.raises(AuthenticationError):
        workos.user_management.authenticate_with_refresh_token(refresh_token="x")
    http.post("/_emulator/faults", json={"path": "/organizations", "delay_ms": 300})
    started = time.monotonic()
    workos.organizations.list_organizations()
    assert time.monotonic() - started >= 0.3
    assert len(http.get("/_emulator/faults").json()["data"]) == 2
    assert http.delete("/_emulator/faults").status_code == 204
    assert http.get("/_emulator/faults").json()["data"] == []
