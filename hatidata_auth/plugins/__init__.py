"""The IdP plugin API: subclass :class:`IdPPlugin`, declare it under the ``hatidata_auth.idp_plugins`` entry point.

See ``docs/plugins.md`` for the contract and a walk-through.
"""

from __future__ import annotations

from .base import IdPPlugin, PluginDefinitionError
from .guide import guide_blueprint
from .registry import ENTRY_POINT_GROUP, PluginLoadError, PluginRegistry, get_registry, load_plugins
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
)

__all__ = [
    "ENTRY_POINT_GROUP",
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
    "get_registry",
    "guide_blueprint",
    "load_plugins",
]
