"""Tests for the OpenAPI contract helpers in ``tests/support/openapi.py``."""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import sys
import tarfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import pytest
from workos import WorkOSClient
from workos.common.models.organization_domain import OrganizationDomain
from workos.organizations.models.organization import Organization

from tests.support.openapi import (
    LEGACY_OPERATIONS,
    SPEC_MEMBER,
    SPEC_SHA256,
    VENDORED_SPEC,
    VENDORED_SPEC_VERSION,
    ContractViolation,
    Exchange,
    OpenAPIContract,
    RecordingHTTPClient,
    SpecFetchError,
    SpecIntegrityError,
    ensure_spec,
    extract_spec,
    vendored_spec,
    verify_tarball,
)

T0 = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)


def sdk_organization(**overrides: Any) -> dict[str, Any]:
    """An Organization body built with the SDK's own models, following the spec's required keys."""
    domain = OrganizationDomain.from_dict(
        {
            "object": "organization_domain",
            "id": "org_domain_01HXYZ",
            "organization_id": "org_01HXYZ",
            "domain": "example.com",
            "state": "verified",
            "verification_strategy": "dns",
            "verification_token": "tok",
            "verification_prefix": "workos",
            "created_at": "2024-05-01T12:30:00.000Z",
            "updated_at": "2024-05-01T12:30:00.000Z",
        }
    )
    org = Organization(
        object="organization",
        id="org_01HXYZ",
        name="Acme",
        domains=[domain],
        metadata={"tier": "gold"},
        external_id=None,
        created_at=T0,
        updated_at=T0,
    )
    body = org.to_dict()
    body.update(overrides)
    return body


def org_list(*orgs: dict[str, Any]) -> dict[str, Any]:
    return {"object": "list", "data": list(orgs), "list_metadata": {"before": None, "after": None}}


# --- fetching / integrity ------------------------------------------------------------------------------------


def test_ensure_spec_returns_verified_cached_file(legacy_openapi_contract: OpenAPIContract) -> None:
    path = ensure_spec()
    assert path.name == "open-api-spec.yaml"
    assert path.parent.name == "workos-openapi-spec-0.1.0"
    assert path.parent.parent.parent.name == ".cache"
    assert legacy_openapi_contract.source == str(path)
    assert len(legacy_openapi_contract.document["paths"]) == 120


def test_contract_is_the_vendored_spec_and_covers_the_legacy_one(
    openapi_contract: OpenAPIContract, legacy_openapi_contract: OpenAPIContract
) -> None:
    assert openapi_contract.source == str(vendored_spec())
    assert VENDORED_SPEC.name == f"open-api-spec-{VENDORED_SPEC_VERSION}.yaml"
    assert (VENDORED_SPEC.parent / "LICENSE.txt").read_text().startswith("MIT")
    legacy_only = set(legacy_openapi_contract.operations) - set(openapi_contract.operations)
    assert legacy_only == set(LEGACY_OPERATIONS)


def test_vendored_spec_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tests.support.openapi.VENDORED_SPEC_SHA256", "0" * 64)
    with pytest.raises(SpecIntegrityError, match="sha256 mismatch"):
        vendored_spec()


def _make_tarball(path: Path, content: bytes) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(SPEC_MEMBER)
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    return path


def test_integrity_check_refuses_tampered_tarball(tmp_path: Path) -> None:
    real = ensure_spec().read_bytes()
    tampered = _make_tarball(tmp_path / "workos-openapi-spec-0.1.0.tgz", real.replace(b"3.1.1", b"3.1.2", 1))
    dest = tmp_path / "out" / "open-api-spec.yaml"
    with pytest.raises(SpecIntegrityError, match="does not match the pinned integrity"):
        verify_tarball(tampered)
    with pytest.raises(SpecIntegrityError):
        extract_spec(tampered, dest)
    assert not dest.exists()


def test_extract_spec_checks_member_hash_when_tarball_hash_is_trusted(tmp_path: Path) -> None:
    # Even with the tarball pins disabled, the yaml member itself must match the pinned sha256.
    tarball = _make_tarball(tmp_path / "t.tgz", b"openapi: 3.1.1\npaths: {}\n")
    sri = "sha512-" + base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
    with pytest.raises(SpecIntegrityError, match="sha256 mismatch"):
        extract_spec(tarball, tmp_path / "o.yaml", integrity=sri, tarball_sha256=None)
    # ... and with that pin lifted too, the member is extracted atomically.
    out = extract_spec(tarball, tmp_path / "o.yaml", integrity=sri, tarball_sha256=None, spec_sha256=None)
    assert out.read_bytes() == b"openapi: 3.1.1\npaths: {}\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def _fake_npm(tmp_path: Path, body: str) -> str:
    script = tmp_path / "fake-npm"
    script.write_text(f"#!{sys.executable}\nimport sys, pathlib, shutil\n{body}\n")
    script.chmod(0o755)
    return str(script)


