"""Dashboard sessions and agent API keys."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .base import TenantMixin, TimestampMixin, UTCDateTime, new_id


class AuthSession(TenantMixin, TimestampMixin, db.Model):  # type: ignore[name-defined]
    """Our record of one WorkOS session (``sid``): who, where from, until when, and whether revoked."""

    __tablename__ = "auth_sessions"
    # A row by its key within its tenant (the last-seen writes, revocations) is an index lookup under any plan: a
    # single-column organization_id index beside the primary key wins a generic plan's tie without statistics,
    # and each lookup then scans the organization's every session (see TenantMixin).
    __tenant_index__ = False
    # A person's sessions in one organization (deprovisioning revokes them) by both keys: with the user alone
    # indexed, a plan without statistics read them through the organization's index, every session of it.
    __table_args__ = (Index("ix_auth_sessions_organization_id_id", "organization_id", "id"),
                      Index("ix_auth_sessions_user_organization", "user_id", "organization_id"))

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ses"))
    workos_session_id: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    user_id: Mapped[str] = mapped_column(String(40), ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    auth_method: Mapped[str] = mapped_column(String(32), default="sso", nullable=False)
    # Who vouched for the sign-in: the organization and the SSO connection WorkOS reported (None: not SSO).
    auth_organization_id: Mapped[str | None] = mapped_column(String(40))
    auth_connection_id: Mapped[str | None] = mapped_column(String(64))
    # When the user last actively authenticated (the access token's ``auth_time`` at sign-in; None: unknown). A
    # sign-in AuthKit passed straight through makes a new row but keeps the old authentication time.
    authenticated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ip_address: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    remembered: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_by: Mapped[str | None] = mapped_column(String(320))
    revoked_reason: Mapped[str | None] = mapped_column(String(255))


class ApiKey(TenantMixin, TimestampMixin, db.Model):  # type: ignore[name-defined]
    """An agent API key (``hd_live_…``); only its hash and a short public prefix are stored."""

    __tablename__ = "api_keys"
    __tenant_index__ = False  # as auth_sessions: a key by its id within its tenant is an index lookup under any plan
    __table_args__ = (Index("ix_api_keys_organization_id_id", "organization_id", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("key"))
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    owner_user_id: Mapped[str | None] = mapped_column(
        String(40), ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    prefix: Mapped[str] = mapped_column(String(32), unique=True, nullable=False)
    key_hash: Mapped[str] = mapped_column(String(128), unique=True, nullable=False)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list, nullable=False)
    # "active", "suspended" (owner deprovisioned; an admin must reinstate) or "revoked".
    status: Mapped[str] = mapped_column(String(16), default="active", nullable=False)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_by: Mapped[str | None] = mapped_column(String(320))
    rotated_from_id: Mapped[str | None] = mapped_column(String(40))
    # After a rotation the old key stays valid until this moment.
    grace_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The client addresses this key may be used from (CIDR strings), in place of the organization's list.
    ip_allowlist: Mapped[list[str] | None] = mapped_column(JSON)
