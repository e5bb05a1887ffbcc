"""Tokens and responses as WorkOS documents them (spec 0.61.0, SDK 10.8): audience, authentication method,
impersonation, organization selection, ``previous_attributes`` and the spec's statuses."""

from __future__ import annotations

from typing import Any

import httpx2
import jwt
import pytest
from workos import WorkOSClient
from workos._errors import BadRequestError, OrganizationSelectionRequiredError

from tests.support.openapi import OpenAPIContract, RecordingHTTPClient

from .conftest import ACME, ACME_ADMIN_USER, ACME_DEV_DU, CLIENT_ID, CONSULTANT_USER, GLOBEX, REDIRECT_URI
from .helpers import code_from, follow_authorize


def _validate(recorder: RecordingHTTPClient, contract: OpenAPIContract) -> int:
    for ex in recorder.exchanges:
        contract.validate(ex.method, ex.path, ex.status, ex.body)
    return len(recorder.exchanges)


def _claims(workos: WorkOSClient, token: str) -> dict[str, Any]:
    key = jwt.PyJWKClient(f"{workos.base_url}sso/jwks/{CLIENT_ID}").get_signing_key_from_jwt(token)
    return dict(jwt.decode(token, key.key, algorithms=["RS256"], audience=CLIENT_ID))


def _code(workos: WorkOSClient, email: str, organization_id: str | None = None) -> str:
    url = workos.user_management.get_authorization_url(redirect_uri=REDIRECT_URI, provider="authkit",
                                                       organization_id=organization_id, login_hint=email)
    response = follow_authorize(url)
    assert response.status_code == 302, response.text
    return code_from(response.headers["location"])[0]


def test_access_token_names_its_client_and_the_sign_in_method(
    workos: WorkOSClient, recorder: RecordingHTTPClient, openapi_contract: OpenAPIContract
) -> None:
    auth = workos.user_management.authenticate_with_code(code=_code(workos, "admin@acme.test", ACME))
    claims = _claims(workos, auth.access_token)
    assert claims["aud"] == CLIENT_ID
    assert claims["client_id"] == CLIENT_ID
    assert isinstance(claims["auth_time"], int)
    assert "act" not in claims
    assert auth.authentication_method.value == "SSO"  # Acme's IdP vouched for the user
    assert auth.impersonator is None
    refreshed = workos.user_management.authenticate_with_refresh_token(refresh_token=auth.refresh_token)
    assert _claims(workos, refreshed.access_token)["aud"] == CLIENT_ID
    assert refreshed.authentication_method.value == "SSO"
    _validate(recorder, openapi_contract)


def test_impersonation_started_from_the_control_api(
    workos: WorkOSClient, recorder: RecordingHTTPClient, openapi_contract: OpenAPIContract, http: httpx2.Client
) -> None:
    started = http.post("/_emulator/impersonations", json={
        "user_id": ACME_ADMIN_USER, "organization_id": ACME, "impersonator_email": "support@hatidata.test",
        "reason": "Ticket 42"})
    assert started.status_code == 201, started.text
    assert started.json()["redirect_url"].startswith(REDIRECT_URI + "?code=")
    auth = workos.user_management.authenticate_with_code(code=started.json()["code"])
    assert auth.authentication_method.value == "Impersonation"
    assert auth.impersonator is not None
    assert (auth.impersonator.email, auth.impersonator.reason) == ("support@hatidata.test", "Ticket 42")
    assert auth.organization_id == ACME
    claims = _claims(workos, auth.access_token)
    assert claims["act"] == {"sub": "support@hatidata.test"}
    refreshed = workos.user_management.authenticate_with_refresh_token(refresh_token=auth.refresh_token)
    assert refreshed.impersonator is not None
    assert refreshed.impersonator.email == "support@hatidata.test"
    assert _claims(workos, refreshed.access_token)["act"] == {"sub": "support@hatidata.test"}
    session = workos.user_management.list_sessions(ACME_ADMIN_USER).data[0]
    assert session.auth_method.value == "impersonation"
    assert http.post("/_emulator/impersonations", json={"user_id": ACME_ADMIN_USER, "organization_id": GLOBEX,
                                                        "impersonator_email": "x@y.test"}).status_code == 422
    _validate(recorder, openapi_contract)