def test_ensure_spec_refuses_tampered_download(tmp_path: Path) -> None:
    bad = _make_tarball(tmp_path / "bad.tgz", b"openapi: 3.1.1\npaths: {}\n")
    npm = _fake_npm(
        tmp_path,
        "dest = sys.argv[sys.argv.index('--pack-destination') + 1]\n"
        f"shutil.copy({str(bad)!r}, pathlib.Path(dest) / 'workos-openapi-spec-0.1.0.tgz')",
    )
    cache = tmp_path / "cache"
    with pytest.raises(SpecIntegrityError):
        ensure_spec(cache, npm=npm)
    assert not (cache / "open-api-spec.yaml").exists()


def test_ensure_spec_reports_npm_failure_and_missing_npm(tmp_path: Path) -> None:
    npm = _fake_npm(tmp_path, "sys.stderr.write('npm error 404 Not Found\\n'); sys.exit(1)")
    with pytest.raises(SpecFetchError, match="404 Not Found"):
        ensure_spec(tmp_path / "cache", npm=npm)
    with pytest.raises(SpecFetchError, match="npm is needed"):
        ensure_spec(tmp_path / "cache", npm=str(tmp_path / "no-such-npm"))


def test_ensure_spec_uses_valid_cache_without_npm(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "open-api-spec.yaml").write_bytes(ensure_spec().read_bytes())
    assert ensure_spec(cache, npm=str(tmp_path / "no-such-npm")) == cache / "open-api-spec.yaml"
    # A corrupted cache is not trusted: it triggers a (here impossible) refetch.
    (cache / "open-api-spec.yaml").write_text("openapi: 3.1.1\n")
    with pytest.raises(SpecFetchError, match="npm is needed"):
        ensure_spec(cache, npm=str(tmp_path / "no-such-npm"))
    assert SPEC_SHA256  # pinned


# --- path matching -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "template"),
    [
        ("GET", "/organizations/org_123", "/organizations/{id}"),
        ("GET", "/organizations/external_id/ext_1", "/organizations/external_id/{external_id}"),
        ("GET", "/sso/jwks/client_x", "/sso/jwks/{clientId}"),
        ("GET", "/user_management/users/external_id/e", "/user_management/users/external_id/{external_id}"),
        ("GET", "/user_management/users/user_1", "/user_management/users/{id}"),
        ("GET", "/user_management/invitations/by_token/accept", "/user_management/invitations/by_token/{token}"),
        ("POST", "/user_management/invitations/inv_1/accept", "/user_management/invitations/{id}/accept"),
        ("GET", "/organizations?limit=10&order=desc", "/organizations"),
        ("GET", "/directory_users/directory_user%2F1", "/directory_users/{id}"),
        ("get", "/user_management/users/u_1/sessions", "/user_management/users/{id}/sessions"),
    ],
)
def test_match_prefers_literal_segments(
    openapi_contract: OpenAPIContract, method: str, path: str, template: str
) -> None:
    matched, operation = openapi_contract.match(method, path)
    assert matched == template
    assert "responses" in operation


def test_match_rejects_undocumented_operations(openapi_contract: OpenAPIContract) -> None:
    with pytest.raises(ContractViolation, match="no path template"):
        openapi_contract.match("GET", "/no_such_thing/1")
    with pytest.raises(ContractViolation, match=r"POST /organizations/\{id\}.*documents only DELETE, GET, PUT"):
        openapi_contract.match("POST", "/organizations/org_1")
    with pytest.raises(ContractViolation):
        openapi_contract.match("GET", "/organizations/")  # an empty segment is not an id


# --- validation ----------------------------------------------------------------------------------------------


def test_valid_sdk_organization_passes(openapi_contract: OpenAPIContract) -> None:
    body = sdk_organization()
    assert Organization.from_dict(body).to_dict() == body
    assert openapi_contract.validate("GET", "/organizations/org_01HXYZ", 200, body) == "/organizations/{id}"
    assert openapi_contract.validate("GET", "/organizations", 200, org_list(body, body)) == "/organizations"
    assert openapi_contract.validate("POST", "/organizations", 201, body) == "/organizations"


