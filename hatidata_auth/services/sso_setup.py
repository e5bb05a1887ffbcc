"""SSO setup through WorkOS: create or update the connection, test a sign-in, Admin Portal links, activation.

The OIDC client secret is passed straight to WorkOS and is never stored, audited or logged here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session
from workos.sso import (
    CreateProtocolOptionsOIDC,
    CreateProtocolOptionsSAML,
    PatchProtocolOptionsOIDC,
    PatchProtocolOptionsSAML,
)
from workos.sso.models import (
    CreateConnectionAttributeMaps,
    CreateConnectionOIDCOptions,
    CreateConnectionSAMLOptions,
    CreateConnectionStandardAttributes,
    PatchConnectionAttributeMaps,
    PatchConnectionOIDCOptions,
    PatchConnectionSAMLOptions,
    PatchConnectionStandardAttributes,
)

from ..causes import Cause
from ..errors import AppError
from ..idp import IdPPlugin, NormalizedProfile, SamlMetadata
from ..models import Organization
from ..unit_of_work import undo_unless_committed
from ..workos import WorkOSClient, WorkOSFailure, WorkOSNotFound, translate_errors
from . import audit, role_mapping, sso_enforcement

PORTAL_INTENTS = ("sso", "dsync", "domain_verification")


class SetupError(AppError):
    """WorkOS refused a setup call; the message is safe to show to the admin."""

    status = 502
    code = "sso_setup_failed"


@dataclass(frozen=True, slots=True)
class SpValues:
    """The WorkOS (service provider) values the admin enters in the IdP console."""

    acs_url: str
    sp_entity_id: str
    redirect_uri: str

    @property
    def acs_url_regex(self) -> str:
        """The ACS URL as a regular expression (OneLogin's "ACS (Consumer) URL Validator")."""
        return re.escape(self.acs_url).replace("/", r"\/")

    def as_dict(self) -> dict[str, str]:
        """The placeholders console instructions may use."""
        return {"acs_url": self.acs_url, "sp_entity_id": self.sp_entity_id, "redirect_uri": self.redirect_uri,
                "acs_url_regex": self.acs_url_regex}


def sp_values(sp_base_url: str, key: str) -> SpValues:
    """Build the ACS URL, SP Entity ID and OIDC redirect URI for one connection key."""
    base = sp_base_url.rstrip("/")
    return SpValues(f"{base}/sso/saml/acs/{key}", f"{base}/{key}", f"{base}/sso/oidc/callback/{key}")


@dataclass(frozen=True, slots=True)
class OidcSettings:
    """What the admin gives for an OIDC connection; ``client_secret`` is only ever sent to WorkOS."""

    discovery_endpoint: str
    client_id: str
    client_secret: str = field(repr=False, default="")


@dataclass(frozen=True, slots=True)
class ConnectionResult:
    """The WorkOS connection after a create or update."""

    connection_id: str
    connection_type: str
    state: str
    created: bool


def _value(value: Any) -> str:
    return str(getattr(value, "value", value))


def save_connection(session: Session, client: WorkOSClient, organization: Organization, plugin: IdPPlugin,
                    protocol: str, sp: SpValues, cause: Cause, *,
                    existing_id: str | None = None, metadata_url: str | None = None,
                    metadata: SamlMetadata | None = None, oidc: OidcSettings | None = None) -> ConnectionResult:
    """Create the organization's WorkOS connection for *plugin*, or update *existing_id*; audited. A connection
    it creates is deleted again if the caller's transaction ends uncommitted (``unit_of_work``)."""
    if not organization.workos_organization_id:
        raise SetupError("This organization is not linked to a WorkOS organization.", status=409)
    connection_type = plugin.connection_types[protocol]
    attrs = plugin.attribute_map(protocol).as_dict()
    try:
        with translate_errors():
            if existing_id:
                conn = client.sso.update_connection(
                    existing_id,
                    attribute_maps=PatchConnectionAttributeMaps(
                        standard_attributes=PatchConnectionStandardAttributes(**attrs)),
                    protocol_options=_patch_options(protocol, sp, metadata_url, metadata, oidc),
                )
            else:
                conn = client.sso.create_connection(
                    organization_id=organization.workos_organization_id,
                    name=f"{organization.name} {plugin.display_name}",
                    connection_type=connection_type,
                    attribute_maps=CreateConnectionAttributeMaps(
                        standard_attributes=CreateConnectionStandardAttributes(**attrs)),
                    protocol_options=_create_options(protocol, sp, metadata_url, metadata, oidc),
                )
    except WorkOSFailure as exc:  # WorkOS's message; never the secret
        raise SetupError(f"WorkOS refused the connection: {exc.message}") from exc
    result = ConnectionResult(conn.id, _value(conn.connection_type), _value(conn.state), existing_id is None)
    if result.created:  # only this transaction's rows name it: without them, a retry would create another
        undo_unless_committed(session, f"the connection {conn.id} created for {organization.id}",
                              lambda: _delete_connection(client, conn.id))
    # A new connection is not the organization's sign-in connection until a test sign-in through it passed and
    # the admin activated it (activate); editing the one in use keeps our copy of its state current.
    if existing_id and existing_id == organization.connection_id:
        organization.connection_type = result.connection_type
        organization.connection_state = result.state
    details: dict[str, Any] = {"plugin": plugin.name, "protocol": protocol, "connection_type": connection_type,
                               "metadata": "url" if metadata_url else "xml" if metadata else "oidc"}
    if metadata_url:
        details["metadata_url"] = metadata_url
    if metadata:
        details.update(idp_entity_id=metadata.entity_id,
                       certificates=[c.sha256_fingerprint for c in metadata.certificates])
    if oidc:
        details.update(discovery_endpoint=oidc.discovery_endpoint, client_id=oidc.client_id)
    audit.record(session, action="sso.connection.created" if result.created else "sso.connection.updated",
                 cause=cause, organization_id=organization.id, target_type="connection",
                 target_id=result.connection_id, details=details)
    return result


def _delete_connection(client: WorkOSClient, connection_id: str) -> None:
    try:
        with translate_errors():
            client.sso.delete_connection(connection_id)
    except WorkOSNotFound:
        pass  # already gone


def _oidc_fields(sp: SpValues, oidc: OidcSettings | None) -> dict[str, Any]:
    if oidc is None:
        raise SetupError("OIDC needs a discovery URL, client ID and secret.", status=400)
    return {"discovery_endpoint": oidc.discovery_endpoint, "client_id": oidc.client_id,
            "client_secret": oidc.client_secret or None, "redirect_uri": sp.redirect_uri}


def _saml_fields(sp: SpValues, metadata_url: str | None, metadata: SamlMetadata | None) -> dict[str, Any]:
    # An uploaded metadata file is sent as its parts (entity ID, sign-in URL, signing certificates).
    return {"idp_metadata_url": metadata_url, "acs_url": sp.acs_url, "sp_entity_id": sp.sp_entity_id,
            "idp_entity_id": metadata.entity_id if metadata else None,
            "idp_sso_url": metadata.sso_urls[0] if metadata else None}


def _create_options(protocol: str, sp: SpValues, metadata_url: str | None, metadata: SamlMetadata | None,
                    oidc: OidcSettings | None) -> CreateProtocolOptionsSAML | CreateProtocolOptionsOIDC:
    if protocol == "oidc":
        return CreateProtocolOptionsOIDC(CreateConnectionOIDCOptions(**_oidc_fields(sp, oidc)))
    certs = [c.pem for c in metadata.certificates] if metadata else None
    return CreateProtocolOptionsSAML(CreateConnectionSAMLOptions(**_saml_fields(sp, metadata_url, metadata),
                                                                 idp_signing_certs=certs))


def _patch_options(protocol: str, sp: SpValues, metadata_url: str | None, metadata: SamlMetadata | None,
                   oidc: OidcSettings | None) -> PatchProtocolOptionsSAML | PatchProtocolOptionsOIDC:
    # Signing certificates go on create only: the emulator has no endpoint to replace them yet.
    if protocol == "oidc":
        return PatchProtocolOptionsOIDC(PatchConnectionOIDCOptions(**_oidc_fields(sp, oidc)))
    return PatchProtocolOptionsSAML(PatchConnectionSAMLOptions(**_saml_fields(sp, metadata_url, metadata)))


# --- test login --------------------------------------------------------------------------------------------


def build_test_login_url(client: WorkOSClient, connection_id: str, redirect_uri: str, state: str,
                   login_hint: str | None = None) -> str:
    """The WorkOS authorization URL that signs a test user in through *connection_id*."""
    return client.sso.get_authorization_url(redirect_uri=redirect_uri, connection=connection_id, state=state,
                                            login_hint=login_hint or None)


@dataclass(frozen=True, slots=True)
class AttributeCheck:
    """Whether one expected attribute arrived, and what to do if not."""

    field: str
    idp_attribute: str
    required: bool
    present: bool
    advice: str


@dataclass(frozen=True, slots=True)
class LoginCheckResult:
    """What a test sign-in received and what it means."""

    profile: NormalizedProfile
    checks: tuple[AttributeCheck, ...]
    role: str | None
    role_source: str
    matched_group: str | None
    problems: tuple[tuple[str, str], ...]

    @property
    def ok(self) -> bool:
        """No required attribute is missing and a role was decided."""
        return all(c.present or not c.required for c in self.checks) and self.role is not None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able summary kept in the wizard progress."""
        p = self.profile
        return {
            "email": p.email, "idp_id": p.idp_id, "connection_id": p.connection_id, "first_name": p.first_name,
            "last_name": p.last_name,
            "groups": list(p.groups), "connection_type": p.connection_type, "groups_overage": p.groups_overage,
            "checks": [{"field": c.field, "idp_attribute": c.idp_attribute, "required": c.required,
                        "present": c.present, "advice": c.advice} for c in self.checks],
            "role": self.role, "role_source": self.role_source, "matched_group": self.matched_group,
            "problems": [{"key": k, "advice": a} for k, a in self.problems], "ok": self.ok,
        }


def evaluate_profile(session: Session, organization: Organization, plugin: IdPPlugin, protocol: str,
                     raw_profile: dict[str, Any]) -> LoginCheckResult:
    """Check a profile against the plugin's expectations and resolve its role with the saved mappings."""
    profile = plugin.normalize_profile(raw_profile)
    checks = tuple(AttributeCheck(r.field, r.idp_attribute or "NameID", r.required, r.field in profile.present,
                                  r.advice) for r in plugin.attribute_requirements(protocol))
    problems: list[tuple[str, str]] = [(f"missing:{c.field}", c.advice) for c in checks if not c.present]
    groups_drive_roles = plugin.group_roles_supported(protocol)
    if profile.groups_overage:
        problems.append(("groups_overage", plugin.advice.get("groups_overage", "The IdP sent too many groups.")))
    elif not profile.groups and groups_drive_roles:
        problems.append(("no_groups", plugin.advice.get("no_groups", "The IdP sent no groups.")))
    elif not groups_drive_roles:
        problems.append(("oidc_no_groups", plugin.advice.get(
            "oidc_no_groups", "This connection carries no groups: roles come from the directory or the default.")))
    mappings = role_mapping.list_mappings(session, organization.id)
    decision = role_mapping.resolve_role_from_profile_groups(
        profile.groups if groups_drive_roles else (), mappings, organization.default_role)
    if profile.groups and groups_drive_roles and decision.source != "mapping":
        problems.append(("unmapped_groups", plugin.advice.get("unmapped_groups", "No sent group is mapped.")))
    if decision.role is None:
        problems.append(("no_role", plugin.advice.get("no_role", "No role would be granted.")))
    matched = None
    if decision.group is not None:
        matched = decision.group.name or decision.group.idp_id
    return LoginCheckResult(profile, checks, decision.role, decision.source, matched, tuple(problems))


def finish_test_login(session: Session, client: WorkOSClient, organization: Organization, plugin: IdPPlugin,
                      protocol: str, code: str, cause: Cause, *, connection_id: str) -> LoginCheckResult:
    """Exchange the test sign-in's code for its profile, evaluate it and audit the outcome (nothing else).

    The sign-in must have come through *connection_id*, the connection being set up.
    """
    try:
        with translate_errors():
            response = client.sso.get_profile_and_token(code=code)
    except WorkOSFailure as exc:
        raise SetupError(f"WorkOS refused the test sign-in: {exc.message}") from exc
    raw = response.profile.to_dict()
    if raw.get("organization_id") and raw["organization_id"] != organization.workos_organization_id:
        raise SetupError("The test sign-in came from another organization.", status=403)
    if raw.get("connection_id") != connection_id:
        raise SetupError("The test sign-in came through another connection, not the one being set up; start it "
                         "again.", status=409)
    result = evaluate_profile(session, organization, plugin, protocol, raw)
    audit.record(session, action="sso.test_login", cause=cause, organization_id=organization.id,
                 outcome="success" if result.ok else "failure", target_type="connection",
                 target_id=raw.get("connection_id"),
                 details={"plugin": plugin.name, "email": result.profile.email, "groups": list(result.profile.groups),
                          "role": result.role, "problems": [k for k, _ in result.problems]})
    return result


# --- Admin Portal and activation ----------------------------------------------------------------------------


def portal_link(session: Session, client: WorkOSClient, organization: Organization, intent: str, return_url: str,
                cause: Cause) -> str:
    """A WorkOS Admin Portal link (``sso`` or ``dsync``) for the customer's IT team; audited."""
    if intent not in PORTAL_INTENTS:
        raise SetupError(f"intent must be one of {', '.join(PORTAL_INTENTS)}", status=400)
    if not organization.workos_organization_id:
        raise SetupError("This organization is not linked to a WorkOS organization.", status=409)
    try:
        with translate_errors():
            link = client.admin_portal.generate_link(organization=organization.workos_organization_id,
                                                     intent=intent, return_url=return_url).link
    except WorkOSFailure as exc:
        raise SetupError(f"WorkOS refused the Admin Portal link: {exc.message}") from exc
    audit.record(session, action="sso.admin_portal_link", cause=cause, organization_id=organization.id,
                 target_type="organization", target_id=organization.id,
                 details={"intent": intent})
    return link


def activate(session: Session, client: WorkOSClient, organization: Organization, plugin: IdPPlugin,
             connection_id: str | None, tested: bool, enforce_sso: bool, cause: Cause) -> str:
    """Make *connection_id* the organization's SSO connection, optionally enforcing SSO for its domains; audited.

    *tested*: a test sign-in through that very connection succeeded. Without one the connection is refused: an
    untested connection never becomes the organization's sign-in connection.
    """
    if not connection_id:
        raise SetupError("Create the connection before activating it.", status=409)
    if not tested:
        raise SetupError("Run a test sign-in through this connection that succeeds before activating it.",
                         status=409)
    # SSO-only through a new connection (enforced, or SSO the only allowed method) needs a proof through it
    sso_enforcement.ensure_can_change(session, organization,
                                      {"sso_enforced": enforce_sso, "connection_id": connection_id})
    try:
        with translate_errors():
            conn = client.sso.get_connection(connection_id)
    except WorkOSFailure as exc:
        raise SetupError(f"WorkOS could not find the connection: {exc.message}") from exc
    state = _value(conn.state)
    if state != "active":
        raise SetupError(f"The WorkOS connection is {state}, not active: finish the IdP setup first.", status=409)
    replaced = organization.connection_id if organization.connection_id != connection_id else None
    organization.idp_plugin = plugin.name
    organization.connection_id = connection_id
    organization.connection_type = _value(conn.connection_type)
    organization.connection_state = state
    organization.sso_enforced = enforce_sso
    audit.record(session, action="sso.activated", cause=cause, organization_id=organization.id,
                 target_type="connection", target_id=connection_id,
                 details={"plugin": plugin.name, "enforce_sso": enforce_sso, "domains": list(organization.domains),
                          "replaced_connection_id": replaced})
    return state
