"""The IdP plugin contract: :class:`IdPPlugin`, the base class every identity-provider plugin subclasses.

A plugin is mostly data (class attributes) plus a few hooks with sensible defaults. The core instantiates each
enabled plugin once at start-up; a plugin holds no per-request or per-organization state.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import urlsplit

from flask import Blueprint

from .hosts import host_patterns_problem, register_hosts, wrong_idp
from .sign_in import GENERIC_FIXES, SIGN_IN_REASONS
from .validation import check_https_url, parse_saml_metadata
from .values import (
    IDENTIFIER_KINDS,
    PROTOCOLS,
    STEP_KINDS,
    AttributeMap,
    AttributeRequirement,
    ConsoleStep,
    HealthCheck,
    NormalizedProfile,
    PluginWarning,
    PresetMapping,
    RoleMappingPreset,
    SamlMetadata,
    SetupStatus,
    ValidationResult,
    WizardStep,
    workos_connection_types,
)

NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,29}[a-z0-9]")  # fullmatch ("$" takes a trailing newline); no "_" last
ROLES = ("admin", "developer", "viewer")
#: The groups every preset maps, highest priority first.
CANONICAL_GROUPS = (("HatiData Admins", "admin"), ("HatiData Developers", "developer"), ("HatiData Viewers", "viewer"))
PROFILE_FIELDS = ("idp_id", "email", "first_name", "last_name", "groups")


class PluginDefinitionError(TypeError):
    """A plugin class breaks the contract; raised when the class is defined or loaded."""


class IdPPlugin:
    """Base class of identity-provider plugins.

    Subclasses set the class-level metadata below and override hooks where the defaults do not fit. The
    capability flags are checked when the subclass is defined (:class:`PluginDefinitionError`).
    """

    #: Unique, lower-case plugin name; also the entry-point name, the URL slug and the ``idp_<name>`` prefix.
    name: ClassVar[str]
    #: Human name shown to admins, e.g. "Microsoft Entra ID".
    display_name: ClassVar[str]
    #: WorkOS connection type per protocol, e.g. ``{"saml": "OktaSAML", "oidc": "OktaOIDC"}``.
    connection_types: ClassVar[Mapping[str, str]] = {}
    #: WorkOS directory type (wire value, e.g. ``"okta scim v2.0"``), or ``None`` without directory sync.
    directory_type: ClassVar[str | None] = None
    #: Capability: WorkOS offers an OIDC connection for this IdP (then ``connection_types["oidc"]`` is set).
    supports_oidc: ClassVar[bool] = False
    #: Capability: the directory is provisioned over SCIM (otherwise through an API such as Google's).
    supports_scim: ClassVar[bool] = False
    #: Capability: SSO profiles of an OIDC connection carry groups usable for roles (Google OIDC does not).
    oidc_group_roles: ClassVar[bool] = True
    #: How the admin hands over SAML metadata: ``"url"`` or ``"xml"`` (an uploaded file).
    metadata_source: ClassVar[str] = "url"
    #: Every accepted SAML metadata form; defaults to ``(metadata_source,)``.
    metadata_sources: ClassVar[tuple[str, ...]] = ()
    #: What the IdP's SSO ``groups`` carry, one of ``name`` or ``object_id`` (a ``RoleMapping.identifier_kind``).
    group_identifier_kind: ClassVar[str] = "name"
    #: Regular expressions (searched in the lower-cased host) of the hosts this IdP serves: they let every plugin
    #: say "this is a <display_name> URL" when an admin pastes this IdP's URL into another IdP's wizard.
    idp_hosts: ClassVar[tuple[str, ...]] = ()
    #: The wizard serves a printable setup guide at ``/admin/sso/idp/<name>/guide``, from the plugin's own
    #: ``idp_<name>/guide.html`` when it ships one, else the generic guide built from the metadata below.
    setup_guide: ClassVar[bool] = False

    #: Examples the contract suite checks the validators against: a metadata URL this plugin accepts, and the
    #: entity ID and sign-in URL of metadata it accepts.
    example_metadata_url: ClassVar[str] = ""
    example_entity_id: ClassVar[str] = ""
    example_sso_url: ClassVar[str] = ""
    #: Where the admin finds the metadata (shown on the metadata step).
    metadata_help: ClassVar[str] = ""
    #: Example of a valid OIDC discovery URL (shown as a hint).
    oidc_discovery_example: ClassVar[str] = ""
    #: Things to have ready before starting.
    prerequisites: ClassVar[tuple[str, ...]] = ()
    #: Console instructions for the SAML app, then for the OIDC app.
    saml_console_steps: ClassVar[tuple[ConsoleStep, ...]] = ()
    oidc_console_steps: ClassVar[tuple[ConsoleStep, ...]] = ()
    #: How to rotate the SAML signing certificate in the IdP's console (shown by the "Rotate certificate" flow).
    rotation_steps: ClassVar[tuple[ConsoleStep, ...]] = ()
    #: Directory-sync setup instructions.
    directory_steps: ClassVar[tuple[ConsoleStep, ...]] = ()
    #: The attributes (SAML) / claims (OIDC) the IdP sends, with advice when one is missing.
    saml_attributes: ClassVar[tuple[AttributeRequirement, ...]] = ()
    oidc_claims: ClassVar[tuple[AttributeRequirement, ...]] = ()
    #: Advice per test-login problem: ``no_groups``, ``unmapped_groups``, ``groups_overage``, ``no_role``.
    advice: ClassVar[Mapping[str, str]] = {}
    #: Known traps, shown on the steps they concern.
    known_traps: ClassVar[tuple[PluginWarning, ...]] = ()
    #: How to fix a failed sign-in, per reason of :data:`~hatidata_auth.idp.SIGN_IN_REASONS`, in the IdP's words.
    sign_in_fixes: ClassVar[Mapping[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            problems = class_problems(cls)
            if problems:
                raise PluginDefinitionError(f"IdP plugin {cls.__dict__['name']!r}: " + "; ".join(problems))
        if "idp_hosts" in cls.__dict__ and isinstance(getattr(cls, "display_name", None), str) \
                and not host_patterns_problem(cls.idp_hosts):
            register_hosts(cls.display_name, cls.idp_hosts)

    # --- metadata helpers -------------------------------------------------------------------------------

    @property
    def protocols(self) -> tuple[str, ...]:
        """The protocols an admin can choose, SAML first."""
        return tuple(p for p in PROTOCOLS if p in self.connection_types)

    @property
    def accepted_metadata_sources(self) -> tuple[str, ...]:
        """Every SAML metadata form the wizard offers."""
        return self.metadata_sources or (self.metadata_source,)

    @property
    def blueprint_name(self) -> str:
        """The only name this plugin's blueprint may have."""
        return f"idp_{self.name}"

    def group_roles_supported(self, protocol: str) -> bool:
        """Whether SSO profiles of *protocol* carry groups that can drive roles."""
        return protocol == "saml" or self.oidc_group_roles

    # --- hooks ------------------------------------------------------------------------------------------

    def wizard_steps(self, protocol: str = "saml") -> tuple[WizardStep, ...]:
        """The setup wizard's steps; the default is the full SSO setup, in order."""
        steps = [
            WizardStep("prerequisites", "Before you start", "prerequisites"),
            WizardStep("console", f"Create the app in {self.display_name}", "console"),
            WizardStep("attributes", "Attributes and claims" if protocol == "saml" else "Claims", "attributes"),
            WizardStep("metadata", "Connect to WorkOS", "metadata"),
            WizardStep("role-mapping", "Map groups to roles", "role_mapping"),
            WizardStep("test-login", "Test sign-in", "test_login"),
        ]
        if self.directory_type:
            steps.append(WizardStep("directory", "Directory sync", "directory"))
        steps.append(WizardStep("activate", "Activate", "activate"))
        return tuple(steps)

    def console_steps(self, protocol: str) -> tuple[ConsoleStep, ...]:
        """Instructions for creating the app in the IdP console."""
        return self.oidc_console_steps if protocol == "oidc" else self.saml_console_steps

    def attribute_requirements(self, protocol: str) -> tuple[AttributeRequirement, ...]:
        """The checklist of attributes or claims, and what a test login must find."""
        return self.oidc_claims if protocol == "oidc" else self.saml_attributes

    def attribute_map(self, protocol: str = "saml") -> AttributeMap:
        """IdP attribute names for the WorkOS profile fields, sent when the WorkOS connection is created."""
        names = {r.field: r.idp_attribute for r in self.attribute_requirements(protocol)
                 if r.field in PROFILE_FIELDS and r.idp_attribute}
        return AttributeMap(**names)

    def validate_metadata_url(self, url: str) -> ValidationResult:
        """Check a SAML metadata URL is this IdP's; the default refuses (metadata comes as a file)."""
        return ValidationResult.failure(
            "metadata_url", f"{self.display_name} gives its SAML metadata as a file: upload it instead.")

    def validate_metadata_xml(self, data: bytes, now: datetime) -> ValidationResult:
        """Parse uploaded SAML metadata (safely) and check it; then :meth:`check_metadata` for IdP specifics."""
        result = parse_saml_metadata(data, now)
        if not result.ok:
            return result
        problem = self.check_metadata(result.value)
        if problem:
            return ValidationResult.failure("metadata_file", problem)
        return result

    def check_metadata(self, metadata: SamlMetadata) -> str | None:
        """Return why parsed metadata is not this IdP's, or ``None``; the default accepts any IdP."""
        return None

    def validate_oidc_discovery_url(self, url: str) -> ValidationResult:
        """Check an OIDC discovery URL; the default wants HTTPS and ``/.well-known/openid-configuration``."""
        checked = check_https_url("discovery_endpoint", url)
        if isinstance(checked, ValidationResult):
            return checked
        other = wrong_idp("discovery_endpoint", checked[0], self.display_name)
        if other:
            return other
        if not checked[1].endswith("/.well-known/openid-configuration"):
            return ValidationResult.failure(
                "discovery_endpoint", "A discovery URL ends with /.well-known/openid-configuration.")
        return ValidationResult.success(url.strip())

    def validate_group_identifier(self, value: str) -> ValidationResult:
        """Check one group identifier typed in the role-mapping step; the default accepts any non-empty text."""
        cleaned = value.strip()
        if not cleaned:
            return ValidationResult.failure("identifier", "Enter the group as your IdP sends it.")
        if len(cleaned) > 255:
            return ValidationResult.failure("identifier", "A group identifier has at most 255 characters.")
        return ValidationResult.success(cleaned)

    def role_mapping_presets(self) -> tuple[RoleMappingPreset, ...]:
        """Ready-made mapping sets; the default maps the three HatiData groups by name."""
        return (RoleMappingPreset(
            key="hatidata-groups",
            title="HatiData Admins / Developers / Viewers",
            identifier_kind=self.group_identifier_kind,
            mappings=tuple(PresetMapping(label, role, priority, label)
                           for priority, (label, role) in enumerate(CANONICAL_GROUPS, start=1)),
            description="Groups named exactly like this in your IdP map to admin, developer and viewer.",
        ),)

    def normalize_profile(self, profile: Mapping[str, Any]) -> NormalizedProfile:
        """Reduce a WorkOS SSO profile (a dict) to a :class:`NormalizedProfile`.

        Top-level fields win; legacy ``raw_attributes`` keyed by this IdP's attribute names fill the gaps.
        """
        protocol = "oidc" if profile.get("connection_type") == self.connection_types.get("oidc") else "saml"
        raw = profile.get("raw_attributes") or {}
        names = self.attribute_map(protocol).as_dict()
        values: dict[str, Any] = {}
        for fld in ("idp_id", "email", "first_name", "last_name"):
            value = profile.get(fld)
            if not value and fld in names:
                value = _first(raw.get(names[fld]))
            values[fld] = str(value).strip() if value else None
        groups_value = profile.get("groups")
        if groups_value is None and "groups" in names:
            groups_value = raw.get(names["groups"])
        groups = tuple(self.clean_groups(_as_list(groups_value)))
        present = frozenset(k for k, v in values.items() if v) | (frozenset({"groups"}) if groups else frozenset())
        return NormalizedProfile(
            idp_id=values["idp_id"], email=values["email"].lower() if values["email"] else None,
            first_name=values["first_name"], last_name=values["last_name"], groups=groups,
            connection_type=profile.get("connection_type"), connection_id=profile.get("connection_id"),
            present=present, groups_overage=self.groups_overage(raw),
        )

    def clean_groups(self, groups: Sequence[str]) -> list[str]:
        """Tidy group identifiers as sent (trim, drop empties and duplicates, keep order)."""
        seen: dict[str, None] = {}
        for group in groups:
            cleaned = str(group).strip()
            if cleaned:
                seen.setdefault(cleaned, None)
        return list(seen)

    def groups_overage(self, raw_attributes: Mapping[str, Any]) -> bool:
        """Whether the IdP replaced the groups with a pointer (too many groups); the default never does."""
        return False

    def warnings(self, protocol: str = "saml") -> tuple[PluginWarning, ...]:
        """Known traps to show; the default returns :attr:`known_traps`."""
        return self.known_traps

    def health_checks(self, status: SetupStatus) -> tuple[HealthCheck, ...]:
        """Checks of a configured organization: connection active, directory linked, certificate not expiring."""
        checks = [HealthCheck(
            "connection", "SSO connection",
            "ok" if status.connection_state == "active" else "fail" if status.connection_id else "warn",
            f"state: {status.connection_state}" if status.connection_id else "no connection yet",
        )]
        if self.directory_type:
            checks.append(HealthCheck(
                "directory", "Directory sync",
                "ok" if status.directory_state == "linked" else "warn",
                f"state: {status.directory_state}" if status.directory_id else "no directory linked yet",
            ))
        if status.certificate_not_after is not None:
            left = status.certificate_not_after - status.now
            checks.append(HealthCheck(
                "certificate", "SAML signing certificate",
                "fail" if left <= timedelta(0) else "warn" if left < timedelta(days=30) else "ok",
                f"expires {status.certificate_not_after:%Y-%m-%d}",
            ))
        return tuple(checks)

    def sign_in_fix(self, reason: str, protocol: str = "saml", attribute: str | None = None) -> str:
        """How an admin fixes a sign-in that failed for *reason* (missing *attribute*, a profile field such as
        ``email``): the attribute's own advice, else :attr:`sign_in_fixes`, else the generic fix."""
        if reason == "missing_attribute" and attribute:
            for requirement in self.attribute_requirements(protocol):
                if attribute in (requirement.field, requirement.idp_attribute) and requirement.advice:
                    return f"{requirement.idp_attribute or requirement.field} is missing. {requirement.advice}"
        known = reason if reason in SIGN_IN_REASONS else "unknown"
        return self.sign_in_fixes.get(known) or GENERIC_FIXES[known]

    def create_blueprint(self) -> Blueprint | None:
        """An optional blueprint named ``idp_<name>`` (templates under ``idp_<name>/``); the default has none."""
        return None

    def make_blueprint(self, import_name: str, template_folder: str | None = "templates") -> Blueprint:
        """Build this plugin's blueprint with the enforced name and URL prefix ``/admin/sso/idp/<name>``."""
        return Blueprint(self.blueprint_name, import_name, template_folder=template_folder,
                         url_prefix=f"/admin/sso/idp/{self.name}")


