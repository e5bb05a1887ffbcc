"""One key's claim on PostgreSQL (``inbox_claim.claim(entity_key=…)``: the webhook request that applies a
deprovisioning at once, ``inbox_worker.apply_entity_now``) is one statement, and that statement holds the key as the
batch claim does: its row lock and its advisory lock, the latter tried only once a candidate was found."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import delete, insert, text

from hatidata_auth.extensions import db
from hatidata_auth.models import WebhookEvent
from hatidata_auth.services import inbox_worker
from hatidata_auth.services.inbox_worker import claim
from hatidata_auth.unit_of_work import AppSession
from tests.sql_support import sent_statements

pytestmark = pytest.mark.postgres

T = WebhookEvent.__table__
BASE = datetime(2030, 1, 1, tzinfo=UTC)
KEY = "directory_user:directory_user_ONEKEY"


def _store(session: Any, name: str, minute: int, *, revokes: bool = False) -> None:
    now = inbox_worker.utcnow()
    session.execute(insert(T).values(
        event_id=f"event_onekey_{name}", event_type="dsync.user.updated", payload={"id": name},
        event_created_at=BASE + timedelta(minutes=minute), received_at=now, status="received", source="webhook",
        attempts=0, last_error=None, entity_key=KEY, revokes=revokes, created_at=now, updated_at=now))
    session.commit()


def _advisory_locks(session: Any) -> int:
    return int(session.scalar(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                   "AND pid = pg_backend_pid()")))


@pytest.fixture
def engine(app: Flask) -> Any:
    with app.app_context():
        session = db.session()
        session.execute(delete(T))
        session.commit()
        yield db.engine
        db.session.remove()
        with AppSession(db.engine) as cleanup:
            cleanup.execute(delete(T))
            cleanup.commit()


def test_a_keys_claim_is_one_statement(app: Flask, engine: Any) -> None:
    with AppSession(engine) as session:
        _store(session, "a", 1)
        with sent_statements(app, lambda s: "webhook_events" in s) as sent:
            claimed = claim(session, 1, entity_key=KEY)
        session.rollback()
    assert [c.event_id for c in claimed] == ["event_onekey_a"]
    assert len(sent) == 1, sent
    assert "FOR UPDATE SKIP LOCKED" in sent[0]
    assert "pg_try_advisory_xact_lock" in sent[0]


@pytest.mark.parametrize("other", ["batch", "entity_key", "revoking_only"])
def test_a_keys_claim_holds_the_key_against_an_older_event_stored_after_it(engine: Any, other: str) -> None:
    """An event of the key older than the one claimed, stored after the claim, is the key's head and unlocked: only
    the key's advisory lock keeps another claim (an applier's batch, another request, the deprovisioning thread)
    from applying it beside the claimed one. Once the first transaction ends, it is taken."""
    with AppSession(engine) as holder, AppSession(engine) as writer, AppSession(engine) as rival:
        # The deprovisioning thread takes the heads of the keys that hold a revoking event.
        _store(writer, "newer", 10, revokes=other == "revoking_only")
        held = claim(holder, 1, entity_key=KEY)
        assert [c.event_id for c in held] == ["event_onekey_newer"]
        _store(writer, "older", 5)

        def take() -> list[str]:
            found = claim(rival, 5, entity_key=KEY if other == "entity_key" else None,
                          revoking_only=other == "revoking_only")
            rival.rollback()
            return [c.event_id for c in found]

        assert take() == []
        holder.rollback()
        assert take() == ["event_onekey_older"]


def test_a_keys_claim_that_finds_nothing_holds_no_lock(engine: Any) -> None:
    """Nothing pending of the key, or its head held by another transaction: no advisory lock is taken (one held
    until the request's transaction ends would keep the appliers off the key for nothing)."""
    with AppSession(engine) as holder, AppSession(engine) as session:
        assert claim(session, 1, entity_key=KEY) == []
        assert _advisory_locks(session) == 0
        session.rollback()
        _store(holder, "a", 1)
        assert [c.event_id for c in claim(holder, 1, entity_key=KEY)] == ["event_onekey_a"]
        assert claim(session, 1, entity_key=KEY) == []  # the head is row-locked: skipped
        assert _advisory_locks(session) == 0
        session.rollback()
        holder.rollback()


def test_a_revoking_claim_of_one_key_takes_its_head(engine: Any) -> None:
    """Both choices at once (the key's head, if the key holds a revoking event) take the head, as each alone does
    (a break-it review: the one-statement path ran without the revoking heads' list and raised)."""
    with AppSession(engine) as session:
        _store(session, "older", 1)
        _store(session, "revoking", 2, revokes=True)
        claimed = claim(session, 5, revoking_only=True, entity_key=KEY)
        session.rollback()
    assert [c.event_id for c in claimed] == ["event_onekey_older"]
