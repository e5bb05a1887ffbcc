"""Inbox retention (``services.inbox_retention``, ``hatidata inbox expire``): exactly the settled events older than
the retention go, in chunks, failed and pending ones never; each run is one audit event. On both backends."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, insert, select

from hatidata_auth.causes import Cause
from hatidata_auth.extensions import db
from hatidata_auth.models import AuditEvent, WebhookEvent, utcnow
from hatidata_auth.services.audit import verify_chain
from hatidata_auth.services.inbox_retention import EXPIRING_STATUSES, InvalidRetention, expire

STATUSES = ("applied", "ignored", "duplicate", "failed", "received")
RETENTION = 30

# One row: its status, how many days before now it arrived, and how much later it last changed (days).
ROW = st.tuples(st.sampled_from(STATUSES), st.integers(0, 60), st.integers(0, 20))


def _store(rows: list[tuple[str, int, int]], now: datetime) -> list[dict[str, Any]]:
    """Insert *rows* in arrival order (ids grow with ``received_at``, as the webhook inserts them)."""
    ordered = sorted(rows, key=lambda r: -r[1])
    values = []
    for i, (status, age, changed_after) in enumerate(ordered):
        received = now - timedelta(days=age, seconds=-i)
        values.append({"event_id": f"event_R{i}", "event_type": "dsync.user.updated", "payload": {"id": f"r{i}"},
                       "received_at": received, "status": status, "source": "webhook", "attempts": 1,
                       "created_at": received, "updated_at": min(received + timedelta(days=changed_after), now)})
    if values:
        db.session.execute(insert(WebhookEvent), values)
        db.session.commit()
    return values


def _expired(row: dict[str, Any], cutoff: datetime) -> bool:
    return row["status"] in EXPIRING_STATUSES and row["updated_at"] < cutoff


def _expiry_audits() -> list[AuditEvent]:
    return list(db.session.scalars(select(AuditEvent).where(AuditEvent.action == "inbox.expired")
                                   .order_by(AuditEvent.seq)))


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(rows=st.lists(ROW, max_size=40), chunk_size=st.integers(1, 12))
def test_exactly_the_settled_events_past_the_retention_expire(app: Flask, rows: list[tuple[str, int, int]],
                                                              chunk_size: int) -> None:
    with app.app_context():
        db.session.execute(delete(WebhookEvent))
        db.session.commit()
        audits_before = len(_expiry_audits())
        now = utcnow()
        stored = _store(rows, now)

        report = expire(db.session(), retention_days=RETENTION, cause=Cause.system("test"), now=now,
                        chunk_size=chunk_size)

        cutoff = now - timedelta(days=RETENTION)
        kept = set(db.session.scalars(select(WebhookEvent.event_id)))
        assert kept == {row["event_id"] for row in stored if not _expired(row, cutoff)}
        assert report.deleted == sum(_expired(row, cutoff) for row in stored)
        assert report.cutoff == cutoff
        assert report.chunks <= len(stored) // chunk_size + 1
        audits = _expiry_audits()
        assert len(audits) == audits_before + 1
        assert audits[-1].organization_id is None
        assert audits[-1].outcome == "success"
        assert audits[-1].actor_type == "system"
        assert audits[-1].details == report.to_dict()
        assert verify_chain(db.session(), None).ok


def test_the_walk_stops_at_the_first_chunk_past_the_cutoff(app: Flask) -> None:
    """Rows younger than the cutoff are not scanned chunk by chunk to the end of the table."""
    with app.app_context():
        now = utcnow()
        _store([("applied", 40, 0)] * 3 + [("applied", 1, 0)] * 50, now)
        report = expire(db.session(), retention_days=RETENTION, cause=Cause.system("test"), now=now, chunk_size=2)
        assert report.deleted == 3
        assert report.chunks == 2
        assert db.session.scalar(select(func.count()).select_from(WebhookEvent)) == 50


@pytest.mark.parametrize(("days", "chunk_size"), [(0, 10), (-1, 10), (30, 0)])
def test_a_retention_under_a_day_is_refused(app: Flask, days: int, chunk_size: int) -> None:
    with app.app_context():
        _store([("applied", 400, 0)], utcnow())
        with pytest.raises(InvalidRetention):
            expire(db.session(), retention_days=days, cause=Cause.system("test"), chunk_size=chunk_size)
        assert db.session.scalar(select(func.count()).select_from(WebhookEvent)) == 1
        assert _expiry_audits() == []


def test_cli_expires_with_the_configured_retention_or_the_option(app: Flask) -> None:
    app.config["HATIDATA_INBOX_RETENTION_DAYS"] = 10
    runner = app.test_cli_runner()
    with app.app_context():
        stored = _store([("applied", 5, 0), ("ignored", 12, 0), ("failed", 90, 0), ("applied", 20, 0)], utcnow())
        ages = {row["event_id"]: row for row in stored}

    result = runner.invoke(args=["hatidata", "inbox", "expire"])
    assert result.exit_code == 0, result.output
    assert "2 event(s)" in result.output
    assert "10 days' retention" in result.output
    result = runner.invoke(args=["hatidata", "inbox", "expire", "--older-than-days", "1"])
    assert result.exit_code == 0, result.output
    assert "1 event(s)" in result.output
    result = runner.invoke(args=["hatidata", "inbox", "expire", "--older-than-days", "0"])
    assert result.exit_code == 2

    with app.app_context():
        remaining = list(db.session.scalars(select(WebhookEvent.event_id)))
        assert [ages[e]["status"] for e in remaining] == ["failed"]
        audits = _expiry_audits()
        assert [a.details["deleted"] for a in audits] == [2, 1]
        assert {a.actor_id for a in audits} == {"cli"}


def test_cli_names_a_bad_configured_retention(app: Flask) -> None:
    app.config["HATIDATA_INBOX_RETENTION_DAYS"] = 0
    result = app.test_cli_runner().invoke(args=["hatidata", "inbox", "expire"])
    assert result.exit_code == 1
    assert "HATIDATA_INBOX_RETENTION_DAYS=0" in result.output
