"""Column helpers shared by the models."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import DateTime, ForeignKey, String, TypeDecorator
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from ..random_ids import uuid4_hex


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """Return a new public identifier such as ``org_3f2a…`` (prefix + a version-4 UUID's 32 hex digits)."""
    return f"{prefix}_{uuid4_hex()}"


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use an aware UTC datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class TimestampMixin:
    """``created_at`` and ``updated_at`` kept by the application."""

    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow, nullable=False)


class TenantMixin:
    """Marks a table that holds one organization's data: every query on it must filter by organization.

    A table whose unique constraint or index already leads with ``organization_id`` sets
    ``__tenant_index__ = False``: a single-column index beside it is maintained on every write for nothing, and
    without statistics the planner may pick it over the composite one (issue #14).
    """

    __tenant_index__ = True

    @declared_attr
    def organization_id(cls) -> Mapped[str]:  # SQLAlchemy declared_attr
        return mapped_column(
            String(40), ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False,
            index=cls.__tenant_index__,
        )