def test_member_of_several_organizations_selects_one(
    workos: WorkOSClient, recorder: RecordingHTTPClient, openapi_contract: OpenAPIContract
) -> None:
    with pytest.raises(OrganizationSelectionRequiredError) as info:
        workos.user_management.authenticate_with_code(code=_code(workos, "consultant@partners.test"))
    error = info.value
    assert error.status_code == 403
    assert error.code == "organization_selection_required"
    assert error.pending_authentication_token
    assert error.user is not None
    assert error.user["id"] == CONSULTANT_USER
    assert {o["id"] for o in error.organizations or []} == {ACME, GLOBEX}
    with pytest.raises(BadRequestError) as refused:
        workos.user_management.authenticate_with_organization_selection(
            pending_authentication_token=error.pending_authentication_token, organization_id="org_unknown")
    assert refused.value.code == "invalid_organization_id"
    auth = workos.user_management.authenticate_with_organization_selection(
        pending_authentication_token=error.pending_authentication_token, organization_id=GLOBEX)
    assert auth.organization_id == GLOBEX
    assert auth.user.id == CONSULTANT_USER
    assert _claims(workos, auth.access_token)["org_id"] == GLOBEX
    with pytest.raises(BadRequestError) as spent:  # a pending token completes one sign-in
        workos.user_management.authenticate_with_organization_selection(
            pending_authentication_token=error.pending_authentication_token, organization_id=ACME)
    assert spent.value.code == "invalid_pending_authentication_token"
    # Pinned to an organization, the same user signs in directly.
    pinned = workos.user_management.authenticate_with_code(code=_code(workos, "consultant@partners.test", ACME))
    assert pinned.organization_id == ACME
    _validate(recorder, openapi_contract)


def test_statuses_as_the_spec_documents(
    workos: WorkOSClient, recorder: RecordingHTTPClient, openapi_contract: OpenAPIContract
) -> None:
    with pytest.raises(BadRequestError):
        workos.user_management.revoke_session(session_id="session_unknown")
    logout = recorder.get(workos.user_management.get_logout_url(session_id="session_unknown"))
    assert logout.status_code == 422
    assert logout.json()["message"]
    assert recorder.get(f"{workos.base_url}events", headers={"Authorization": "Bearer sk_test_emulator"}
                        ).status_code == 200
    wildcard = recorder.get(f"{workos.base_url}events", params={"events": "dsync.*"},
                            headers={"Authorization": "Bearer sk_test_emulator"})
    assert wildcard.status_code == 422
    with pytest.raises(Exception, match="events must be event types"):
        workos.webhooks.create_webhook_endpoint(endpoint_url="https://example.test/hook", events=["dsync.*"])
    assert _validate(recorder, openapi_contract) >= 5


def test_directory_user_update_reports_previous_attributes(
    workos: WorkOSClient, recorder: RecordingHTTPClient, openapi_contract: OpenAPIContract, http: httpx2.Client
) -> None:
    before = workos.directory_sync.get_user(ACME_DEV_DU)
    assert "cost_center" not in (before.custom_attributes or {})
    response = http.patch(f"/_emulator/directory_users/{ACME_DEV_DU}",
                          json={"first_name": "Renamed", "department": "Research", "cost_center": "CC-7"})
    assert response.status_code == 200, response.text
    events = workos.events.list_events(events=["dsync.user.updated"], order="asc", limit=100).data
    previous = events[-1].data.previous_attributes
    assert previous["first_name"] == before.first_name
    assert previous["custom_attributes"] == {"cost_center": None,
                                             "department": (before.custom_attributes or {}).get("department")}
    assert previous["name"] == before.name  # derived from first and last name
    assert set(previous) <= {"first_name", "name", "custom_attributes", "raw_attributes"}
    for key, value in previous.get("raw_attributes", {}).items():
        assert value == (before.raw_attributes or {}).get(key)
    _validate(recorder, openapi_contract)
