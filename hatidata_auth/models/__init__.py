"""The data model. Every table holding tenant data carries ``organization_id`` (see :class:`TenantMixin`)."""

from __future__ import annotations

# Roles are defined in ``hatidata_auth.roles``; re-exported because a role is what a membership column holds.
from ..roles import ROLES
from .access import ApiKey, AuthSession
from .audit import AuditChainHead, AuditCheckpoint, AuditEvent, AuditExportJob, AuditSigningKey
from .audit_streams import STREAM_KINDS, STREAM_STATES, AuditStream
from .base import TenantMixin, new_id, utcnow
from .directory import (
    DirectoryGroup,
    DirectoryGroupMembership,
    DirectoryUser,
    KnownDirectory,
    ResyncCursor,
    RoleMapping,
)
from .inbox import SyncCursor, WebhookEvent
from .setup import CertificateRotation, OrganizationAlert, WizardProgress
from .sign_ins import SignInAttempt
from .tenancy import MEMBERSHIP_SOURCES, MEMBERSHIP_STATUSES, SIGN_IN_METHODS, Membership, Organization, User

__all__ = [
    "MEMBERSHIP_SOURCES",
    "MEMBERSHIP_STATUSES",
    "ROLES",
    "SIGN_IN_METHODS",
    "STREAM_KINDS",
    "STREAM_STATES",
    "ApiKey",
    "AuditChainHead",
    "AuditCheckpoint",
    "AuditEvent",
    "AuditExportJob",
    "AuditSigningKey",
    "AuditStream",
    "AuthSession",
    "CertificateRotation",
    "DirectoryGroup",
    "DirectoryGroupMembership",
    "DirectoryUser",
    "KnownDirectory",
    "Membership",
    "Organization",
    "OrganizationAlert",
    "ResyncCursor",
    "RoleMapping",
    "SignInAttempt",
    "SyncCursor",
    "TenantMixin",
    "User",
    "WebhookEvent",
    "WizardProgress",
    "new_id",
    "utcnow",
]
