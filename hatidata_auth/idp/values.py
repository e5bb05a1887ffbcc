"""Frozen values that cross the plugin boundary: what a plugin declares and what the core hands back."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from workos.types.sso import ConnectionsConnectionType

#: The step kinds the wizard engine knows how to run, in their usual order.
STEP_KINDS = (
    "prerequisites", "console", "attributes", "metadata", "role_mapping", "test_login", "directory", "activate",
)
#: Identifier kinds a role mapping can key on (the ``RoleMapping.identifier_kind`` column).
IDENTIFIER_KINDS = ("name", "object_id", "directory_group_id")
PROTOCOLS = ("saml", "oidc")
#: Placeholders a console instruction may use; the wizard fills them from the connection being set up.
PLACEHOLDERS = ("acs_url", "acs_url_regex", "sp_entity_id", "redirect_uri")


def workos_connection_types(protocol: str) -> frozenset[str]:
    """WorkOS's connection types of one of :data:`PROTOCOLS` (``"saml"`` → ``OktaSAML``, ``GenericSAML``, …;
    ``"oidc"`` → ``OktaOIDC``, ``GenericOIDC``, …), from the SDK's ``ConnectionsConnectionType``: a type WorkOS adds
    comes with the SDK. Empty for any other protocol."""
    if protocol not in PROTOCOLS:
        return frozenset()
    return frozenset(t.value for t in ConnectionsConnectionType if t.value.lower().endswith(protocol))


@dataclass(frozen=True, slots=True)
class ConsoleField:
    """One field the admin fills in the IdP console: its label there and the value to enter.

    ``value`` may contain ``{acs_url}``, ``{sp_entity_id}`` or ``{redirect_uri}``; ``copy`` adds a copy button.
    """

    label: str
    value: str
    copy: bool = False


@dataclass(frozen=True, slots=True)
class ConsoleStep:
    """One instruction in the IdP's admin console, with the fields it involves."""

    action: str
    fields: tuple[ConsoleField, ...] = ()


@dataclass(frozen=True, slots=True)
class WizardStep:
    """A step of a setup wizard.

    ``key`` is the URL slug, ``kind`` one of :data:`STEP_KINDS` (the engine's handler), ``template`` an optional
    override (a plugin's own must live under ``idp_<name>/``).
    """

    key: str
    title: str
    kind: str
    template: str | None = None
    help: str = ""


@dataclass(frozen=True, slots=True)
class AttributeRequirement:
    """A profile field the IdP must send, the IdP-side attribute that carries it, and advice when it is missing."""

    field: str
    idp_attribute: str
    required: bool = True
    advice: str = ""


@dataclass(frozen=True, slots=True)
class AttributeMap:
    """IdP attribute (SAML) or claim (OIDC) names for the WorkOS profile fields, sent on connection creation."""

    idp_id: str | None = None
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    groups: str | None = None

    def as_dict(self) -> dict[str, str]:
        """The non-empty entries, keyed by WorkOS field name."""
        return {k: v for k in ("idp_id", "email", "first_name", "last_name", "groups")
                if (v := getattr(self, k))}


@dataclass(frozen=True, slots=True)
class PresetMapping:
    """One row of a preset: a group (by the identifier the IdP sends) mapped to a role.

    ``identifier`` is ``None`` when the admin must supply it in the wizard (Entra object-id GUIDs).
    """

    label: str
    role: str
    priority: int
    identifier: str | None = None


@dataclass(frozen=True, slots=True)
class RoleMappingPreset:
    """A ready-made group -> role mapping set for one IdP; the wizard pre-fills it and the admin may edit it."""

    key: str
    title: str
    identifier_kind: str
    mappings: tuple[PresetMapping, ...]
    description: str = ""


@dataclass(frozen=True, slots=True)
class PluginWarning:
    """A known trap of the IdP, shown on the wizard step it concerns (``step`` is a step kind or ``None``: all)."""

    key: str
    message: str
    step: str | None = None
    severity: str = "warning"


@dataclass(frozen=True, slots=True)
class FieldError:
    """A validation problem attached to one form field."""

    field: str
    message: str


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """A signing certificate found in SAML metadata."""

    subject: str
    not_before: datetime
    not_after: datetime
    sha256_fingerprint: str
    pem: str


@dataclass(frozen=True, slots=True)
class SamlMetadata:
    """What the wizard keeps from an IdP's SAML metadata document."""

    entity_id: str
    sso_urls: tuple[str, ...]
    certificates: tuple[CertificateInfo, ...]

    @property
    def earliest_expiry(self) -> datetime | None:
        """When the first signing certificate expires."""
        return min((c.not_after for c in self.certificates), default=None)


@dataclass(frozen=True, slots=True)
class ValidationResult:
    """The outcome of validating admin input: errors per field, warnings, and the cleaned value."""

    errors: tuple[FieldError, ...] = ()
    warnings: tuple[str, ...] = ()
    value: Any = None

    @property
    def ok(self) -> bool:
        """Whether the input is acceptable."""
        return not self.errors

    @classmethod
    def success(cls, value: Any = None, warnings: tuple[str, ...] = ()) -> ValidationResult:
        """An accepted input."""
        return cls(value=value, warnings=warnings)

    @classmethod
    def failure(cls, field: str, message: str) -> ValidationResult:
        """A rejected input, with one message for one field."""
        return cls(errors=(FieldError(field, message),))

    def messages(self) -> dict[str, str]:
        """The first error per field."""
        out: dict[str, str] = {}
        for error in self.errors:
            out.setdefault(error.field, error.message)
        return out


@dataclass(frozen=True, slots=True)
class NormalizedProfile:
    """An SSO profile reduced to what HatiData needs, whatever shape the IdP sent it in.

    ``present`` names the WorkOS fields that arrived non-empty; ``groups_overage`` is set when the IdP sent a
    pointer to the groups instead of the groups (Entra's ``groups.link``).
    """

    idp_id: str | None
    email: str | None
    first_name: str | None
    last_name: str | None
    groups: tuple[str, ...]
    connection_type: str | None = None
    connection_id: str | None = None
    present: frozenset[str] = frozenset()
    groups_overage: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SetupStatus:
    """What the core knows about an organization's setup, handed to :meth:`IdPPlugin.health_checks`."""

    now: datetime
    connection_id: str | None = None
    connection_state: str | None = None
    directory_id: str | None = None
    directory_state: str | None = None
    certificate_not_after: datetime | None = None
    last_test_login_ok: bool | None = None


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """One line of a plugin's health report: ``status`` is ``ok``, ``warn`` or ``fail``."""

    key: str
    label: str
    status: str
    message: str = ""
