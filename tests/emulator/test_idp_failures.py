"""The emulator's IdP failures (``/_emulator/sign_in_failures``): a user not assigned to the app is refused with
WorkOS's redirect error and an ``authentication.sso_failed`` event that parses with the SDK and validates against
the spec; a missing attribute leaves the profile without it; the control API refuses what WorkOS would not do."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from workos import WorkOSClient

from tests.support.openapi import OpenAPIContract, RecordingHTTPClient

from .conftest import ACME, ACME_CONN, CLIENT_ID, REDIRECT_URI
from .helpers import code_from, follow_authorize

AUTHORIZE = {"client_id": CLIENT_ID, "redirect_uri": REDIRECT_URI, "response_type": "code", "state": "s1"}


@pytest.mark.parametrize("kind", ["sso", "authkit"])
def test_an_unassigned_user_is_refused_with_an_event(workos: WorkOSClient, recorder: RecordingHTTPClient,
                                                     openapi_contract: OpenAPIContract, http: httpx2.Client,
                                                     kind: str) -> None:
    assert http.post("/_emulator/sign_in_failures", json={"email": "dev@acme.test", "kind": "not_assigned"}
                     ).status_code == 201
    path = "/sso/authorize" if kind == "sso" else "/user_management/authorize"
    selector = {"connection": ACME_CONN} if kind == "sso" else {"organization_id": ACME, "provider": "authkit"}
    answer = http.get(path, params={**AUTHORIZE, **selector, "login_hint": "dev@acme.test"})
    assert answer.status_code == 302
    query = parse_qs(urlsplit(answer.headers["location"]).query)
    assert query == {"error": ["access_denied"], "state": ["s1"],
                     "error_description": ["User is not assigned to the client application."]}
    events = workos.events.list_events(events=["authentication.sso_failed"]).data
    assert len(events) == 1
    data = events[0].data
    assert (data.email, data.sso.connection_id, data.sso.organization_id) == ("dev@acme.test", ACME_CONN, ACME)
    assert (data.error.code, data.error.message) == ("access_denied",
                                                     "User is not assigned to the client application.")
    for ex in recorder.exchanges:
        openapi_contract.validate(ex.method, ex.path, ex.status, ex.body)
    # Others still sign in; removing the failure lets the user in again.
    assert "code=" in follow_authorize(str(http.build_request(
        "GET", path, params={**AUTHORIZE, **selector, "login_hint": "admin@acme.test"}).url)).headers["location"]
    assert http.delete("/_emulator/sign_in_failures").status_code == 204
    again = http.get(path, params={**AUTHORIZE, **selector, "login_hint": "dev@acme.test"})
    assert "code=" in again.headers["location"]


def test_a_missing_attribute_is_left_out_of_the_profile(workos: WorkOSClient, http: httpx2.Client) -> None:
    assert http.post("/_emulator/sign_in_failures", json={"email": "dev@acme.test", "kind": "missing_attribute",
                                                          "attribute": "first_name"}).status_code == 201
    answer = http.get("/sso/authorize", params={**AUTHORIZE, "connection": ACME_CONN, "login_hint": "dev@acme.test"})
    code, _ = code_from(answer.headers["location"])
    profile = workos.sso.get_profile_and_token(code=code).profile
    assert profile.first_name is None
    assert profile.last_name
    assert "firstName" not in (profile.raw_attributes or {})
    assert http.get("/_emulator/sign_in_failures").json()["data"] == [
        {"email": "dev@acme.test", "kind": "missing_attribute", "attribute": "first_name"}]


@pytest.mark.parametrize("body", [{"email": "dev@acme.test", "kind": "other"},
                                  {"email": "dev@acme.test", "kind": "missing_attribute", "attribute": "email"},
                                  {"email": "dev@acme.test", "kind": "missing_attribute"},
                                  {"kind": "not_assigned"}])
def test_the_control_api_refuses_failures_workos_would_not_produce(http: httpx2.Client, body: dict[str, str]) -> None:
    answer = http.post("/_emulator/sign_in_failures", json=body)
    assert answer.status_code == 422
