"""Unit tests of the four IdP plugins: validation tables, presets, profile normalization, metadata files."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from hatidata_auth.idp import IdPPlugin
from hatidata_auth.idp.testing import (
    NOT_SAML_XML,
    NOT_XML,
    XML_BOMB,
    XML_EXTERNAL_ENTITY,
    certificate_b64,
    saml_metadata,
)
from hatidata_auth.idp.validation import parse_saml_metadata
from plugins.azure import AzurePlugin
from plugins.google import GooglePlugin
from plugins.okta import OktaPlugin
from plugins.onelogin import OneLoginPlugin

NOW = datetime.now(UTC)
TENANT = "9c2f6d41-6a7e-4c1b-8b4e-3f0a5c7d2e19"
APPID = "2a1f6b0e-3c4d-4e5f-8a9b-0c1d2e3f4a5b"
GUID = "5581e43f-6096-41d4-8ffa-04e560bab39d"
okta, azure, google, onelogin = OktaPlugin(), AzurePlugin(), GooglePlugin(), OneLoginPlugin()


def test_identifiers_match_workos() -> None:
    assert okta.connection_types == {"saml": "OktaSAML", "oidc": "OktaOIDC"}
    assert azure.connection_types == {"saml": "AzureSAML", "oidc": "EntraIdOIDC"}
    assert google.connection_types == {"saml": "GoogleSAML", "oidc": "GoogleOIDC"}
    assert onelogin.connection_types == {"saml": "OneLoginSAML", "oidc": "GenericOIDC"}
    assert [p.directory_type for p in (okta, azure, google, onelogin)] == [
        "okta scim v2.0", "azure scim v2.0", "gsuite directory", "onelogin scim v2.0"]
    assert (okta.supports_scim, azure.supports_scim, google.supports_scim, onelogin.supports_scim) == (
        True, True, False, True)
    assert (okta.metadata_source, azure.metadata_source, google.metadata_source, onelogin.metadata_source) == (
        "url", "url", "xml", "xml")
    assert not google.oidc_group_roles


# --- metadata URLs ------------------------------------------------------------------------------------------

OKTA_URL = "https://dev-2578259.okta.com/app/exkaell8gidiiUWrg5d7/sso/saml/metadata"
ENTRA_URL = (f"https://login.microsoftonline.com/{TENANT}/federationmetadata/2007-06/federationmetadata.xml"
             f"?appid={APPID}")
ONELOGIN_URL = "https://app.onelogin.com/saml/metadata/3f1a2b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b"


@pytest.mark.parametrize(("plugin", "url", "ok", "message"), [
    (okta, OKTA_URL, True, None),
    (okta, "https://acme.oktapreview.com/app/exk123ABC/sso/saml/metadata", True, None),
    (okta, "http://dev-1.okta.com/app/exk1/sso/saml/metadata", False, "https://"),
    (okta, "https://dev-1.okta.com/app/exk1/sso/saml", False, "looks like"),
    (okta, ENTRA_URL, False, "Microsoft Entra ID URL"),
    (okta, "not a url", False, "https://"),
    (okta, "https://user:pw@dev-1.okta.com/app/exk1/sso/saml/metadata", False, "credentials"),
    (azure, ENTRA_URL, True, None),
    (azure, "https://login.microsoftonline.com/contoso.onmicrosoft.com/FederationMetadata/2007-06/"
            "FederationMetadata.xml", True, None),
    (azure, f"https://login.microsoftonline.us/{TENANT}/federationmetadata/2007-06/federationmetadata.xml", True,
     None),
    (azure, OKTA_URL, False, "Okta URL"),
    (azure, f"https://login.microsoftonline.com/{TENANT}/federationmetadata/2007-06/federationmetadata.xml"
            "?appid=HatiData", False, "appid"),
    (azure, "https://login.microsoftonline.com/not a tenant!/federationmetadata/2007-06/federationmetadata.xml",
     False, "tenant"),
    (azure, "https://evil.example.test/federationmetadata/2007-06/federationmetadata.xml", False, "Microsoft"),
    (onelogin, ONELOGIN_URL, True, None),
    (onelogin, "https://acme.onelogin.com/saml/metadata/123456", True, None),
    (onelogin, OKTA_URL, False, "Okta URL"),
    (onelogin, "https://acme.onelogin.com/trust/saml2/http-post/sso/123", False, "Issuer URL"),
    (google, "https://accounts.google.com/o/saml2?idpid=C01234567", False, "file"),
])
def test_metadata_url_validation(plugin: IdPPlugin, url: str, ok: bool, message: str | None) -> None:
    result = plugin.validate_metadata_url(url)
    assert result.ok is ok, result.errors
    if message:
        assert message in result.errors[0].message


def test_okta_custom_domain_is_accepted_with_a_warning() -> None:
    result = okta.validate_metadata_url("https://login.acme.test/app/exk123/sso/saml/metadata")
    assert result.ok
    assert "custom domain" in result.warnings[0]


@pytest.mark.parametrize(("plugin", "url", "ok"), [
    (okta, "https://dev-1.okta.com/.well-known/openid-configuration", True),
    (okta, "https://dev-1.okta.com/oauth2/default/.well-known/openid-configuration", True),
    (okta, "https://accounts.google.com/.well-known/openid-configuration", False),
    (azure, f"https://login.microsoftonline.com/{TENANT}/v2.0/.well-known/openid-configuration", True),
    (azure, "https://login.microsoftonline.com/common/oauth2/authorize", False),
    (google, "https://accounts.google.com/.well-known/openid-configuration", True),
    (google, "https://accounts.google.com/o/oauth2/.well-known/openid-configuration", False),
    (onelogin, "https://acme.onelogin.com/oidc/2/.well-known/openid-configuration", True),
    (onelogin, "https://acme.onelogin.com/oidc/1/.well-known/openid-configuration", False),
    (onelogin, "http://acme.onelogin.com/oidc/2/.well-known/openid-configuration", False),
])
def test_oidc_discovery_validation(plugin: IdPPlugin, url: str, ok: bool) -> None:
    assert plugin.validate_oidc_discovery_url(url).ok is ok


# --- metadata files ---------------------------------------------------------------------------------------

GOOGLE_ENTITY = "https://accounts.google.com/o/saml2?idpid=C01234567"
GOOGLE_SSO = "https://accounts.google.com/o/saml2/idp?idpid=C01234567"


def test_google_metadata_file_is_parsed_with_its_certificate() -> None:
    expiry = NOW + timedelta(days=400)
    result = google.validate_metadata_xml(saml_metadata(GOOGLE_ENTITY, GOOGLE_SSO, not_after=expiry), NOW)
    assert result.ok, result.errors
    assert result.value.entity_id == GOOGLE_ENTITY
    assert result.value.sso_urls == (GOOGLE_SSO,)
    assert abs((result.value.earliest_expiry - expiry).total_seconds()) < 2
    assert result.value.certificates[0].pem.startswith("-----BEGIN CERTIFICATE-----")


@pytest.mark.parametrize(("plugin", "document", "message"), [
    (google, XML_BOMB, "DTD"),
    (google, XML_EXTERNAL_ENTITY, "DTD"),
    (google, NOT_SAML_XML, "not SAML metadata"),
    (google, NOT_XML, "not well-formed"),
    (google, b"   ", "empty"),
    (google, saml_metadata(GOOGLE_ENTITY, GOOGLE_SSO, not_after=NOW - timedelta(days=1)), "expired"),
    (google, saml_metadata(GOOGLE_ENTITY, GOOGLE_SSO, with_cert=False), "no signing certificate"),
    (google, saml_metadata(GOOGLE_ENTITY, GOOGLE_SSO, certificate="bm90IGEgY2VydA=="), "cannot be read"),
    (google, saml_metadata(okta.example_entity_id, okta.example_sso_url), "not Google Workspace"),
    (onelogin, saml_metadata(GOOGLE_ENTITY, GOOGLE_SSO), "not OneLogin"),
    (onelogin, XML_BOMB, "DTD"),
])
def test_bad_metadata_files_are_refused(plugin: IdPPlugin, document: bytes, message: str) -> None:
    result = plugin.validate_metadata_xml(document, NOW)
    assert not result.ok
    assert message in result.errors[0].message


def test_onelogin_metadata_file_is_accepted() -> None:
    document = saml_metadata(onelogin.example_entity_id, onelogin.example_sso_url)
    assert onelogin.validate_metadata_xml(document, NOW).ok


def test_certificate_expiring_soon_is_a_warning() -> None:
    document = saml_metadata(GOOGLE_ENTITY, GOOGLE_SSO, not_after=NOW + timedelta(days=5))
    result = google.validate_metadata_xml(document, NOW)
    assert result.ok
    assert "expires on" in result.warnings[0]


def test_too_large_file_is_refused() -> None:
    result = parse_saml_metadata(b"<a>" + b" " * 600_000 + b"</a>", NOW)
    assert "too large" in result.errors[0].message


def test_an_expired_certificate_next_to_a_valid_one_is_ignored() -> None:
    document = saml_metadata(GOOGLE_ENTITY, GOOGLE_SSO).replace(
        b'<md:NameIDFormat>',
        b'<md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>'
        + certificate_b64(NOW - timedelta(days=2)).encode()
        + b'</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor><md:NameIDFormat>')
    result = google.validate_metadata_xml(document, NOW)
    assert result.ok
    assert len(result.value.certificates) == 1
    assert any("expired certificate" in w for w in result.warnings)


# --- group identifiers and presets --------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "ok"), [
    (GUID, True), (GUID.upper(), True), (f"  {GUID} ", True),
    ("HatiData Admins", False), ("5581e43f-6096-41d4-8ffa", False), ("", False),
])
def test_entra_group_identifiers_must_be_guids(value: str, ok: bool) -> None:
    result = azure.validate_group_identifier(value)
    assert result.ok is ok
    if ok:
        assert result.value == GUID
    elif value:
        assert "not a group object ID" in result.errors[0].message


def test_name_based_plugins_accept_names() -> None:
    for plugin in (okta, google, onelogin):
        assert plugin.validate_group_identifier("HatiData Admins").value == "HatiData Admins"
        assert not plugin.validate_group_identifier("x" * 256).ok


@pytest.mark.parametrize("plugin", [okta, google, onelogin])
def test_name_presets_map_the_hatidata_groups(plugin: IdPPlugin) -> None:
    (preset,) = plugin.role_mapping_presets()
    assert preset.identifier_kind == "name"
    assert [(m.identifier, m.role) for m in preset.mappings] == [
        ("HatiData Admins", "admin"), ("HatiData Developers", "developer"), ("HatiData Viewers", "viewer")]


def test_entra_preset_asks_for_object_ids() -> None:
    (preset,) = azure.role_mapping_presets()
    assert preset.identifier_kind == "object_id"
    assert [(m.label, m.identifier, m.role) for m in preset.mappings] == [
        ("HatiData Admins", None, "admin"), ("HatiData Developers", None, "developer"),
        ("HatiData Viewers", None, "viewer")]


def test_onelogin_preset_uses_roles() -> None:
    assert "Roles" in onelogin.role_mapping_presets()[0].title


# --- profile normalization ------------------------------------------------------------------------------


def _profile(connection_type: str, **fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "object": "profile", "id": "prof_1", "organization_id": "org_1", "connection_id": "conn_1",
        "connection_type": connection_type, "idp_id": "00u1a0ufowBJlzPlk357", "email": "Todd@Example.com",
        "first_name": "Todd", "last_name": "Rundgren", "name": None, "raw_attributes": {}}
    base.update(fields)
    return base


def test_okta_profile_keeps_group_names_including_everyone() -> None:
    profile = okta.normalize_profile(_profile("OktaSAML", groups=["HatiData Admins", "Everyone"]))
    assert profile.email == "todd@example.com"
    assert profile.groups == ("HatiData Admins", "Everyone")
    assert profile.present == {"idp_id", "email", "first_name", "last_name", "groups"}


def test_entra_profile_lower_cases_guid_groups() -> None:
    profile = azure.normalize_profile(_profile("AzureSAML", groups=[GUID.upper(), GUID]))
    assert profile.groups == (GUID,)
    assert not profile.groups_overage


def test_entra_legacy_profile_with_claim_uris_and_overage() -> None:
    claims = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims"
    raw = {f"{claims}/emailaddress": "ada@globex.test", f"{claims}/givenname": "Ada",
           f"{claims}/surname": "Lovelace", "http://schemas.microsoft.com/identity/claims/objectidentifier": GUID,
           "http://schemas.microsoft.com/claims/groups.link": "https://graph.windows.net/x/users/y/getMemberObjects"}
    profile = azure.normalize_profile(_profile("AzureSAML", email=None, first_name=None, last_name=None,
                                               idp_id=None, raw_attributes=raw))
    assert (profile.email, profile.first_name, profile.last_name, profile.idp_id) == (
        "ada@globex.test", "Ada", "Lovelace", GUID)
    assert profile.groups == ()
    assert profile.groups_overage


def test_google_legacy_profile() -> None:
    raw = {"email": "ada@initech.test", "firstName": "Ada", "lastName": "L", "groups": ["HatiData Viewers"]}
    profile = google.normalize_profile(_profile("GoogleSAML", email=None, first_name=None, last_name=None,
                                                raw_attributes=raw))
    assert profile.email == "ada@initech.test"
    assert profile.groups == ("HatiData Viewers",)


def test_onelogin_semicolon_delimited_roles_are_split() -> None:
    raw = {"email": "ada@umbrella.test", "id": "3f1a2b4c", "groups": "HatiData Admins;HatiData Viewers;"}
    profile = onelogin.normalize_profile(_profile("OneLoginSAML", email=None, idp_id=None, raw_attributes=raw))
    assert profile.idp_id == "3f1a2b4c"
    assert profile.groups == ("HatiData Admins", "HatiData Viewers")


def test_oidc_profile_uses_claim_names() -> None:
    profile = onelogin.normalize_profile(_profile("GenericOIDC", email=None, raw_attributes={"email": "a@b.test"}))
    assert profile.email == "a@b.test"


def test_missing_email_is_not_present() -> None:
    profile = okta.normalize_profile(_profile("OktaSAML", email="", groups=None))
    assert "email" not in profile.present
    assert "groups" not in profile.present


# --- attribute maps and warnings --------------------------------------------------------------------------


def test_attribute_maps_sent_to_workos() -> None:
    assert okta.attribute_map("saml").as_dict() == {
        "idp_id": "id", "email": "email", "first_name": "firstName", "last_name": "lastName", "groups": "groups"}
    assert azure.attribute_map("saml").groups == "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups"
    assert "idp_id" not in google.attribute_map("saml").as_dict()  # Google sends the NameID instead
    assert okta.attribute_map("oidc").first_name == "given_name"


@pytest.mark.parametrize(("plugin", "text"), [
    (okta, "Everyone"), (azure, "150"), (google, "75"), (onelogin, "no group-deleted"),
])
def test_known_traps_are_warned(plugin: IdPPlugin, text: str) -> None:
    assert any(text in w.message for w in plugin.warnings())


def test_console_steps_show_the_workos_values() -> None:
    labels = {f.label: f.value for s in okta.console_steps("saml") for f in s.fields}
    assert labels["Single sign-on URL"] == "{acs_url}"
    assert labels["Audience URI (SP Entity ID)"] == "{sp_entity_id}"
    labels = {f.label: f.value for s in azure.console_steps("saml") for f in s.fields}
    assert labels["Reply URL (Assertion Consumer Service URL)"] == "{acs_url}"
    labels = {f.label: f.value for s in onelogin.console_steps("saml") for f in s.fields}
    assert labels["ACS (Consumer) URL Validator"] == "^{acs_url_regex}$"
