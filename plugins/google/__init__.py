"""Google Workspace: SAML (uploaded metadata file) or OIDC, Google API directory sync, groups sent by name."""

from __future__ import annotations

from hatidata_auth.idp import (
    AttributeRequirement,
    ConsoleField,
    ConsoleStep,
    IdPPlugin,
    PluginWarning,
    SamlMetadata,
    ValidationResult,
    host_of,
)

ENTITY_PREFIX = "https://accounts.google.com/o/saml2?idpid="
DISCOVERY_URL = "https://accounts.google.com/.well-known/openid-configuration"


class GooglePlugin(IdPPlugin):
    """Google Workspace."""

    name = "google"
    display_name = "Google Workspace"
    connection_types = {"saml": "GoogleSAML", "oidc": "GoogleOIDC"}
    directory_type = "gsuite directory"
    supports_oidc = True
    supports_scim = False
    oidc_group_roles = False
    metadata_source = "xml"
    group_identifier_kind = "name"
    idp_hosts = (r"^accounts\.google\.com$",)
    setup_guide = True
    example_entity_id = "https://accounts.google.com/o/saml2?idpid=C01234567"
    example_sso_url = "https://accounts.google.com/o/saml2/idp?idpid=C01234567"
    metadata_help = ("Google Admin → Apps → Web and mobile apps → your SAML app → Download Metadata. Google "
                     "offers no metadata URL: upload the file.")
    oidc_discovery_example = DISCOVERY_URL
    prerequisites = (
        "A Google Workspace super administrator account.",
        "Google groups named HatiData Admins, HatiData Developers and HatiData Viewers.",
        "Time: turning on User access can take up to 24 hours to reach everyone.",
    )
    saml_console_steps = (
        ConsoleStep("Google Admin → Apps → Web and mobile apps → Add App → Add custom SAML app; name it → "
                    "Continue."),
        ConsoleStep("Download Metadata (keep the file for the “Connect to WorkOS” step) → Continue."),
        ConsoleStep("Service provider details:", (
            ConsoleField("ACS URL", "{acs_url}", copy=True),
            ConsoleField("Entity ID", "{sp_entity_id}", copy=True),
            ConsoleField("Name ID format / Name ID", "EMAIL / Basic Information > Primary email"),
        )),
        ConsoleStep("Attribute mapping:", (
            ConsoleField("Primary email", "email"), ConsoleField("First name", "firstName"),
            ConsoleField("Last name", "lastName"),
        )),
        ConsoleStep("Group membership: add the three HatiData groups; App attribute:", (
            ConsoleField("App attribute", "groups", copy=True),
        )),
        ConsoleStep("User access → ON for the organizational units (or groups) that use HatiData."),
    )
    rotation_steps = (
        ConsoleStep("Google Admin console → Apps → Web and mobile apps → your HatiData app → Service provider "
                    "details → Manage certificates → Add certificate."),
        ConsoleStep("Download the new metadata (Download metadata → IdP metadata) and upload it to this page."),
        ConsoleStep("After this page trusts both certificates: select the new certificate for the app and save."),
    )
    oidc_console_steps = (
        ConsoleStep("Google Cloud Console → your project → Google Auth Platform → Get started; Audience Internal."),
        ConsoleStep("Clients → Create client → Web application; Authorized redirect URIs:", (
            ConsoleField("Authorized redirect URI", "{redirect_uri}", copy=True),
        )),
        ConsoleStep("Copy the Client ID and Client Secret from the “OAuth client created” dialog."),
    )
    directory_steps = (
        ConsoleStep("Generate the Directory Sync Admin Portal link below and open it as a Google super admin."),
        ConsoleStep("Choose Google and sign in with administrator credentials to grant WorkOS read access."),
        ConsoleStep("Optionally choose which groups to sync: then only members of those groups are synced."),
        ConsoleStep("Google directories sync about every 30 minutes."),
    )
    saml_attributes = (
        AttributeRequirement("idp_id", "", advice="Google cannot send a user id: WorkOS uses the NameID. Set "
                                                  "Name ID format EMAIL with Primary email."),
        AttributeRequirement("email", "email", advice="Attribute mapping: Primary email → email."),
        AttributeRequirement("first_name", "firstName", advice="Attribute mapping: First name → firstName."),
        AttributeRequirement("last_name", "lastName", advice="Attribute mapping: Last name → lastName."),
        AttributeRequirement("groups", "groups", required=False,
                             advice="Group membership: add the groups and set the app attribute to groups."),
    )
    oidc_claims = (
        AttributeRequirement("idp_id", "sub", advice="Google always sends sub."),
        AttributeRequirement("email", "email", advice="Request the email scope."),
        AttributeRequirement("first_name", "given_name", advice="Request the profile scope."),
        AttributeRequirement("last_name", "family_name", advice="Request the profile scope."),
    )
    advice = {
        "no_groups": "No groups arrived: add the groups under Group membership (App attribute groups). Google "
                     "sends at most 75 groups; a renamed group must be re-entered there.",
        "unmapped_groups": "Google sends group names: map the exact names (a renamed group changes its name).",
        "no_role": "The user is in none of the mapped groups: add them to a HatiData group in Google.",
        "oidc_no_groups": "Google OIDC sends no groups: roles come from the directory sync or the default role.",
    }
    sign_in_fixes = {
        "not_assigned_to_app": "In the Google Admin console: Apps → Web and mobile apps → HatiData → User access: "
                               "turn the app ON for the user's organizational unit or group (allow up to 24 hours).",
        "certificate_expired": "In the Google Admin console: Apps → Web and mobile apps → HatiData → Service "
                               "provider details → Manage certificates → Add certificate, then upload the new "
                               "IdP metadata file in the wizard.",
        "idp_error": "The Google Admin console's SAML log events (Reporting → Audit and investigation → SAML log "
                     "events) name the refusal.",
    }
    known_traps = (
        PluginWarning("google-75-groups", "Google sends at most 75 group names in the SAML response, and a "
                      "renamed group must be re-entered under Group membership.", step="console"),
        PluginWarning("google-propagation", "User access can take up to 24 hours to apply; the test sign-in "
                      "fails with “app not configured for user” until then.", step="test_login"),
        PluginWarning("google-oidc-roles", "Google OIDC connections cannot carry groups: with OIDC, roles come "
                      "from directory sync or the default role.", step="role_mapping"),
    )

    def check_metadata(self, metadata: SamlMetadata) -> str | None:
        """Google's entity ID is ``https://accounts.google.com/o/saml2?idpid=…`` and SSO runs on accounts.google."""
        if not metadata.entity_id.startswith(ENTITY_PREFIX):
            return (f"This metadata is for {metadata.entity_id}, not Google Workspace (its entity ID starts with "
                    f"{ENTITY_PREFIX}).")
        if not any(host_of(url) == "accounts.google.com" for url in metadata.sso_urls):
            return "The metadata's sign-in URL is not on accounts.google.com."
        return None

    def validate_oidc_discovery_url(self, url: str) -> ValidationResult:
        """Google has one discovery URL for every project."""
        if url.strip() != DISCOVERY_URL:
            return ValidationResult.failure("discovery_endpoint", f"Google's discovery URL is {DISCOVERY_URL}.")
        return ValidationResult.success(DISCOVERY_URL)
