"""Helpers for audit-log tests: play an attacker with direct database access."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import text

TRIGGER = "audit_events_append_only"


@contextmanager
def tampering(session: Any) -> Iterator[None]:
    """Let *session* update or delete audit events until the block ends (then commit).

    On PostgreSQL the append-only trigger is disabled and re-enabled inside the same transaction
    (``ALTER TABLE`` is transactional there), as an attacker who owns the table could do; on SQLite there
    is no trigger to disable.
    """
    postgres = session.get_bind().dialect.name == "postgresql"
    if postgres:
        session.execute(text(f"ALTER TABLE audit_events DISABLE TRIGGER {TRIGGER}"))
    yield
    session.flush()
    if postgres:
        session.execute(text(f"ALTER TABLE audit_events ENABLE TRIGGER {TRIGGER}"))
    session.commit()
