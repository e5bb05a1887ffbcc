"""The public IdP plugin API: subclass :class:`IdPPlugin`, declare it under the ``hatidata_auth.idp_plugins`` entry
point, and import nothing from ``hatidata_auth`` but this package (``tests/test_plugin_imports.py`` holds that).

Everything a plugin needs is exported here; the contract suite (``hatidata_auth.idp.contract``) and the test helpers
(``hatidata_auth.idp.testing``) are for a plugin's tests. No Flask views live here: the setup wizard that uses the
plugins is ``hatidata_auth.sso_wizard``. See ``docs/plugins.md`` for the contract and a walk-through.
"""

from __future__ import annotations

from .base import CANONICAL_GROUPS, ROLES, IdPPlugin, PluginDefinitionError, host_of
from .hosts import guess_idp, wrong_idp
from .registry import (
    ENTRY_POINT_GROUP,
    PluginLoadError,
    PluginRegistry,
    check_blueprint,
    get_registry,
    load_plugins,
)
from .scaffold import scaffold_plugin
from .sign_in import GENERIC_FIXES, SIGN_IN_REASONS
from .validation import check_https_url, is_guid, parse_saml_metadata, query_param, validate_guid
from .values import (
    AttributeMap,
    AttributeRequirement,
    CertificateInfo,
    ConsoleField,
    ConsoleStep,
    FieldError,
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

__all__ = [
    "CANONICAL_GROUPS",
    "ENTRY_POINT_GROUP",
    "GENERIC_FIXES",
    "ROLES",
    "SIGN_IN_REASONS",
    "AttributeMap",
    "AttributeRequirement",
    "CertificateInfo",
    "ConsoleField",
    "ConsoleStep",
    "FieldError",
    "HealthCheck",
    "IdPPlugin",
    "NormalizedProfile",
    "PluginDefinitionError",
    "PluginLoadError",
    "PluginRegistry",
    "PluginWarning",
    "PresetMapping",
    "RoleMappingPreset",
    "SamlMetadata",
    "SetupStatus",
    "ValidationResult",
    "WizardStep",
    "check_blueprint",
    "check_https_url",
    "get_registry",
    "guess_idp",
    "host_of",
    "is_guid",
    "load_plugins",
    "parse_saml_metadata",
    "query_param",
    "scaffold_plugin",
    "validate_guid",
    "workos_connection_types",
    "wrong_idp",
]
