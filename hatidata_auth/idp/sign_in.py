"""Why a sign-in failed, as the plugin API names it: the typed reasons and the generic fix for each.

The core classifies every failed SSO sign-in into one of :data:`SIGN_IN_REASONS`; a plugin says how to fix it
in its IdP's own words (:meth:`IdPPlugin.sign_in_fix`, from its ``sign_in_fixes``). The reasons live here, in the
plugin API, because a plugin must be able to name them without importing the core.
"""

from __future__ import annotations

SIGN_IN_REASONS: tuple[str, ...] = (
    "not_assigned_to_app",
    "missing_attribute",
    "email_outside_domains",
    "connection_inactive",
    "certificate_expired",
    "not_a_member",
    "no_role",
    "policy_refused",
    "idp_error",
    "unknown",
)
"""Every reason a failed sign-in is stored with (``docs/plugins.md`` and ``docs/api.md`` describe each)."""

GENERIC_FIXES: dict[str, str] = {
    "not_assigned_to_app": "Assign the user (or a group they are in) to the HatiData application in your identity "
                           "provider.",
    "missing_attribute": "Add the missing attribute to the HatiData application's attribute statements (claims) in "
                         "your identity provider.",
    "email_outside_domains": "The email is on a domain this organization has not verified: sign in with an address "
                             "on one of the organization's domains, or add and verify the domain.",
    "connection_inactive": "The SSO connection is not active: finish the setup in the SSO wizard or the Admin "
                           "Portal and activate it.",
    "certificate_expired": "The identity provider's SAML signing certificate has expired: create a new one in your "
                           "identity provider and upload the new metadata in the SSO wizard.",
    "not_a_member": "The person's HatiData membership is suspended or was removed: reactivate it in the directory "
                    "or ask an admin to add them.",
    "no_role": "No role would be granted: add the person to a mapped group, or set a default role.",
    "policy_refused": "The organization's sign-in policy refused this sign-in (e.g. SSO is enforced): sign in "
                      "through the organization's own SSO connection.",
    "idp_error": "The identity provider refused the sign-in: its own sign-in log names the cause.",
    "unknown": "The cause is unknown: the error received is shown; check your identity provider's sign-in log.",
}
"""The fix for each reason when a plugin has none of its own."""
