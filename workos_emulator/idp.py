"""What each identity provider sends: SSO profile attributes/groups and directory user attributes.

Okta / Google / OneLogin send group *display names* in SSO; Entra ID sends group *object-id GUIDs*.
"""

from __future__ import annotations

from typing import Any

from .store import Entity

ENTRA_TENANT_ID = "9c2f6d41-6a7e-4c1b-8b4e-3f0a5c7d2e19"

#: Directory group display name -> role slug (default role: viewer).
GROUP_ROLE_MAP = {"HatiData Admins": "admin", "HatiData Developers": "developer", "HatiData Viewers": "viewer"}
ROLE_PRIORITY = ["admin", "developer", "viewer"]


def role_for_groups(group_names: list[str], default: str = "viewer") -> str:
    """Highest-priority role mapped from the user's directory group names."""
    mapped = {GROUP_ROLE_MAP[n] for n in group_names if n in GROUP_ROLE_MAP}
    for slug in ROLE_PRIORITY:
        if slug in mapped:
            return slug
    return default


def profile_groups(connection_type: str, groups: list[Entity]) -> list[str]:
    """The ``groups`` claim an SSO profile carries for these directory groups."""
    if connection_type in ("AzureSAML", "EntraIdOIDC"):
        return [g["idp_id"] for g in groups]
    names = [g["name"] for g in groups]
    if connection_type in ("OktaSAML", "OktaOIDC"):
        names.append("Everyone")
    return names


def profile_raw_attributes(
    connection_type: str, idp_id: str, email: str, first: str | None, last: str | None, groups: list[str]
) -> dict[str, Any]:
    """Legacy ``raw_attributes`` keyed by the SAML attribute names each IdP is configured to send."""
    if connection_type == "AzureSAML":
        claims = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims"
        ms = "http://schemas.microsoft.com/identity/claims"
        return {
            f"{claims}/emailaddress": email,
            f"{claims}/givenname": first,
            f"{claims}/surname": last,
            f"{claims}/name": email,
            f"{ms}/objectidentifier": idp_id,
            f"{ms}/tenantid": ENTRA_TENANT_ID,
            f"{ms}/displayname": " ".join(x for x in (first, last) if x),
            f"{ms}/identityprovider": f"https://sts.windows.net/{ENTRA_TENANT_ID}/",
            "http://schemas.microsoft.com/claims/authnmethodsreferences": [
                "http://schemas.microsoft.com/ws/2008/06/identity/authenticationmethod/password"
            ],
            "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups": groups,
        }
    base: dict[str, Any] = {"email": email, "firstName": first, "lastName": last, "groups": groups}
    if connection_type in ("OktaSAML", "OneLoginSAML"):
        base["id"] = idp_id
    return base


def directory_raw_attributes(directory_type: str, user: Entity, group_names: list[str]) -> dict[str, Any]:
    """A SCIM (or Google Directory API) style ``raw_attributes`` document for a directory user."""
    email = user.get("email")
    first, last = user.get("first_name"), user.get("last_name")
    active = user.get("state", "active") == "active"
    if directory_type == "gsuite directory":
        return {
            "id": user["idp_id"],
            "kind": "admin#directory#user",
            "primaryEmail": email,
            "name": {"givenName": first, "familyName": last, "fullName": f"{first or ''} {last or ''}".strip()},
            "suspended": not active,
            "orgUnitPath": "/",
            "organizations": [{"title": user.get("job_title"), "department": user.get("_department"),
                               "primary": True}],
        }
    return {
        "schemas": [
            "urn:ietf:params:scim:schemas:core:2.0:User",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
        ],
        "externalId": user["idp_id"],
        "userName": user.get("username") or email,
        "name": {"givenName": first, "familyName": last},
        "displayName": f"{first or ''} {last or ''}".strip(),
        "emails": [{"primary": True, "type": "work", "value": email}],
        "title": user.get("job_title"),
        "active": active,
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
            "department": user.get("_department"),
        },
        "groups": [{"display": n} for n in group_names],
    }