def _first(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return value[0] if value else None
    return value


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        # Some IdPs (OneLogin "semicolon delimited" parameters) send several values in one string.
        return value.split(";") if ";" in value else [value]
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return [str(value)]


def class_problems(cls: type[IdPPlugin]) -> list[str]:
    """What is wrong with a plugin class's metadata (empty when it keeps the contract)."""
    problems: list[str] = []
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        problems.append("name must be lower-case letters, digits or _ (2-31, a letter first, not _ last)")
    if not isinstance(getattr(cls, "display_name", None), str) or not cls.display_name.strip():
        problems.append("display_name is required")
    types = dict(cls.connection_types or {})
    if not types or set(types) - set(PROTOCOLS):
        problems.append(f"connection_types must map some of {PROTOCOLS} to WorkOS connection types")
    problems += [f"connection_types[{p!r}] {v!r} is not a WorkOS {p.upper()} connection type (one of "
                 f"{', '.join(sorted(workos_connection_types(p)))})" for p, v in types.items()
                 if p in PROTOCOLS and v not in workos_connection_types(p)]
    if cls.supports_oidc != ("oidc" in types):
        problems.append("supports_oidc must be True exactly when connection_types has an 'oidc' type")
    if cls.supports_scim and not cls.directory_type:
        problems.append("supports_scim needs a directory_type")
    if cls.directory_type and cls.supports_scim != ("scim" in cls.directory_type):
        problems.append(f"supports_scim does not match directory_type {cls.directory_type!r}")
    if cls.metadata_source not in ("url", "xml"):
        problems.append("metadata_source must be 'url' or 'xml'")
    if set(cls.metadata_sources) - {"url", "xml"}:
        problems.append("metadata_sources may only hold 'url' and 'xml'")
    if cls.group_identifier_kind not in IDENTIFIER_KINDS:
        problems.append(f"group_identifier_kind must be one of {IDENTIFIER_KINDS}")
    hosts_problem = host_patterns_problem(cls.idp_hosts)
    if hosts_problem:
        problems.append(hosts_problem)
    return problems


def instance_problems(plugin: IdPPlugin) -> list[str]:
    """What is wrong with what a plugin's hooks return (empty when it keeps the contract)."""
    problems: list[str] = []
    for protocol in plugin.protocols:
        steps = plugin.wizard_steps(protocol)
        keys = [s.key for s in steps]
        if len(set(keys)) != len(keys):
            problems.append(f"wizard_steps({protocol!r}) repeats a step key")
        for step in steps:
            if step.kind not in STEP_KINDS:
                problems.append(f"step {step.key!r} has unknown kind {step.kind!r}")
            if not re.match(r"^[a-z][a-z0-9-]*$", step.key):
                problems.append(f"step key {step.key!r} is not a URL slug")
            if step.template and not step.template.startswith((f"{plugin.blueprint_name}/", "sso_wizard/")):
                problems.append(f"step {step.key!r} template must live under {plugin.blueprint_name}/")
        if not keys or keys[-1] != "activate" or "metadata" not in [s.kind for s in steps]:
            problems.append(f"wizard_steps({protocol!r}) must include a metadata step and end with activate")
        fields = {r.field for r in plugin.attribute_requirements(protocol) if r.required}
        if "email" not in fields:
            problems.append(f"attribute requirements for {protocol} must require email")
    for preset in plugin.role_mapping_presets():
        if preset.identifier_kind not in IDENTIFIER_KINDS:
            problems.append(f"preset {preset.key!r} has unknown identifier kind")
        for row in preset.mappings:
            if row.role not in ROLES:
                problems.append(f"preset {preset.key!r} maps to unknown role {row.role!r}")
    for source in plugin.accepted_metadata_sources:
        if source == "url" and type(plugin).validate_metadata_url is IdPPlugin.validate_metadata_url:
            problems.append("metadata by URL needs validate_metadata_url")
    unknown_reasons = sorted(set(plugin.sign_in_fixes) - set(SIGN_IN_REASONS))
    if unknown_reasons:
        problems.append(f"sign_in_fixes names unknown reasons {unknown_reasons}")
    for trap in plugin.warnings():
        if trap.step is not None and trap.step not in STEP_KINDS:
            problems.append(f"warning {trap.key!r} names unknown step kind {trap.step!r}")
    return problems


def host_of(url: str) -> str:
    """The lower-cased host of *url* (empty when there is none)."""
    return (urlsplit(url).hostname or "").lower()
