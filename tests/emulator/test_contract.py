"""Every emulated endpoint through the real ``workos`` SDK (models must parse) + OpenAPI validation."""

from __future__ import annotations

import pytest
from workos import ConflictError, NotFoundError, UnprocessableEntityError, WorkOSClient
from workos.organization_membership import RoleSingle
from workos.sso import CreateProtocolOptionsOIDC, CreateProtocolOptionsSAML
from workos.sso.models import CreateConnectionOIDCOptions, CreateConnectionSAMLOptions

from tests.support.openapi import OpenAPIContract, RecordingHTTPClient

from .conftest import (
    ACME,
    ACME_ADMIN_USER,
    ACME_ADMINS,
    ACME_CONN,
    ACME_DIR,
    CLIENT_ID,
    GLOBEX,
    GLOBEX_DIR,
    REDIRECT_URI,
)
from .helpers import code_from, follow_authorize


def _validate(recorder: RecordingHTTPClient, contract: OpenAPIContract) -> int:
    checked = 0
    for ex in recorder.exchanges:
        contract.validate(ex.method, ex.path, ex.status, ex.body)
        checked += 1
    return checked


def test_organizations_and_domains(workos: WorkOSClient, recorder: RecordingHTTPClient,
                                   openapi_contract: OpenAPIContract) -> None:
    page = workos.organizations.list_organizations(limit=2)
    assert len(page.data) == 2
    assert page.list_metadata.after is not None
    all_names = {o.name for o in page.auto_paging_iter()}
    assert {"Acme Corp", "Globex", "Initech", "Umbrella"} <= all_names
    assert [o.id for o in workos.organizations.list_organizations(domains=["acme.test"]).data] == [ACME]
    org = workos.organizations.create_organization(name="Pied Piper", domains=["piedpiper.test"],
                                                   metadata={"tier": "gold"},
                                                   external_id="piedpiper")
    assert org.domains[0].domain == "piedpiper.test"
    assert org.metadata == {"tier": "gold"}
    assert workos.organizations.get_organization(org.id).name == "Pied Piper"
    assert workos.organizations.get_organization_by_external_id("piedpiper").id == org.id
    updated = workos.organizations.update_organization(org.id, name="Pied Piper Inc")
    assert updated.name == "Pied Piper Inc"
    assert updated.updated_at >= org.updated_at
    dom = workos.organization_domains.create_organization_domain(domain="piedpiper.example", organization_id=org.id)
    assert workos.organization_domains.get_organization_domain(dom.id).domain == "piedpiper.example"
    verified = workos.organization_domains.verify_organization_domain(dom.id)
    assert str(verified.state.value if verified.state else "") == "verified"
    workos.organization_domains.delete_organization_domain(dom.id)
    workos.organizations.delete_organization(org.id)
    assert _validate(recorder, openapi_contract) >= 10


def test_connections(workos: WorkOSClient, recorder: RecordingHTTPClient,
                     openapi_contract: OpenAPIContract) -> None:
    conns = workos.sso.list_connections(organization_id=ACME)
    assert [c.id for c in conns.data] == [ACME_CONN]
    assert conns.data[0].connection_type.value == "OktaSAML"
    assert {c.connection_type.value for c in workos.sso.list_connections(connection_type="AzureSAML").data} == {
        "AzureSAML"}
    assert workos.sso.get_connection(ACME_CONN).domains[0].domain == "acme.test"
    saml = workos.sso.create_connection(
        organization_id=GLOBEX, name="Extra SAML",
        protocol_options=CreateProtocolOptionsSAML(
            saml_options=CreateConnectionSAMLOptions(idp_metadata_url="https://idp.example/metadata")))
    oidc = workos.sso.create_connection(
        organization_id=GLOBEX, name="Extra OIDC",
        protocol_options=CreateProtocolOptionsOIDC(oidc_options=CreateConnectionOIDCOptions(
            discovery_endpoint="https://idp.example/.well-known/openid-configuration", client_id="abc",
            client_secret="very-secret")))
    raw = [ex for ex in recorder.exchanges if ex.method == "POST" and ex.path == "/connections"]
    assert all("very-secret" not in ex.content.decode() for ex in raw)
    assert oidc.connection_type.value == "GenericOIDC"
    renamed = workos.sso.update_connection(saml.id, name="Renamed")
    assert renamed.name == "Renamed"
    workos.sso.delete_connection(saml.id)
    workos.sso.delete_connection(oidc.id)
    _validate(recorder, openapi_contract)


