"""Okta: SAML (metadata URL) or OIDC, SCIM directory sync, groups sent by name."""

from __future__ import annotations

import re

from hatidata_auth.idp import (
    AttributeRequirement,
    ConsoleField,
    ConsoleStep,
    IdPPlugin,
    PluginWarning,
    ValidationResult,
    check_https_url,
    wrong_idp,
)

OKTA_HOST = re.compile(r"^[a-z0-9-]+\.(okta|oktapreview|okta-emea)\.com$")
METADATA_PATH = re.compile(r"^/app/[A-Za-z0-9]+/sso/saml/metadata/?$")


class OktaPlugin(IdPPlugin):
    """Okta Workforce Identity."""

    name = "okta"
    display_name = "Okta"
    connection_types = {"saml": "OktaSAML", "oidc": "OktaOIDC"}
    directory_type = "okta scim v2.0"
    supports_oidc = True
    supports_scim = True
    metadata_source = "url"
    group_identifier_kind = "name"
    idp_hosts = (r"(^|\.)(okta|oktapreview|okta-emea)\.com$",)
    setup_guide = True
    example_metadata_url = "https://dev-2578259.okta.com/app/exkaell8gidiiUWrg5d7/sso/saml/metadata"
    example_entity_id = "http://www.okta.com/exkaell8gidiiUWrg5d7"
    example_sso_url = "https://dev-2578259.okta.com/app/hatidata/exkaell8gidiiUWrg5d7/sso/saml"
    metadata_help = ("Okta Admin Console → Applications → your app → Sign On tab → Actions menu of the active "
                     "certificate → View IdP Metadata; copy the URL of the page that opens.")
    oidc_discovery_example = "https://your-org.okta.com/.well-known/openid-configuration"
    prerequisites = (
        "An Okta administrator account that can create app integrations.",
        "Okta groups named HatiData Admins, HatiData Developers and HatiData Viewers (or your own names).",
    )
    saml_console_steps = (
        ConsoleStep("Admin Console → Applications → Create App Integration → sign-in method SAML 2.0 → Next; "
                    "name the app (e.g. HatiData) → Next."),
        ConsoleStep("On “Configure SAML”, fill in:", (
            ConsoleField("Single sign-on URL", "{acs_url}", copy=True),
            ConsoleField("Audience URI (SP Entity ID)", "{sp_entity_id}", copy=True),
            ConsoleField("Name ID format", "Unspecified (Okta's default)"),
        )),
        ConsoleStep("Attribute Statements → Add Another, one per row:", (
            ConsoleField("id", "user.id"), ConsoleField("email", "user.email"),
            ConsoleField("firstName", "user.firstName"), ConsoleField("lastName", "user.lastName"),
        )),
        ConsoleStep("Group Attribute Statements (under “Show legacy configuration” in newer orgs):", (
            ConsoleField("Name", "groups", copy=True),
            ConsoleField("Filter", "Starts with: HatiData ", copy=False),
        )),
        ConsoleStep("Feedback: “I'm an Okta customer adding an internal app” → Finish."),
        ConsoleStep("Assignments tab → Assign to People / Assign to Groups: only assigned users can sign in."),
    )
    rotation_steps = (
        ConsoleStep("Admin Console → Applications → your HatiData app → Sign On tab → SAML Signing Certificates → "
                    "Generate new certificate (the current one stays active)."),
        ConsoleStep("On the new certificate's row: Actions → View IdP metadata; save it as a file or copy its URL, "
                    "and give it to this page."),
        ConsoleStep("After this page trusts both certificates: Actions → Activate on the new certificate."),
    )
    oidc_console_steps = (
        ConsoleStep("Applications → Create App Integration → OIDC - OpenID Connect → Web Application."),
        ConsoleStep("Sign-in redirect URIs → Add URI:",
                    (ConsoleField("Sign-in redirect URI", "{redirect_uri}", copy=True),)),
        ConsoleStep("Assignments: “Limit access to selected groups”."),
        ConsoleStep("Sign On tab → Token Claims (Show legacy configuration): Groups claim type Filter, "
                    "claim name groups, filter Starts with “HatiData ”."),
        ConsoleStep("General tab: copy the Client ID and Client secret for the next steps."),
    )
    directory_steps = (
        ConsoleStep("Applications → Browse App Catalog → “SCIM 2.0 Test App (OAuth Bearer Token)” → Add Integration."),
        ConsoleStep("Provisioning tab → Configure API Integration → Enable API Integration; SCIM 2.0 Base URL = "
                    "the WorkOS endpoint, OAuth Bearer Token = the WorkOS token (both from the Admin Portal link "
                    "below) → Test API Credentials → Save."),
        ConsoleStep("Provisioning → To App: enable Create Users, Update User Attributes, Deactivate Users."),
        ConsoleStep("Assignments → Assign to People (prefer direct assignment; see the warning)."),
        ConsoleStep("Push Groups → find the HatiData groups → Push Immediately → Save. Use separate groups for "
                    "assignment and push: Okta does not support one group for both."),
    )
    saml_attributes = (
        AttributeRequirement("idp_id", "id", advice="Add the attribute statement id → user.id."),
        AttributeRequirement("email", "email", advice="Add the attribute statement email → user.email."),
        AttributeRequirement("first_name", "firstName", advice="Add firstName → user.firstName."),
        AttributeRequirement("last_name", "lastName", advice="Add lastName → user.lastName."),
        AttributeRequirement("groups", "groups", required=False,
                             advice="Add a Group Attribute Statement named groups (filter Starts with "
                                    "“HatiData ”) and assign the user's group to the app."),
    )
    oidc_claims = (
        AttributeRequirement("idp_id", "sub", advice="Okta always sends sub; check the app is OIDC."),
        AttributeRequirement("email", "email", advice="Grant the email scope to the app."),
        AttributeRequirement("first_name", "given_name", advice="Grant the profile scope."),
        AttributeRequirement("last_name", "family_name", advice="Grant the profile scope."),
        AttributeRequirement("groups", "groups", required=False,
                             advice="Sign On tab → Groups claim type Filter, claim name groups."),
    )
    advice = {
        "no_groups": "No groups arrived: add the Group Attribute Statement groups, and check its filter matches "
                     "the user's groups.",
        "unmapped_groups": "Okta sends group names: map the exact, case-sensitive names (Everyone is Okta's "
                           "built-in group; do not map it).",
        "no_role": "The user is in none of the mapped groups: add them to a HatiData group in Okta.",
    }
    sign_in_fixes = {
        "not_assigned_to_app": "Assign the user to the HatiData app in Okta: Applications → Applications → HatiData → "
                               "Assignments → Assign → Assign to People (or to one of their Groups).",
        "certificate_expired": "In Okta: Applications → HatiData → Sign On → SAML Signing Certificates → Generate "
                               "new certificate and activate it, then give the wizard the new metadata URL.",
        "idp_error": "Okta's System Log (Reports → System Log), filtered on the user and the HatiData app, names "
                     "why Okta refused.",
    }
    known_traps = (
        PluginWarning("okta-everyone", "A group filter of Matches regex “.*” also sends Okta's built-in "
                      "Everyone group (every user is in it). Use Starts with “HatiData ” instead, and never map "
                      "Everyone to a role.", step="console"),
        PluginWarning("okta-everyone-mapping", "Never map Everyone: it would grant the role to every Okta user.",
                      step="role_mapping"),
        PluginWarning("okta-group-removal", "A user assigned to the SCIM app through a group and then removed "
                      "from that group produces no group-removal event. Assign users directly and push groups.",
                      step="directory"),
    )

    def validate_metadata_url(self, url: str) -> ValidationResult:
        """Accept ``https://<org>.okta.com/app/<key>/sso/saml/metadata`` (custom domains with a warning)."""
        checked = check_https_url("metadata_url", url)
        if isinstance(checked, ValidationResult):
            return checked
        host, path = checked
        other = wrong_idp("metadata_url", host, self.display_name)
        if other:
            return other
        if not METADATA_PATH.match(path):
            return ValidationResult.failure(
                "metadata_url", "An Okta metadata URL looks like https://your-org.okta.com/app/exk…/sso/saml/"
                                "metadata (Sign On tab → View IdP Metadata).")
        warnings = () if OKTA_HOST.match(host) else (
            f"{host} is not an okta.com host; accepted as an Okta custom domain.",)
        return ValidationResult.success(url.strip(), warnings)