def test_missing_required_key_names_schema_and_json_path(openapi_contract: OpenAPIContract) -> None:
    body = sdk_organization()
    del body["external_id"]  # required although nullable
    with pytest.raises(ContractViolation) as info:
        openapi_contract.validate("GET", "/organizations/org_123", 200, body)
    err = info.value
    message = str(err)
    assert "GET /organizations/{id}" in message
    assert "/organizations/org_123" in message
    assert "200" in message
    assert "'external_id' is a required property" in message
    assert err.json_path == "$"
    assert err.schema_path == "#/components/schemas/Organization/required"
    assert "#/components/schemas/Organization/required" in message
    assert isinstance(err, AssertionError)

    nested = sdk_organization()
    del nested["domains"][0]["domain"]
    with pytest.raises(ContractViolation) as info:
        openapi_contract.validate("GET", "/organizations", 200, org_list(sdk_organization(), nested))
    assert info.value.json_path == "$.data[1].domains[0]"
    assert info.value.schema_path == "#/components/schemas/Organization/properties/domains/items/required"


def test_wrong_enum_value_fails(openapi_contract: OpenAPIContract) -> None:
    body = sdk_organization()
    body["domains"][0]["state"] = "almost_verified"
    with pytest.raises(ContractViolation) as info:
        openapi_contract.validate("GET", "/organizations", 200, org_list(body))
    err = info.value
    assert err.json_path == "$.data[0].domains[0].state"
    assert err.schema_path == "#/components/schemas/Organization/properties/domains/items/properties/state/enum"
    assert "'almost_verified' is not one of" in str(err)


def test_nullable_and_type_and_format(openapi_contract: OpenAPIContract) -> None:
    openapi_contract.validate("GET", "/organizations/o", 200, sdk_organization(external_id="ext"))
    with pytest.raises(ContractViolation, match="is not of type 'string', 'null'"):
        openapi_contract.validate("GET", "/organizations/o", 200, sdk_organization(external_id=5))
    # Python's naive isoformat() (no offset) is accepted by the SDK but is not an RFC 3339 date-time.
    with pytest.raises(ContractViolation) as info:
        openapi_contract.validate("GET", "/organizations/o", 200, sdk_organization(created_at="2024-05-01T12:30:00"))
    assert info.value.schema_path == "#/components/schemas/Organization/properties/created_at/format"
    assert "is not a 'date-time'" in str(info.value)


def test_undocumented_status_fails(openapi_contract: OpenAPIContract) -> None:
    with pytest.raises(ContractViolation, match=r"undocumented response status 418.*documents 200, 404"):
        openapi_contract.validate("GET", "/organizations/org_1", 418, {"message": "teapot"})
    # DELETE /organizations/{id} is documented as 200/202/403, not 204.
    with pytest.raises(ContractViolation, match="undocumented response status 204"):
        openapi_contract.validate("DELETE", "/organizations/org_1", 204, None)


def test_bodiless_responses_only_need_to_be_documented(openapi_contract: OpenAPIContract) -> None:
    openapi_contract.validate("DELETE", "/organization_domains/od_1", 204, None)
    openapi_contract.validate("GET", "/sso/authorize", 302, None)
    openapi_contract.validate("GET", "/user_management/sessions/logout", 302, None)
    with pytest.raises(ContractViolation, match="documents a JSON body"):
        openapi_contract.validate("GET", "/organizations/org_1", 200, None)  # an empty 200 is a bug
    with pytest.raises(ContractViolation, match="documents no JSON body"):
        openapi_contract.validate("POST", "/user_management/sessions/revoke", 200, {"ok": True})


def test_error_bodies_are_validated(openapi_contract: OpenAPIContract) -> None:
    openapi_contract.validate("GET", "/organizations/org_1", 404, {"message": "Not found", "code": "x"})
    with pytest.raises(ContractViolation, match="'message' is a required property"):
        openapi_contract.validate("GET", "/organizations/org_1", 404, {"code": "entity_not_found"})


def test_refs_resolve_across_nested_schemas(legacy_openapi_contract: OpenAPIContract) -> None:
    # The schema names below are 0.1.0's (0.61.0 renamed some and made membership ``roles`` required).
    user = {
        "object": "user",
        "id": "user_1",
        "first_name": None,
        "last_name": None,
        "profile_picture_url": None,
        "email": "a@example.com",
        "email_verified": True,
        "external_id": None,
        "last_sign_in_at": None,
        "created_at": "2024-05-01T12:30:00.000Z",
        "updated_at": "2024-05-01T12:30:00.000Z",
    }
    auth = {"user": user, "access_token": "at", "refresh_token": "rt"}
    legacy_openapi_contract.validate("POST", "/user_management/authenticate", 200, auth)
    broken = copy.deepcopy(auth)
    broken["user"]["email_verified"] = "yes"
    with pytest.raises(ContractViolation) as info:
        legacy_openapi_contract.validate("POST", "/user_management/authenticate", 200, broken)
    # UserlandAuthenticateResponse -> $ref UserlandUser: the schema path names the referenced component.
    assert info.value.json_path == "$.user.email_verified"
    assert info.value.schema_path == "#/components/schemas/UserlandUser/properties/email_verified/type"

    # UserlandUserOrganizationMembership -> $ref SlimRole (role) and -> $ref UserlandUser (user).
    membership = {
        "object": "organization_membership",
        "id": "om_1",
        "user_id": "user_1",
        "organization_id": "org_1",
        "status": "active",
        "directory_managed": False,
        "created_at": "2024-05-01T12:30:00Z",
        "updated_at": "2024-05-01T12:30:00Z",
        "role": {"slug": "member"},
        "user": user,
    }
    legacy_openapi_contract.validate("GET", "/user_management/organization_memberships/om_1", 200, membership)
    membership["role"] = {"name": "member"}
    with pytest.raises(ContractViolation) as info:
        legacy_openapi_contract.validate("GET", "/user_management/organization_memberships/om_1", 200, membership)
    assert info.value.json_path == "$.role"
    assert info.value.schema_path == "#/components/schemas/SlimRole/required"