def test_directory_sync(workos: WorkOSClient, recorder: RecordingHTTPClient,
                        openapi_contract: OpenAPIContract) -> None:
    dirs = workos.directory_sync.list_directories(organization_id=GLOBEX)
    assert dirs.data[0].id == GLOBEX_DIR
    assert dirs.data[0].type.value == "azure scim v2.0"
    assert workos.directory_sync.get_directory(ACME_DIR).type.value == "okta scim v2.0"
    users = list(workos.directory_sync.list_users(directory=ACME_DIR, limit=2).auto_paging_iter())
    assert {u.email for u in users} >= {"admin@acme.test", "dev@acme.test", "viewer@acme.test"}
    admins = workos.directory_sync.list_users(group=ACME_ADMINS)
    assert [u.email for u in admins.data] == ["admin@acme.test"]
    user = workos.directory_sync.get_user(admins.data[0].id)
    assert [g.name for g in user.groups] == ["HatiData Admins"]
    groups = workos.directory_sync.list_groups(directory=GLOBEX_DIR)
    assert all(len(g.idp_id) == 36 for g in groups.data)  # Entra object-id GUIDs
    assert workos.directory_sync.list_groups(user=user.id).data[0].id == ACME_ADMINS
    assert workos.directory_sync.get_group(ACME_ADMINS).name == "HatiData Admins"
    workos.directory_sync.delete_directory(GLOBEX_DIR)
    assert workos.directory_sync.list_directories(organization_id=GLOBEX).data == []
    _validate(recorder, openapi_contract)


def test_users_memberships_roles(workos: WorkOSClient, recorder: RecordingHTTPClient,
                                 openapi_contract: OpenAPIContract) -> None:
    assert workos.user_management.get_user(ACME_ADMIN_USER).email == "admin@acme.test"
    assert [u.id for u in workos.user_management.list_users(email="admin@acme.test").data] == [ACME_ADMIN_USER]
    user = workos.user_management.create_user(email="new@acme.test", first_name="New", last_name="Person")
    user = workos.user_management.update_user(user.id, first_name="Renamed")
    assert user.first_name == "Renamed"
    om = workos.organization_membership.create_organization_membership(
        user_id=user.id, organization_id=ACME, role=RoleSingle(role_slug="developer"))
    assert om.role.slug == "developer"
    assert om.user.email == "new@acme.test"
    listed = workos.organization_membership.list_organization_memberships(organization_id=ACME,
                                                                          statuses=["active"], limit=100)
    assert om.id in {m.id for m in listed.data}
    om = workos.organization_membership.update_organization_membership(om.id, role=RoleSingle(role_slug="admin"))
    assert om.role.slug == "admin"
    assert workos.organization_membership.deactivate_organization_membership(om.id).status.value == "inactive"
    assert workos.organization_membership.reactivate_organization_membership(om.id).status.value == "active"
    assert workos.organization_membership.get_organization_membership(om.id).id == om.id
    workos.organization_membership.delete_organization_membership(om.id)
    workos.user_management.delete_user(user.id)
    env_roles = workos.authorization.list_environment_roles()
    assert {r.slug for r in env_roles.data} == {"admin", "developer", "viewer"}
    org_roles = workos.authorization.list_organization_roles(ACME)
    admin = next(r for r in org_roles.data if r.slug == "admin")
    assert {"members:write", "keys:write", "sso:manage"} <= set(admin.permissions)
    made = workos.authorization.create_environment_role(slug="contractor", name="Contractor",
                                                        description="Works on a project")
    assert (made.slug, made.type, made.permissions) == ("contractor", "EnvironmentRole", [])
    assert workos.authorization.get_environment_role("contractor").id == made.id
    om = workos.organization_membership.create_organization_membership(
        user_id=ACME_ADMIN_USER, organization_id=GLOBEX, role=RoleSingle(role_slug="contractor"))
    assert om.role.slug == "contractor"
    workos.organization_membership.delete_organization_membership(om.id)
    with pytest.raises(ConflictError):
        workos.authorization.create_environment_role(slug="contractor", name="Again")
    created = workos.events.list_events(events=["role.created"]).data
    assert [(e.data.slug, e.data.resource_type_slug) for e in created] == [("contractor", "organization")]
    for slug, name in (("Has Spaces", "Bad"), ("x" * 49, "Too long"), ("fine", "n" * 49)):
        with pytest.raises(UnprocessableEntityError):
            workos.authorization.create_environment_role(slug=slug, name=name)
    with pytest.raises(NotFoundError):
        workos.authorization.get_environment_role("nobody")
    _validate(recorder, openapi_contract)


