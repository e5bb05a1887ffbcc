"""Retention of the inbox: settled events (``applied``, ``ignored``, ``duplicate``) expire after a number of days.

Failed events are never expired here (they wait for a replay), nor events still to apply. The inbox is walked in
primary-key order, ``chunk_size`` rows at a time, each chunk deleted in its own short transaction, so no lock is
held for long and no index beyond the primary key is needed: ids grow with arrival, so the walk stops after the
first chunk whose last row arrived after the cutoff (a row a concurrent writer committed out of order is left
for the next run). Run it daily (``flask --app wsgi hatidata inbox expire``); every run is audited once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from ..causes import Cause
from ..errors import AppError
from ..models import WebhookEvent, utcnow
from . import audit

EXPIRING_STATUSES = ("applied", "ignored", "duplicate")
DEFAULT_CHUNK_SIZE = 1000


class InvalidRetention(AppError):
    """A retention of less than one day, or a chunk size below one."""

    status = 422
    code = "invalid_retention"


@dataclass(frozen=True, slots=True)
class ExpiryReport:
    """One expiry run: the retention (days), the cutoff (UTC; settled events last changed before it were
    deleted), the number of rows deleted and the number of chunks (transactions) it took."""

    retention_days: int
    cutoff: datetime
    deleted: int
    chunks: int

    def to_dict(self) -> dict[str, Any]:
        """The audit event's details (the cutoff as ISO 8601)."""
        return {"retention_days": self.retention_days, "cutoff": self.cutoff.isoformat(),
                "deleted": self.deleted, "chunks": self.chunks}


def expire(session: Session, *, retention_days: int, cause: Cause, now: datetime | None = None,
           chunk_size: int = DEFAULT_CHUNK_SIZE) -> ExpiryReport:
    """Delete settled events whose last change (``updated_at``) is older than *retention_days* days before
    *now*; commits after each chunk of at most *chunk_size* rows and audits ``inbox.expired`` (no organization,
    details: :meth:`ExpiryReport.to_dict`) with the last one.

    On an error the chunks already committed stay deleted and the run is audited with outcome ``failure`` and
    the count so far before the error propagates. Raises :class:`InvalidRetention` for *retention_days* or
    *chunk_size* below 1.
    """
    if retention_days < 1 or chunk_size < 1:
        raise InvalidRetention("The retention is at least one day and the chunk size at least one row.",
                               details={"retention_days": retention_days, "chunk_size": chunk_size})
    cutoff = (now or utcnow()) - timedelta(days=retention_days)
    deleted = chunks = 0
    after = 0  # ids start at 1
    try:
        while True:
            boundary = session.execute(select(WebhookEvent.id, WebhookEvent.received_at)
                                       .where(WebhookEvent.id > after).order_by(WebhookEvent.id)
                                       .offset(chunk_size - 1).limit(1)).first()
            in_chunk = [WebhookEvent.id > after] + ([WebhookEvent.id <= boundary.id] if boundary else [])
            result = session.execute(delete(WebhookEvent).where(
                *in_chunk, WebhookEvent.status.in_(EXPIRING_STATUSES), WebhookEvent.updated_at < cutoff,
            ).execution_options(synchronize_session=False))
            deleted += cast(Any, result).rowcount or 0
            chunks += 1
            if boundary is not None and boundary.received_at < cutoff:
                session.commit()
                after = boundary.id
                continue
            report = ExpiryReport(retention_days, cutoff, deleted, chunks)
            _audit(session, cause, report)
            session.commit()
            return report
    except Exception:
        session.rollback()
        try:
            _audit(session, cause, ExpiryReport(retention_days, cutoff, deleted, chunks), outcome="failure")
            session.commit()
        except Exception:  # noqa: BLE001 - the database is gone: the first error is the one to report
            session.rollback()
        raise


def _audit(session: Session, cause: Cause, report: ExpiryReport, outcome: str = "success") -> None:
    audit.record(session, action="inbox.expired", cause=cause, organization_id=None, target_type="inbox",
                 target_id="webhook_events", outcome=outcome, details=report.to_dict())
