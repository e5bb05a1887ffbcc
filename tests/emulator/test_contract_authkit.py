"""Tokens and responses as WorkOS documents them (spec 0.61.0, SDK 10.8): audience, authentication method,
impersonation, organization selection (after a code, a password, a magic code or an email verification),
``previous_attributes`` and the spec's statuses."""

from __future__ import annotations

from typing import Any

import httpx2
import jwt
import pytest
from workos import WorkOSClient
from workos._errors import BadRequestError, EmailVerificationRequiredError, OrganizationSelectionRequiredError
from workos.user_management import PasswordPlaintext

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


HOOLI = "org_01HTDQ8A500000000000000001"


def _member_of_two(workos: WorkOSClient, email: str, *, verified: bool = True) -> tuple[str, str]:
    """A user with a password in Hooli and in a second organization without SSO: (user id, second org id)."""
    other = workos.organizations.create_organization(name="Pied Piper", domains=["piedpiper.test"])
    user = workos.user_management.create_user(email=email, email_verified=verified,
                                              password=PasswordPlaintext(password="s3cret-enough"))
    for org in (HOOLI, other.id):
        workos.organization_membership.create_organization_membership(user_id=user.id, organization_id=org)
    return user.id, other.id


def _select(workos: WorkOSClient, error: OrganizationSelectionRequiredError, user_id: str, other: str,
            method: str, session_method: str) -> None:
    assert error.status_code == 403
    assert error.code == "organization_selection_required"
    assert error.user is not None
    assert error.user["id"] == user_id
    assert {o["id"] for o in error.organizations or []} == {HOOLI, other}
    assert workos.user_management.list_sessions(user_id).data == []  # no session before the choice
    auth = workos.user_management.authenticate_with_organization_selection(
        pending_authentication_token=error.pending_authentication_token, organization_id=other)
    assert auth.organization_id == other
    assert auth.authentication_method is not None
    assert auth.authentication_method.value == method
    assert _claims(workos, auth.access_token)["org_id"] == other
    refreshed = workos.user_management.authenticate_with_refresh_token(refresh_token=auth.refresh_token)
    assert refreshed.authentication_method is not None
    assert refreshed.authentication_method.value == method
    sessions = workos.user_management.list_sessions(user_id).data
    assert [(s.auth_method.value, s.organization_id) for s in sessions] == [(session_method, other)]


def test_authkit_methods_ask_a_member_of_several_organizations_to_select_one(
    workos: WorkOSClient, recorder: RecordingHTTPClient, openapi_contract: OpenAPIContract
) -> None:
    user_id, other = _member_of_two(workos, "two@piedpiper.test")
    with pytest.raises(OrganizationSelectionRequiredError) as password:
        workos.user_management.authenticate_with_password(email="two@piedpiper.test", password="s3cret-enough")
    _select(workos, password.value, user_id, other, "Password", "password")
    for session in workos.user_management.list_sessions(user_id).data:
        workos.user_management.revoke_session(session_id=session.id)
    sent = workos.user_management.create_magic_auth(email="two@piedpiper.test")
    with pytest.raises(OrganizationSelectionRequiredError) as magic:
        workos.user_management.authenticate_with_magic_auth(email="two@piedpiper.test", code=sent.code)
    assert workos.user_management.list_sessions(user_id).data[0].status.value == "revoked"
    auth = workos.user_management.authenticate_with_organization_selection(
        pending_authentication_token=magic.value.pending_authentication_token, organization_id=HOOLI)
    assert auth.authentication_method is not None
    assert auth.authentication_method.value == "MagicAuth"
    assert auth.organization_id == HOOLI
    assert workos.user_management.list_sessions(user_id).data[0].auth_method.value == "magic_code"
    _validate(recorder, openapi_contract)


def test_email_verification_then_organization_selection(
    workos: WorkOSClient, recorder: RecordingHTTPClient, openapi_contract: OpenAPIContract, http: httpx2.Client
) -> None:
    user_id, other = _member_of_two(workos, "fresh@piedpiper.test", verified=False)
    with pytest.raises(EmailVerificationRequiredError) as verify:
        workos.user_management.authenticate_with_password(email="fresh@piedpiper.test", password="s3cret-enough")
    sent = http.get("/_emulator/email_verification", params={"email": "fresh@piedpiper.test"}).json()["data"][0]
    with pytest.raises(OrganizationSelectionRequiredError) as select:
        workos.user_management.authenticate_with_email_verification(
            code=sent["code"], pending_authentication_token=verify.value.pending_authentication_token)
    assert select.value.user is not None
    assert select.value.user["email_verified"] is True
    _select(workos, select.value, user_id, other, "Password", "password")
    _validate(recorder, openapi_contract)
