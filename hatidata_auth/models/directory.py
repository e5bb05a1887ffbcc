"""Directory Sync mirror: directory users, groups, memberships and group -> role mappings."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .base import TenantMixin, TimestampMixin, UTCDateTime, new_id


class DirectoryUser(TenantMixin, TimestampMixin, db.Model):  # type: ignore[name-defined]
    """A user as the customer's directory (SCIM or Google) describes them."""

    __tablename__ = "directory_users"
    # An email's directory users in one organization (a freed email's waiters) by both keys: with the email alone
    # indexed, a plan without statistics walked the organization's users in workos_id order to find them.
    __table_args__ = (UniqueConstraint("organization_id", "workos_id", name="uq_directory_user_workos"),
                      Index("ix_directory_users_email_organization", "email", "organization_id"),
                      Index("ix_directory_users_id_organization_id", "id", "organization_id"))
    __tenant_index__ = False

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("du"))
    workos_id: Mapped[str] = mapped_column(String(64), nullable=False)
    directory_id: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    idp_id: Mapped[str | None] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(320))
    first_name: Mapped[str | None] = mapped_column(String(255))
    last_name: Mapped[str | None] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16), default="active", nullable=False)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, nullable=False)
    user_id: Mapped[str | None] = mapped_column(String(40), index=True)
    # Version of the state we hold (the object's updated_at, then the event time); a tombstone when deleted.
    version_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The full resync that last saw WorkOS list this user: what a finished run did not see is gone.
    resync_run_id: Mapped[str | None] = mapped_column(String(64))


class DirectoryGroup(TenantMixin, TimestampMixin, db.Model):  # type: ignore[name-defined]
    """A group in the customer's directory."""

    __tablename__ = "directory_groups"
    __table_args__ = (UniqueConstraint("organization_id", "workos_id", name="uq_directory_group_workos"),
                      Index("ix_directory_groups_id_organization_id", "id", "organization_id"))
    __tenant_index__ = False

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("dg"))
    workos_id: Mapped[str] = mapped_column(String(64), nullable=False)
    directory_id: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    idp_id: Mapped[str | None] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    version_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class DirectoryGroupMembership(TenantMixin, db.Model):  # type: ignore[name-defined]
    """Whether a directory user is in a directory group, keyed by WorkOS ids.

    Keyed by WorkOS ids rather than foreign keys so that a membership event arriving before its user or
    group can be stored and take effect once both are known.
    """

    __tablename__ = "directory_group_memberships"
    # Looked up by (organization, group) through the unique constraint and by (organization, user) through the
    # index: every query names the organization, so neither id needs an index of its own.
    __table_args__ = (
        UniqueConstraint("organization_id", "group_workos_id", "user_workos_id", name="uq_dgm_group_user"),
        Index("ix_dgm_org_user", "organization_id", "user_workos_id"),
        Index("ix_directory_group_memberships_id_organization_id", "id", "organization_id"),
    )
    __tenant_index__ = False

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    group_workos_id: Mapped[str] = mapped_column(String(64), nullable=False)
    user_workos_id: Mapped[str] = mapped_column(String(64), nullable=False)
    present: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)
    version_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Tie-break for events of the same millisecond: WorkOS event ids are time-ordered ULIDs.
    version_event_id: Mapped[str | None] = mapped_column(String(64))


class KnownDirectory(TenantMixin, TimestampMixin, db.Model):  # type: ignore[name-defined]
    """A WorkOS directory known (from our mirror or a WorkOS lookup) to belong to the organization.

    A deleted directory stays as a tombstone (``deleted_at``): WorkOS never reuses directory ids, so an event
    that still carries the id is stale, even after the organization has a new directory.
    """

    __tablename__ = "known_directories"
    __table_args__ = (UniqueConstraint("organization_id", "directory_id", name="uq_known_directory"),
                      Index("ix_known_directories_id_organization_id", "id", "organization_id"))
    __tenant_index__ = False

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    directory_id: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    deleted_by_event_id: Mapped[str | None] = mapped_column(String(64))


class RoleMapping(TenantMixin, TimestampMixin, db.Model):  # type: ignore[name-defined]
    """Maps an IdP group identifier to a HatiData role, with a priority for ties."""

    __tablename__ = "role_mappings"
    __table_args__ = (
        UniqueConstraint("organization_id", "identifier_kind", "group_identifier", name="uq_role_mapping_group"),
        Index("ix_role_mappings_id_organization_id", "id", "organization_id"),
    )
    __tenant_index__ = False

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("rmap"))
    # "name" (display name), "object_id" (e.g. an Entra GUID) or "directory_group_id".
    identifier_kind: Mapped[str] = mapped_column(String(32), nullable=False)
    group_identifier: Mapped[str] = mapped_column(String(255), nullable=False)
    role: Mapped[str] = mapped_column(String(32), nullable=False)
    priority: Mapped[int] = mapped_column(Integer, default=0, nullable=False)


class ResyncCursor(TenantMixin, TimestampMixin, db.Model):  # type: ignore[name-defined]
    """Where an unfinished full resync of a directory stands: the run, the last user committed, its report.

    Written with each committed page of users and deleted when the run finishes; a resync that finds one resumes
    after ``after_user_id`` under the same ``run_id`` (see ``services/reconcile.py``).
    """

    __tablename__ = "resync_cursors"
    __table_args__ = (UniqueConstraint("organization_id", "directory_id", name="uq_resync_cursor"),
                      Index("ix_resync_cursors_id_organization_id", "id", "organization_id"))
    __tenant_index__ = False

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    directory_id: Mapped[str] = mapped_column(String(64), nullable=False)
    run_id: Mapped[str] = mapped_column(String(64), nullable=False)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    # The WorkOS id of the last user of the last committed page (the list's ``after`` cursor); None: none yet.
    after_user_id: Mapped[str | None] = mapped_column(String(64))
    report: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, nullable=False)
