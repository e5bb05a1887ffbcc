"""Helpers for audit-log tests: play an attacker with direct database access."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import text

TRIGGER = "audit_events_append_only"
GUARDED = {"audit_events": TRIGGER, "audit_checkpoints": "audit_checkpoints_append_only"}


@contextmanager
def tampering(session: Any) -> Iterator[None]:
    """Let *session* update or delete audit events and checkpoints until the block ends (then commit).

    On PostgreSQL the append-only trigger is disabled and re-enabled inside the same transaction
    (``ALTER TABLE`` is transactional there), as an attacker who owns the table could do; on SQLite there
    is no trigger to disable.
    """
    postgres = session.get_bind().dialect.name == "postgresql"
    if postgres:
        for table, trigger in GUARDED.items():
            session.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER {trigger}"))
    yield
    session.flush()
    if postgres:
        for table, trigger in GUARDED.items():
            session.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER {trigger}"))
    session.commit()


TARGET_TYPES = ("session", "api_key", "membership", "user", "role")


def add_events(app: Any, organization_id: str, count: int, *, start: int = 0) -> None:
    """Append *count* events to the organization's chain (one transaction), with varied actors and targets."""
    from datetime import UTC, datetime, timedelta

    from hatidata_auth.causes import Actor, Cause, RequestInfo
    from hatidata_auth.extensions import db
    from hatidata_auth.services import audit

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    with app.app_context():
        for i in range(start, start + count):
            audit.record(db.session, action=f"test.action{i % 3}",
                         cause=Cause.by(Actor("api_key" if i % 10 == 3 else "user", f"usr_{i % 7}", f"u{i % 7}@x.test"),
                                        RequestInfo("10.0.0.1", "pytest", f"req-{i}")),
                         organization_id=organization_id, target_type=TARGET_TYPES[i % 5],
                         target_id=f"ses_{i % 11}",
                         outcome="failure" if i % 5 == 0 else "success", details={"i": i},
                         at=t0 + timedelta(seconds=i))
        db.session.commit()
        db.session.remove()


def new_org(app: Any, name: str) -> str:
    """A bare organization's id."""
    from hatidata_auth.extensions import db
    from hatidata_auth.models import Organization

    with app.app_context():
        org = Organization(name=name, domains=[f"{name.lower()}.test"])
        db.session.add(org)
        db.session.commit()
        org_id = str(org.id)
        db.session.remove()
    return org_id
