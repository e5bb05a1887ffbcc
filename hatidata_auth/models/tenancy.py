"""Organizations (tenants), users and their memberships."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ColumnElement, ForeignKey, Index, Integer, String, UniqueConstraint, and_
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from ..roles import DEFAULT_ROLE
from .base import TenantMixin, TimestampMixin, UTCDateTime, new_id

MEMBERSHIP_SOURCES = ("sso", "directory", "manual")
MEMBERSHIP_STATUSES = ("active", "inactive", "pending", "deprovisioned")
# Sign-in methods an organization may allow: WorkOS's ``authentication_method`` lower-cased, every ``*OAuth``
# provider counted as "oauth".
SIGN_IN_METHODS = ("sso", "password", "magicauth", "oauth", "passkey")


class Organization(TimestampMixin, db.Model):  # type: ignore[name-defined]
    """A customer organization: the tenant, mirrored from one WorkOS organization."""

    __tablename__ = "organizations"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("org"))
    workos_organization_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    domains: Mapped[list[str]] = mapped_column(JSON, default=list, nullable=False)
    # WorkOS's OrganizationDomain per domain: {"state": pending|verified|failed|..., "verification_strategy": ...}.
    domain_states: Mapped[dict[str, dict[str, Any]]] = mapped_column(JSON, default=dict, nullable=False)
    status: Mapped[str] = mapped_column(String(16), default="active", nullable=False)
    sso_enforced: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    # The SIGN_IN_METHODS a session here may be authenticated by; None: every method (SSO enforcement: SSO only).
    auth_methods: Mapped[list[str] | None] = mapped_column(JSON)
    # None means members in no mapped group get no access.
    default_role: Mapped[str | None] = mapped_column(String(32), default=DEFAULT_ROLE)
    session_active_ttl: Mapped[int | None] = mapped_column(Integer)
    session_remembered_ttl: Mapped[int | None] = mapped_column(Integer)
    session_cache_ttl: Mapped[int | None] = mapped_column(Integer)
    # Access policy (services/access_policy.py): seconds from sign-in a session may last whatever its refreshes
    # (None: no limit beyond the others), the client addresses allowed (CIDR strings; None: any), whether that
    # list binds API keys too, and the step-up window (s).
    session_absolute_ttl: Mapped[int | None] = mapped_column(Integer)
    ip_allowlist: Mapped[list[str] | None] = mapped_column(JSON)
    ip_allowlist_api_keys: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    step_up_window: Mapped[int | None] = mapped_column(Integer)
    # Break-glass accounts (services/break_glass.py): membership ids that may sign in without SSO while it is
    # enforced. None: none.
    break_glass_members: Mapped[list[str] | None] = mapped_column(JSON)
    idp_plugin: Mapped[str | None] = mapped_column(String(64))
    connection_id: Mapped[str | None] = mapped_column(String(64), index=True)
    connection_type: Mapped[str | None] = mapped_column(String(64))
    connection_state: Mapped[str | None] = mapped_column(String(32))
    # The connection's updated_at (else the event time) we last applied: older connection events are stale.
    connection_version_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    directory_id: Mapped[str | None] = mapped_column(String(64), index=True)
    directory_type: Mapped[str | None] = mapped_column(String(64))
    directory_state: Mapped[str | None] = mapped_column(String(32))
    # The WorkOS object's updated_at we last applied: older events never overwrite newer state.
    workos_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    @hybrid_property
    def live(self) -> bool:
        """Whether the organization's members may hold access here: active and not deleted. The one rule every
        reader of an organization's state uses (a ``bool`` on an instance, a SQL condition on the class)."""
        return self.status == "active" and self.deleted_at is None

    @live.inplace.expression
    @classmethod
    def _live_expression(cls) -> ColumnElement[bool]:
        return and_(cls.status == "active", cls.deleted_at.is_(None))


class User(TimestampMixin, db.Model):  # type: ignore[name-defined]
    """A person known to WorkOS User Management; may belong to several organizations."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("usr"))
    workos_user_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    email: Mapped[str] = mapped_column(String(320), nullable=False, index=True)
    first_name: Mapped[str | None] = mapped_column(String(255))
    last_name: Mapped[str | None] = mapped_column(String(255))
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Membership(TenantMixin, TimestampMixin, db.Model):  # type: ignore[name-defined]
    """A user's membership of one organization, with the role HatiData grants there."""

    __tablename__ = "memberships"
    __table_args__ = (
        UniqueConstraint("organization_id", "user_id", name="uq_membership_org_user"),
        Index("ix_memberships_org_directory_user", "organization_id", "directory_user_id"),
        Index("ix_memberships_id_organization_id", "id", "organization_id"),
    )
    __tenant_index__ = False

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("mem"))
    user_id: Mapped[str] = mapped_column(String(40), ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    role: Mapped[str | None] = mapped_column(String(32))
    # How the role was decided: "mapping" (group -> role), "default", "manual" or "idp".
    role_source: Mapped[str] = mapped_column(String(16), default="default", nullable=False)
    source: Mapped[str] = mapped_column(String(16), default="manual", nullable=False)
    status: Mapped[str] = mapped_column(String(16), default="active", nullable=False)
    workos_membership_id: Mapped[str | None] = mapped_column(String(64), index=True)
    directory_user_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, nullable=False)


Index("ix_memberships_user", Membership.user_id)