def test_authkit_sessions_jwks(workos: WorkOSClient, recorder: RecordingHTTPClient,
                               openapi_contract: OpenAPIContract) -> None:
    url = workos.user_management.get_authorization_url(
        redirect_uri=REDIRECT_URI, provider="authkit", organization_id=ACME, login_hint="admin@acme.test",
        state="s1")
    resp = follow_authorize(url)
    assert resp.status_code == 302
    code, state = code_from(resp.headers["location"])
    assert state == "s1"
    auth = workos.user_management.authenticate_with_code(code=code, ip_address="10.0.0.1", user_agent="pytest")
    assert auth.organization_id == ACME
    assert auth.authentication_method.value == "SSO"
    refreshed = workos.user_management.authenticate_with_refresh_token(refresh_token=auth.refresh_token)
    assert refreshed.refresh_token != auth.refresh_token
    sessions = workos.user_management.list_sessions(auth.user.id)
    assert sessions.data[0].auth_method.value == "sso"
    assert sessions.data[0].ip_address == "10.0.0.1"
    workos.user_management.revoke_session(session_id=sessions.data[0].id)
    assert workos.user_management.list_sessions(auth.user.id).data[0].status.value == "revoked"
    jwks = workos.user_management.get_jwks(CLIENT_ID)
    assert jwks.keys[0].kid
    assert jwks.keys[0].x_5_c
    _validate(recorder, openapi_contract)


@pytest.mark.parametrize(
    ("org", "conn_type", "email", "groups"),
    [
        (ACME, "OktaSAML", "admin@acme.test", ["HatiData Admins", "Everyone"]),
        (GLOBEX, "AzureSAML", "admin@globex.test", ["5581e43f-6096-41d4-8ffa-04e560bab39d"]),
        ("org_01HTDQ8A300000000000000001", "GoogleSAML", "dev@initech.test", ["HatiData Developers"]),
        ("org_01HTDQ8A400000000000000001", "OneLoginSAML", "viewer@umbrella.test", ["HatiData Viewers"]),
    ],
)
def test_sso_profile_per_idp(workos: WorkOSClient, recorder: RecordingHTTPClient,
                             openapi_contract: OpenAPIContract, org: str, conn_type: str, email: str,
                             groups: list[str]) -> None:
    url = workos.sso.get_authorization_url(redirect_uri=REDIRECT_URI, organization=org, login_hint=email,
                                           state="st")
    resp = follow_authorize(url)
    assert resp.status_code == 302, resp.text
    code, _ = code_from(resp.headers["location"])
    result = workos.sso.get_profile_and_token(code=code)
    prof = result.profile
    assert prof.connection_type.value == conn_type
    assert prof.email == email
    assert prof.organization_id == org
    assert prof.groups == groups
    assert prof.raw_attributes
    assert workos.sso.get_profile(access_token=result.access_token).id == prof.id
    logout = workos.sso.authorize_logout(profile_id=prof.id)
    assert logout.logout_url.startswith(workos.base_url.rstrip("/") + "/sso/logout?token=")
    assert follow_authorize(logout.logout_url).status_code == 302
    _validate(recorder, openapi_contract)


def test_events_portal_webhook_endpoints(workos: WorkOSClient, recorder: RecordingHTTPClient,
                                         openapi_contract: OpenAPIContract) -> None:
    org = workos.organizations.create_organization(name="Evented")
    events = workos.events.list_events(events=["organization.created", "organization.updated"], order="asc")
    assert [e.event for e in events.data] == ["organization.created"]
    assert events.data[0].data.id == org.id
    link = workos.admin_portal.generate_link(organization=ACME, intent="sso")
    assert "/portal/" in link.link
    workos.admin_portal.revoke_link(organization=ACME, external_user_id="u1")
    ep = workos.webhooks.create_webhook_endpoint(endpoint_url="https://example.test/hook",
                                                 events=["dsync.user.created"])
    assert ep.secret
    assert ep.status.value == "enabled"
    assert [e.id for e in workos.webhooks.list_webhook_endpoints().data] == [ep.id]
    ep = workos.webhooks.update_webhook_endpoint(ep.id, events=["dsync.user.updated"])
    assert ep.events == ["dsync.user.updated"]
    workos.webhooks.delete_webhook_endpoint(ep.id)
    _validate(recorder, openapi_contract)
