"""Setup-wizard progress and organization alerts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Index, String, Text, UniqueConstraint, true
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .base import TenantMixin, TimestampMixin, UTCDateTime, new_id


class WizardProgress(TenantMixin, TimestampMixin, db.Model):  # type: ignore[name-defined]
    """Where an organization is in an IdP plugin's setup wizard; shared by all its admins."""

    __tablename__ = "wizard_progress"
    __table_args__ = (UniqueConstraint("organization_id", "plugin", name="uq_wizard_org_plugin"),
                      Index("ix_wizard_progress_id_organization_id", "id", "organization_id"))
    __tenant_index__ = False

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("wiz"))
    plugin: Mapped[str] = mapped_column(String(64), nullable=False)
    current_step: Mapped[str] = mapped_column(String(64), nullable=False)
    # A hash of the plugin's step list: a changed list resets a half-done setup.
    steps_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, nullable=False)
    completed_steps: Mapped[list[str]] = mapped_column(JSON, default=list, nullable=False)
    updated_by: Mapped[str | None] = mapped_column(String(40))
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class OrganizationAlert(TenantMixin, TimestampMixin, db.Model):  # type: ignore[name-defined]
    """Something an organization's admins must see until it is resolved (e.g. a SAML certificate expiring)."""

    __tablename__ = "organization_alerts"
    # One row per (kind, object): it holds the version of the last event applied to that alert, open or not.
    __table_args__ = (
        UniqueConstraint("organization_id", "kind", "target_id", name="uq_organization_alert_target"),
        Index("ix_organization_alerts_open", "organization_id", "resolved_at"),
        Index("ix_organization_alerts_id_organization_id", "id", "organization_id"),
    )
    __tenant_index__ = False

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("alert"))
    kind: Mapped[str] = mapped_column(String(64), nullable=False)
    # What the alert is about, e.g. ("connection", "conn_01…").
    target_type: Mapped[str | None] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text, nullable=False)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, nullable=False)
    source_event_id: Mapped[str | None] = mapped_column(String(64))
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The event type that resolved it; ``connection.deleted`` is final (the alert never reopens).
    resolution: Mapped[str | None] = mapped_column(String(64))
    # Version guard: (event time, event id) of the last event applied; WorkOS event ids are time-ordered.
    version_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    version_event_id: Mapped[str | None] = mapped_column(String(64))


class CertificateRotation(TenantMixin, TimestampMixin, db.Model):  # type: ignore[name-defined]
    """A SAML signing-certificate rotation of one connection: ``both_trusted`` (the new certificate added beside
    the old ones) → ``switched`` (the admin says the IdP signs with the new one) → ``retired`` (a test sign-in
    passed, the old certificates were removed at WorkOS). One row per connection; a new rotation reuses it."""

    __tablename__ = "certificate_rotations"
    __table_args__ = (UniqueConstraint("organization_id", "connection_id", name="uq_certificate_rotation_conn"),
                      Index("ix_certificate_rotations_id_organization_id", "id", "organization_id"))
    __tenant_index__ = False

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("rot"))
    connection_id: Mapped[str] = mapped_column(String(64), nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    # WorkOS's id of the new certificate, its SHA-256 fingerprint (hex) and expiry.
    new_certificate_id: Mapped[str] = mapped_column(String(64), nullable=False)
    new_fingerprint: Mapped[str] = mapped_column(String(64), nullable=False)
    new_not_after: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # WorkOS ids of the certificates the rotation retires.
    old_certificate_ids: Mapped[list[str]] = mapped_column(JSON, default=list, nullable=False)
    metadata_source: Mapped[str] = mapped_column(String(8), nullable=False)
    switched_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The email of the test sign-in that proved the switch.
    verified_by: Mapped[str | None] = mapped_column(String(320))
    # Whether the rotation added the new certificate at WorkOS (False: WorkOS already trusted it); a cancel
    # removes only a certificate the rotation added.
    added_new_certificate: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True, server_default=true())
    # The test sign-in's window: when the old certificates were set aside at WorkOS (so only the new one verifies
    # the test sign-in) and their public PEMs, ``[{"id", "fingerprint", "pem"}]``, restored if it fails.
    test_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    set_aside: Mapped[list[dict[str, str]] | None] = mapped_column(JSON)
