"""OneLogin: SAML (uploaded metadata file, or its issuer URL) or generic OIDC, SCIM, Roles sent as groups."""

from __future__ import annotations

import re

from hatidata_auth.idp import (
    CANONICAL_GROUPS,
    AttributeRequirement,
    ConsoleField,
    ConsoleStep,
    IdPPlugin,
    PluginWarning,
    PresetMapping,
    RoleMappingPreset,
    SamlMetadata,
    ValidationResult,
    check_https_url,
    host_of,
    wrong_idp,
)

ONELOGIN_HOST = re.compile(r"^([a-z0-9-]+)\.onelogin\.com$")
METADATA_PATH = re.compile(r"^/saml/metadata/[0-9a-fA-F-]+/?$")
DISCOVERY_PATH = "/oidc/2/.well-known/openid-configuration"


class OneLoginPlugin(IdPPlugin):
    """OneLogin."""

    name = "onelogin"
    display_name = "OneLogin"
    # WorkOS has no OneLogin OIDC type: OIDC goes through GenericOIDC.
    connection_types = {"saml": "OneLoginSAML", "oidc": "GenericOIDC"}
    directory_type = "onelogin scim v2.0"
    supports_oidc = True
    supports_scim = True
    metadata_source = "xml"
    metadata_sources = ("xml", "url")
    group_identifier_kind = "name"
    idp_hosts = (r"(^|\.)onelogin\.com$",)
    setup_guide = True
    example_metadata_url = "https://app.onelogin.com/saml/metadata/3f1a2b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b"
    example_entity_id = "https://app.onelogin.com/saml/metadata/3f1a2b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b"
    example_sso_url = "https://acme.onelogin.com/trust/saml2/http-post/sso/3f1a2b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b"
    metadata_help = ("OneLogin → Applications → your app → SSO tab → More Actions → SAML Metadata downloads the "
                     "file. The Issuer URL on the same tab (https://app.onelogin.com/saml/metadata/…) also works.")
    oidc_discovery_example = "https://your-subdomain.onelogin.com/oidc/2/.well-known/openid-configuration"
    prerequisites = (
        "A OneLogin account owner or administrator with app management rights.",
        "OneLogin Roles named HatiData Admins, HatiData Developers and HatiData Viewers (Users → Roles): "
        "OneLogin gives a user one group but many roles, so roles carry the HatiData role.",
    )
    saml_console_steps = (
        ConsoleStep("Administration → Applications → Add App → “SAML Custom Connector (Advanced)”; name it → Save."),
        ConsoleStep("Configuration tab:", (
            ConsoleField("Audience (EntityID)", "{sp_entity_id}", copy=True),
            ConsoleField("Recipient", "{acs_url}", copy=True),
            ConsoleField("ACS (Consumer) URL Validator", "^{acs_url_regex}$", copy=True),
            ConsoleField("ACS (Consumer) URL", "{acs_url}", copy=True),
            ConsoleField("SAML initiator", "Service Provider"),
            ConsoleField("SAML signature element", "Assertion"),
        )),
        ConsoleStep("Parameters tab, each with “Include in SAML assertion” ticked:", (
            ConsoleField("email", "Email"), ConsoleField("firstName", "First Name"),
            ConsoleField("lastName", "Last Name"), ConsoleField("id", "UUID"),
        )),
        ConsoleStep("Add the parameter groups with “Include in SAML assertion” and “Multi-value parameter”, mapped "
                    "to User Roles (semicolon delimited, multi-value output).", (
                        ConsoleField("Field name", "groups", copy=True),)),
        ConsoleStep("SSO tab → More Actions → SAML Metadata: keep the downloaded file for the next steps."),
        ConsoleStep("Users → give the HatiData roles to the right people and the app to them."),
    )
    rotation_steps = (
        ConsoleStep("OneLogin Administration → Security → Certificates → New: create the new certificate."),
        ConsoleStep("Applications → your HatiData app → SSO → download the SAML metadata signed with the new "
                    "certificate (More Actions → SAML Metadata after choosing it) and give it to this page."),
        ConsoleStep("After this page trusts both certificates: SSO tab → X.509 Certificate → Change → choose the "
                    "new certificate → Save (the app's certificate changes)."),
    )
    oidc_console_steps = (
        ConsoleStep("Applications → Add App → “OpenId Connect (OIDC)”."),
        ConsoleStep("Configuration tab → Redirect URI's (HTTPS; changes can take 10 minutes):", (
            ConsoleField("Redirect URI", "{redirect_uri}", copy=True),)),
        ConsoleStep("SSO tab: copy the Client ID, Client Secret and the OpenID Provider Configuration URL."),
        ConsoleStep("OneLogin OIDC is SP-initiated only: users start from HatiData, not the OneLogin portal."),
    )
    directory_steps = (
        ConsoleStep("Applications → Add App → search SCIM → “SCIM Provisioner with SAML (SCIM V2 Enterprise)”."),
        ConsoleStep("Configuration: SCIM Base URL = the WorkOS endpoint, SCIM Bearer Token = the WorkOS token (from "
                    "the Admin Portal link below); API Status Enable → Save."),
        ConsoleStep("Provisioning: tick Enable provisioning; untick “Require admin approval” for create, update "
                    "and delete, or changes wait as Pending → Save."),
        ConsoleStep("Parameters → Groups → tick “Include in User Provisioning” → Save."),
        ConsoleStep("Rules → Add Rule → Action “Set Groups in <app>” → for each role with value that matches "
                    "HatiData.* (the role name becomes the group name)."),
        ConsoleStep("Users tab → confirm any Pending updates."),
    )
    saml_attributes = (
        AttributeRequirement("idp_id", "id", advice="Parameters: add id → UUID, included in the SAML assertion."),
        AttributeRequirement("email", "email", advice="Parameters: add email → Email, included in the assertion."),
        AttributeRequirement("first_name", "firstName", advice="Parameters: add firstName → First Name."),
        AttributeRequirement("last_name", "lastName", advice="Parameters: add lastName → Last Name."),
        AttributeRequirement("groups", "groups", required=False,
                             advice="Parameters: add groups (multi-value) mapped to User Roles."),
    )
    oidc_claims = (
        AttributeRequirement("idp_id", "sub", advice="OneLogin always sends sub."),
        AttributeRequirement("email", "email", advice="Request the email scope."),
        AttributeRequirement("first_name", "given_name", advice="Request the profile scope."),
        AttributeRequirement("last_name", "family_name", advice="Request the profile scope."),
        AttributeRequirement("groups", "groups", required=False,
                             advice="Configuration → Token: add groups (User Roles) to the ID token."),
    )
    advice = {
        "no_groups": "No groups arrived: the groups parameter must be a multi-value parameter mapped to User Roles "
                     "and included in the SAML assertion.",
        "unmapped_groups": "OneLogin sends what the groups parameter holds: with User Roles these are role names; "
                           "with MemberOf they are AD group names. Map those exact values.",
        "no_role": "The user has none of the mapped roles: give them a HatiData role in OneLogin.",
    }
    sign_in_fixes = {
        "not_assigned_to_app": "Give the user the HatiData app in OneLogin: Users → the user → Applications → +, or "
                               "add them to a Role that has the HatiData app.",
        "certificate_expired": "In OneLogin: Security → Certificates → New, select it under Applications → HatiData "
                               "→ SSO → X.509 Certificate, then upload the new SAML metadata file in the wizard.",
        "idp_error": "OneLogin's Activity → Events, filtered on the user, names why OneLogin refused.",
    }
    known_traps = (
        PluginWarning("onelogin-group-removal", "Removing a group from the SCIM app sends no group-deleted or "
                      "user-removed event; users provisioned only through it become inactive. Clean up users first.",
                      step="directory"),
        PluginWarning("onelogin-roles", "OneLogin lets a user have one group but many roles: map Roles, not "
                      "Groups.", step="role_mapping"),
        PluginWarning("onelogin-approval", "With “Require admin approval” left on, provisioning changes wait as "
                      "Pending in OneLogin.", step="directory"),
    )

    def validate_metadata_url(self, url: str) -> ValidationResult:
        """Accept the Issuer URL ``https://<sub>.onelogin.com/saml/metadata/<id>``."""
        checked = check_https_url("metadata_url", url)
        if isinstance(checked, ValidationResult):
            return checked
        host, path = checked
        if not ONELOGIN_HOST.match(host):
            return wrong_idp("metadata_url", host, self.display_name) or ValidationResult.failure(
                "metadata_url", f"{host} is not a onelogin.com host.")
        if not METADATA_PATH.match(path):
            return ValidationResult.failure(
                "metadata_url", "A OneLogin metadata URL looks like https://app.onelogin.com/saml/metadata/<id> "
                                "(the SSO tab's Issuer URL).")
        return ValidationResult.success(url.strip())

    def check_metadata(self, metadata: SamlMetadata) -> str | None:
        """OneLogin's entity ID or sign-in URL is on onelogin.com."""
        hosts = [host_of(metadata.entity_id), *(host_of(u) for u in metadata.sso_urls)]
        if not any(ONELOGIN_HOST.match(h) for h in hosts):
            return f"This metadata is for {metadata.entity_id}, not OneLogin."
        return None

    def validate_oidc_discovery_url(self, url: str) -> ValidationResult:
        """Accept ``https://<sub>.onelogin.com/oidc/2/.well-known/openid-configuration``."""
        result = super().validate_oidc_discovery_url(url)
        if not result.ok:
            return result
        checked = check_https_url("discovery_endpoint", url, host_pattern=ONELOGIN_HOST)
        if isinstance(checked, ValidationResult):
            return checked
        if checked[1] != DISCOVERY_PATH:
            return ValidationResult.failure("discovery_endpoint", f"A OneLogin discovery URL ends with "
                                                                  f"{DISCOVERY_PATH}.")
        return result

    def role_mapping_presets(self) -> tuple[RoleMappingPreset, ...]:
        """The three HatiData Roles (OneLogin sends role names in the groups parameter)."""
        return (RoleMappingPreset(
            key="hatidata-roles",
            title="OneLogin Roles HatiData Admins / Developers / Viewers",
            identifier_kind="name",
            mappings=tuple(PresetMapping(label, role, priority, label)
                           for priority, (label, role) in enumerate(CANONICAL_GROUPS, start=1)),
            description="OneLogin Roles named like this, sent through the groups parameter (User Roles).",
        ),)