def test_validators_are_cached(openapi_contract: OpenAPIContract) -> None:
    body = sdk_organization()
    openapi_contract.validate("GET", "/organizations/a", 200, body)
    first = openapi_contract._validators[("/organizations/{id}", "GET", "200")]
    openapi_contract.validate("GET", "/organizations/b", 200, body)
    assert openapi_contract._validators[("/organizations/{id}", "GET", "200")] is first


def test_sdk_only_supplement_is_validated(openapi_contract: OpenAPIContract) -> None:
    # PATCH /connections/{id} is called by the SDK but missing from the pinned spec; the fixture adds it.
    with pytest.raises(ContractViolation) as info:
        openapi_contract.validate("PATCH", "/connections/conn_1", 200, {"object": "connection"})
    assert info.value.schema_path == "#/components/schemas/Connection/required"


# --- recording client through the real SDK -------------------------------------------------------------------


def _handler(bodies: dict[str, tuple[int, Any]]) -> httpx2.MockTransport:
    def handle(request: httpx2.Request) -> httpx2.Response:
        status, body = bodies[request.url.path]
        if body is None:
            return httpx2.Response(status)
        return httpx2.Response(status, json=body, headers={"x-request-id": "req_1"})

    return httpx2.MockTransport(handle)


def test_recording_client_through_sdk(openapi_contract: OpenAPIContract) -> None:
    bodies = {
        "/prefix/organizations/org_01HXYZ": (200, sdk_organization()),
        "/prefix/organizations": (200, org_list(sdk_organization())),
        "/prefix/organization_domains/od_1": (204, None),
    }
    with RecordingHTTPClient(transport=_handler(bodies), api_base_url="http://emulator.test/prefix/") as http:
        client = WorkOSClient(
            http_client=http,
            base_url="http://emulator.test/prefix",
            api_key="sk_test_x",
            client_id="client_x",
            max_retries=0,
        )
        with client:
            org = client.organizations.get_organization("org_01HXYZ")
            page = client.organizations.list_organizations(limit=5)
            client.organization_domains.delete_organization_domain("od_1")
        assert org.id == "org_01HXYZ"
        assert page.data[0].name == "Acme"
        first, second, third = http.exchanges
        assert first == Exchange(
            method="GET",
            path="/organizations/org_01HXYZ",
            query=(),
            status=200,
            body=sdk_organization(),
            headers=first.headers,
        )
        assert first.headers["X-Request-ID"] == "req_1"
        assert second.path == "/organizations"
        assert second.param("limit") == "5"
        assert second.param("order") == "desc"
        assert (third.method, third.status, third.body) == ("DELETE", 204, None)
        assert http.assert_all_valid(openapi_contract) == 3
        assert not http.is_closed  # the SDK never closes a client it was given
    assert http.is_closed


def test_recording_client_reports_every_violation(openapi_contract: OpenAPIContract) -> None:
    bad = sdk_organization()
    del bad["metadata"]
    bodies = {"/organizations/org_1": (200, bad), "/organizations": (200, org_list(bad))}
    with RecordingHTTPClient(transport=_handler(bodies)) as http:
        client = WorkOSClient(http_client=http, base_url="http://emu.test", api_key="k", client_id="c", max_retries=0)
        client.request_raw("get", ["organizations", "org_1"])
        client.request_raw("get", ["organizations"])
        with pytest.raises(ContractViolation) as info:
            http.assert_all_valid(openapi_contract)
    message = str(info.value)
    assert message.startswith("2 of 2 recorded responses violate")
    assert "GET /organizations/{id} (concrete path /organizations/org_1)" in message
    assert "$.data[0]" in message
    assert info.value.schema_path == "#/components/schemas/Organization/required"


def test_recording_http_client_fixture(recording_http_client: RecordingHTTPClient) -> None:
    assert isinstance(recording_http_client, httpx2.Client)
    assert recording_http_client.exchanges == []
    assert not recording_http_client.is_closed
