"""The WorkOS boundary: the gateway that builds the SDK client, and the one translation of its errors.

Only modules in this package import the SDK's private modules (``workos._*``) or name its error classes;
everything else catches :class:`WorkOSFailure` and its subclasses. ``WorkOSClient`` is the SDK's sync client
type, re-exported for the services' signatures.
"""

from workos import WorkOSClient

from .errors import (
    OrganizationSelectionRequired,
    WorkOSFailure,
    WorkOSNotFound,
    WorkOSRejected,
    WorkOSUnavailable,
    translate,
    translate_errors,
)
from .gateway import WORKOS_DEFAULTS, WorkOSGateway, WorkOSSettings

__all__ = [
    "WORKOS_DEFAULTS",
    "OrganizationSelectionRequired",
    "WorkOSClient",
    "WorkOSFailure",
    "WorkOSGateway",
    "WorkOSNotFound",
    "WorkOSRejected",
    "WorkOSSettings",
    "WorkOSUnavailable",
    "translate",
    "translate_errors",
]
