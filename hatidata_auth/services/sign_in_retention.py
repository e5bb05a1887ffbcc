"""Retention of the sign-in attempts: every organization's attempts expire after a number of days
(``HATIDATA_SIGN_IN_ATTEMPTS_RETENTION_DAYS``, default 30), by ``hatidata sign-ins expire`` (run it daily);
every run is audited once."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import delete
from sqlalchemy.orm import Session

from ..causes import Cause
from ..errors import AppError
from ..models import SignInAttempt, utcnow
from . import audit


class InvalidRetention(AppError):
    """A retention of less than one day."""

    status = 422
    code = "invalid_retention"


def expire(session: Session, *, retention_days: int, cause: Cause, now: datetime | None = None) -> int:
    """Delete attempts older than *retention_days* days (every organization) and audit
    ``sign_in_attempts.expired`` with the count; commits. Returns how many were deleted."""
    if retention_days < 1:
        raise InvalidRetention("The retention is at least one day.", details={"retention_days": retention_days})
    cutoff = (now or utcnow()) - timedelta(days=retention_days)
    result = session.execute(delete(SignInAttempt).where(SignInAttempt.occurred_at < cutoff)
                             .execution_options(synchronize_session=False))
    deleted = int(cast(Any, result).rowcount or 0)
    audit.record(session, action="sign_in_attempts.expired", cause=cause, organization_id=None,
                 details={"retention_days": retention_days, "cutoff": cutoff.isoformat(), "deleted": deleted})
    session.commit()
    return deleted
