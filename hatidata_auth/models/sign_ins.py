"""SSO sign-in attempts kept for an organization's admins (``services.sign_in_attempts``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .base import TenantMixin, UTCDateTime, utcnow


class SignInAttempt(TenantMixin, db.Model):  # type: ignore[name-defined]
    """One SSO sign-in attempt, seen by our callback, by a WorkOS ``authentication.*`` event, or both."""

    __tablename__ = "sign_in_attempts"
    __table_args__ = (
        Index("ix_sign_in_attempts_org_time", "organization_id", "occurred_at"),
        Index("ix_sign_in_attempts_org_session", "organization_id", "workos_session_id"),
        # Retention deletes by age across organizations.
        Index("ix_sign_in_attempts_occurred_at", "occurred_at"),
        Index("ix_sign_in_attempts_id_organization_id", "id", "organization_id"),
    )
    __tenant_index__ = False

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)  # "sign_in" | "test"
    outcome: Mapped[str] = mapped_column(String(16), nullable=False)  # "success" | "failure"
    reason: Mapped[str | None] = mapped_column(String(32))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(String(500))
    email: Mapped[str | None] = mapped_column(String(320))
    connection_id: Mapped[str | None] = mapped_column(String(64))
    workos_session_id: Mapped[str | None] = mapped_column(String(64))
    idp_plugin: Mapped[str | None] = mapped_column(String(64))
    sources: Mapped[str] = mapped_column(String(32), nullable=False)  # "callback", "event" or "callback,event"
    event_id: Mapped[str | None] = mapped_column(String(64))
    attribute: Mapped[str | None] = mapped_column(String(128))  # the missing one, for ``missing_attribute``
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, nullable=False)
    ip_address: Mapped[str | None] = mapped_column(String(64))
