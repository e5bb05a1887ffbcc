"""Microsoft Entra ID (formerly Azure AD): SAML (metadata URL) or OIDC, SCIM, groups sent as object-id GUIDs."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from hatidata_auth.idp import (
    CANONICAL_GROUPS,
    AttributeRequirement,
    ConsoleField,
    ConsoleStep,
    IdPPlugin,
    PluginWarning,
    PresetMapping,
    RoleMappingPreset,
    ValidationResult,
    check_https_url,
    is_guid,
    query_param,
    validate_guid,
    wrong_idp,
)

HOSTS = ("login.microsoftonline.com", "login.microsoftonline.us", "login.partner.microsoftonline.cn")
METADATA_PATH = re.compile(r"^/([^/]+)/federationmetadata/2007-06/federationmetadata\.xml$", re.IGNORECASE)
DISCOVERY_PATH = re.compile(r"^/([^/]+)/v2\.0/\.well-known/openid-configuration$")
TENANT_DOMAIN = re.compile(r"^[a-z0-9-]+(\.[a-z0-9-]+)+$", re.IGNORECASE)
CLAIMS = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims"
GROUPS_CLAIM = "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups"
GROUPS_LINK = "http://schemas.microsoft.com/claims/groups.link"
OBJECT_ID = "http://schemas.microsoft.com/identity/claims/objectidentifier"


def _tenant_ok(tenant: str) -> bool:
    return is_guid(tenant) or bool(TENANT_DOMAIN.match(tenant))


class AzurePlugin(IdPPlugin):
    """Microsoft Entra ID."""

    name = "azure"
    display_name = "Microsoft Entra ID"
    connection_types = {"saml": "AzureSAML", "oidc": "EntraIdOIDC"}
    directory_type = "azure scim v2.0"
    supports_oidc = True
    supports_scim = True
    metadata_source = "url"
    group_identifier_kind = "object_id"
    idp_hosts = (
        r"^login\.(microsoftonline\.(com|us)|partner\.microsoftonline\.cn)$",
        r"^sts\.windows\.net$",
    )
    setup_guide = True
    example_metadata_url = "https://login.microsoftonline.com/9c2f6d41-6a7e-4c1b-8b4e-3f0a5c7d2e19/federationmetadata/2007-06/federationmetadata.xml?appid=2a1f6b0e-3c4d-4e5f-8a9b-0c1d2e3f4a5b"
    example_entity_id = "https://sts.windows.net/9c2f6d41-6a7e-4c1b-8b4e-3f0a5c7d2e19/"
    example_sso_url = "https://login.microsoftonline.com/9c2f6d41-6a7e-4c1b-8b4e-3f0a5c7d2e19/saml2"
    metadata_help = ("Enterprise applications → your app → Single sign-on → section 3 “SAML Signing "
                     "Certificate” → copy the App Federation Metadata URL.")
    oidc_discovery_example = "https://login.microsoftonline.com/<tenant-id>/v2.0/.well-known/openid-configuration"
    prerequisites = (
        "An Entra ID role that can create enterprise applications (e.g. Cloud Application Administrator).",
        "Assigning groups to an enterprise app needs Entra ID P1 or P2.",
        "The Object IDs of your HatiData Admins, Developers and Viewers groups (Groups → the group → Overview).",
    )
    saml_console_steps = (
        ConsoleStep("Entra admin center → Enterprise applications → New application → Create your own application "
                    "→ name it → “Integrate any other application you don't find in the gallery (Non-gallery)” "
                    "→ Create."),
        ConsoleStep("Manage → Single sign-on → SAML → Basic SAML Configuration → Edit:", (
            ConsoleField("Identifier (Entity ID)", "{sp_entity_id}", copy=True),
            ConsoleField("Reply URL (Assertion Consumer Service URL)", "{acs_url}", copy=True),
        )),
        ConsoleStep("Attributes & Claims → Edit; keep the namespace http://schemas.xmlsoap.org/ws/2005/05/identity/"
                    "claims (it must end in /claims):", (
                        ConsoleField("emailaddress", "user.mail"), ConsoleField("givenname", "user.givenname"),
                        ConsoleField("surname", "user.surname"), ConsoleField("name", "user.userprincipalname"),
                    )),
        ConsoleStep("Add a group claim → “Groups assigned to the application”, source attribute Group ID → Save."),
        ConsoleStep("Users and groups → Add user/group → assign the three HatiData groups."),
    )
    rotation_steps = (
        ConsoleStep("Entra admin center → Enterprise applications → your HatiData app → Single sign-on → SAML "
                    "Certificates → Edit → Add a certificate (New Certificate → Save); it is added inactive."),
        ConsoleStep("Download the new Federation Metadata XML (or copy the App Federation Metadata URL) and give it "
                    "to this page."),
        ConsoleStep("After this page trusts both certificates: on the new certificate, ⋯ → Make certificate active."),
    )
    oidc_console_steps = (
        ConsoleStep("Entra admin center → Identity → Applications → App registrations → New registration "
                    "(single tenant)."),
        ConsoleStep("Redirect URI, platform Web:", (ConsoleField("Redirect URI", "{redirect_uri}", copy=True),)),
        ConsoleStep("Certificates & secrets → New client secret → copy its Value (shown once); Overview → copy the "
                    "Application (client) ID."),
        ConsoleStep("Token configuration → Add optional claim → ID token: email, family_name, given_name (accept "
                    "the Microsoft Graph email, profile permission)."),
        ConsoleStep("Token configuration → Add groups claim → “Groups assigned to the application”."),
        ConsoleStep("Overview → Endpoints → copy the “OpenID Connect metadata document” URL."),
    )
    directory_steps = (
        ConsoleStep("Enterprise applications → New application → Create your own → Non-gallery."),
        ConsoleStep("Manage → Provisioning → Get Started → Provisioning Mode Automatic."),
        ConsoleStep("Admin Credentials: Tenant URL = the WorkOS endpoint, Secret Token = the WorkOS bearer token "
                    "(from the Admin Portal link below) → Test Connection → Save."),
        ConsoleStep("Mappings: enable user and group mappings and map objectId → externalId (WorkOS needs it)."),
        ConsoleStep("Users and groups → assign; Provisioning Status On, Scope “Sync only assigned users and "
                    "groups”."),
    )
    saml_attributes = (
        AttributeRequirement("idp_id", OBJECT_ID, advice="Entra sends the object identifier claim by default; "
                                                         "check it was not removed under Attributes & Claims."),
        AttributeRequirement("email", f"{CLAIMS}/emailaddress",
                             advice="Map emailaddress → user.mail; users without a mailbox have an empty mail: "
                                    "use user.userprincipalname for them."),
        AttributeRequirement("first_name", f"{CLAIMS}/givenname", advice="Map givenname → user.givenname."),
        AttributeRequirement("last_name", f"{CLAIMS}/surname", advice="Map surname → user.surname."),
        AttributeRequirement("groups", GROUPS_CLAIM, required=False,
                             advice="Add a group claim (“Groups assigned to the application”) and assign the "
                                    "user's group to the enterprise application."),
    )
    oidc_claims = (
        AttributeRequirement("idp_id", "sub", advice="Entra always sends sub."),
        AttributeRequirement("email", "email", advice="Token configuration → add the optional claim email."),
        AttributeRequirement("first_name", "given_name", advice="Add the optional claim given_name."),
        AttributeRequirement("last_name", "family_name", advice="Add the optional claim family_name."),
        AttributeRequirement("groups", "groups", required=False, advice="Token configuration → Add groups claim."),
    )
    advice = {
        "no_groups": "No groups arrived: add a group claim and assign the user's group to the application "
                     "(nested groups do not count).",
        "groups_overage": "Entra sent groups.link instead of groups: the user is in more than 150 groups. Choose "
                          "“Groups assigned to the application” instead of “All groups”.",
        "unmapped_groups": "Entra sends group Object IDs (GUIDs), not names: map the Object IDs shown here.",
        "no_role": "The user is in none of the mapped groups: assign one of the HatiData groups to them.",
    }
    sign_in_fixes = {
        "not_assigned_to_app": "Assign the user in the Microsoft Entra admin center: Enterprise applications → "
                               "HatiData → Users and groups → Add user/group (Entra answers AADSTS50105 until then).",
        "certificate_expired": "In Entra: Enterprise applications → HatiData → Single sign-on → SAML Certificates → "
                               "Edit → New Certificate, make it active, then give the wizard the metadata URL again.",
        "idp_error": "Entra's sign-in logs (Enterprise applications → HatiData → Sign-in logs) show the AADSTS code "
                     "of the refusal.",
    }
    known_traps = (
        PluginWarning("entra-overage", "With “All groups”, a user in more than 150 groups (SAML; 200 for OIDC) "
                      "gets no groups claim at all, only a groups.link. Emit “Groups assigned to the "
                      "application”.", step="console"),
        PluginWarning("entra-guids", "Entra sends group Object IDs (GUIDs), not names: enter the Object ID of "
                      "each group.", step="role_mapping"),
        PluginWarning("entra-scim-objectid", "WorkOS needs objectId → externalId in the provisioning mappings; "
                      "provisioning runs about every 40 minutes (use Provision on demand to test).",
                      step="directory"),
    )

    def validate_metadata_url(self, url: str) -> ValidationResult:
        """Accept ``https://login.microsoftonline.com/<tenant>/federationmetadata/2007-06/federationmetadata.xml``."""
        checked = check_https_url("metadata_url", url)
        if isinstance(checked, ValidationResult):
            return checked
        host, path = checked
        if host not in HOSTS:
            return wrong_idp("metadata_url", host, self.display_name) or ValidationResult.failure(
                "metadata_url", f"{host} is not a Microsoft sign-in host; copy the App Federation Metadata URL.")
        match = METADATA_PATH.match(path)
        if not match:
            return ValidationResult.failure(
                "metadata_url", "An Entra metadata URL looks like https://login.microsoftonline.com/<tenant>/"
                                "federationmetadata/2007-06/federationmetadata.xml?appid=<app id>.")
        if not _tenant_ok(match.group(1)):
            return ValidationResult.failure("metadata_url", "The tenant in the URL is neither a tenant ID (GUID) "
                                                            "nor a domain.")
        appid = query_param(url, "appid")
        if appid is not None and not is_guid(appid):
            return ValidationResult.failure("metadata_url", "The appid in the URL must be the application ID "
                                                            "(a GUID).")
        return ValidationResult.success(url.strip())

    def validate_oidc_discovery_url(self, url: str) -> ValidationResult:
        """Accept ``https://login.microsoftonline.com/<tenant>/v2.0/.well-known/openid-configuration``."""
        result = super().validate_oidc_discovery_url(url)
        if not result.ok:
            return result
        checked = check_https_url("discovery_endpoint", url, HOSTS)
        if isinstance(checked, ValidationResult):
            return checked
        match = DISCOVERY_PATH.match(checked[1])
        if not match or not _tenant_ok(match.group(1)):
            return ValidationResult.failure(
                "discovery_endpoint", "Use the “OpenID Connect metadata document” URL: "
                                      "https://login.microsoftonline.com/<tenant>/v2.0/.well-known/"
                                      "openid-configuration.")
        return result

    def validate_group_identifier(self, value: str) -> ValidationResult:
        """Entra groups are Object IDs: accept GUIDs only."""
        return validate_guid("identifier", value)

    def role_mapping_presets(self) -> tuple[RoleMappingPreset, ...]:
        """The three HatiData groups, keyed by Object IDs the admin enters."""
        return (RoleMappingPreset(
            key="hatidata-groups-object-ids",
            title="HatiData Admins / Developers / Viewers (Object IDs)",
            identifier_kind="object_id",
            mappings=tuple(PresetMapping(label, role, priority, None)
                           for priority, (label, role) in enumerate(CANONICAL_GROUPS, start=1)),
            description="Enter each group's Object ID (Entra admin center → Groups → the group → Overview).",
        ),)

    def clean_groups(self, groups: Sequence[str]) -> list[str]:
        """Object IDs compare case-insensitively: lower-case them."""
        return super().clean_groups([g.strip().lower() if is_guid(g) else g for g in groups])

    def groups_overage(self, raw_attributes: Mapping[str, Any]) -> bool:
        """Entra replaces the groups claim by ``groups.link`` above 150 groups."""
        return bool(raw_attributes.get(GROUPS_LINK)) or bool(raw_attributes.get("_claim_names"))
