"""The audit log from the command line: verify names the first broken link, export streams; the
PostgreSQL trigger refuses UPDATE and DELETE; the CLI creates organizations and grants first admins."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, text, update
from sqlalchemy.exc import DBAPIError

from hatidata_auth.causes import Actor, Cause, RequestInfo
from hatidata_auth.extensions import db
from hatidata_auth.models import AuditEvent, Membership, Organization, User
from hatidata_auth.services import audit, audit_queries, reconcile
from tests.audit_support import tampering
from tests.support.dsync import mirror_organizations

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _org(app: Flask, name: str, events: int = 4) -> str:
    with app.app_context():
        org = Organization(name=name, domains=[f"{name.lower()}.test"])
        db.session.add(org)
        db.session.flush()
        for i in range(events):
            audit.record(db.session, action=f"test.action{i % 2}",
                         cause=Cause.by(Actor("user", "usr_1", "a@x.test"),
                                        RequestInfo("10.0.0.1", "pytest, \"quoted\"", f"req-{i}")),
                         organization_id=org.id, target_type="session", target_id=f"ses_{i}",
                         details={"i": i, "text": "comma, newline\nand ünïcode"}, at=T0 + timedelta(hours=i))
        db.session.commit()
        org_id = org.id
        db.session.remove()
    return org_id


def _cli(app: Flask, *args: str) -> Any:
    return app.test_cli_runner().invoke(args=["hatidata", *args])


def test_verify_reports_every_intact_chain(app: Flask) -> None:
    acme, globex = _org(app, "Acme"), _org(app, "Globex", events=2)
    result = _cli(app, "audit", "verify")
    assert result.exit_code == 0, result.output
    assert f"{acme}: ok, 4 events" in result.output
    assert f"{globex}: ok, 2 events" in result.output
    assert "2 chain(s) verified, 0 broken" in result.output


def _tamper(app: Flask, statement: Any) -> None:
    with app.app_context():
        with tampering(db.session):
            db.session.execute(statement)
        db.session.remove()


def test_verify_names_an_edited_event(app: Flask) -> None:
    org_id, other = _org(app, "Acme"), _org(app, "Globex")
    _tamper(app, update(AuditEvent).where(AuditEvent.organization_id == org_id, AuditEvent.seq == 3)
            .values(actor_email="someone-else@x.test"))
    result = _cli(app, "audit", "verify")
    assert result.exit_code == 1
    assert f"{org_id}: BROKEN at event #3: content does not match its hash (edited)" in result.output
    assert f"{other}: ok, 4 events" in result.output
    only = _cli(app, "audit", "verify", "--organization", "globex.test")
    assert only.exit_code == 0
    assert org_id not in only.output


def test_verify_names_a_deleted_event(app: Flask) -> None:
    org_id = _org(app, "Acme")
    with app.app_context():
        with tampering(db.session):
            db.session.execute(AuditEvent.__table__.delete().where(AuditEvent.organization_id == org_id,
                                                                   AuditEvent.seq == 2))
        db.session.remove()
    result = _cli(app, "audit", "verify", "--organization", org_id)
    assert result.exit_code == 1
    assert "BROKEN at event #2: expected event #2, found #3 (missing or reordered)" in result.output


def test_verify_names_reordered_events(app: Flask) -> None:
    org_id = _org(app, "Acme")
    where = (AuditEvent.organization_id == org_id)
    with app.app_context():
        with tampering(db.session):  # swap events #2 and #3 (through a free seq: (org, seq) is unique)
            db.session.execute(update(AuditEvent).where(where, AuditEvent.seq == 2).values(seq=1000))
            db.session.execute(update(AuditEvent).where(where, AuditEvent.seq == 3).values(seq=2))
            db.session.execute(update(AuditEvent).where(where, AuditEvent.seq == 1000).values(seq=3))
        db.session.remove()
    result = _cli(app, "audit", "verify", "--organization", org_id)
    assert result.exit_code == 1
    assert "BROKEN at event #2" in result.output


def test_verify_names_a_rechained_forgery(app: Flask) -> None:
    """An attacker who edits an event and recomputes its hash still breaks the next link."""
    org_id = _org(app, "Acme")
    with app.app_context():
        event = db.session.scalar(select(AuditEvent).where(AuditEvent.organization_id == org_id,
                                                           AuditEvent.seq == 2))
        assert event is not None
        event.outcome = "failure"
        forged = audit.chain_hash(event.prev_hash, event)
        db.session.expunge(event)
        with tampering(db.session):
            db.session.execute(update(AuditEvent).where(AuditEvent.id == event.id)
                               .values(outcome="failure", hash=forged))
        db.session.remove()
    result = _cli(app, "audit", "verify", "--organization", org_id)
    assert "BROKEN at event #3: prev_hash does not match the previous event" in result.output


def test_export_ndjson_for_a_time_range(app: Flask) -> None:
    org_id = _org(app, "Acme")
    result = _cli(app, "audit", "export", "--organization", org_id, "--since", "2026-01-01T01:00:00Z",
                  "--until", "2026-01-01T03:00:00")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [e["seq"] for e in lines] == [2, 3]
    assert lines[0]["actor"] == {"type": "user", "id": "usr_1", "email": "a@x.test"}
    assert lines[0]["details"]["text"] == "comma, newline\nand ünïcode"
    assert lines[1]["prev_hash"] == lines[0]["hash"]


def test_export_csv(app: Flask, tmp_path: Any) -> None:
    org_id = _org(app, "Acme")
    out = tmp_path / "audit.csv"
    result = _cli(app, "audit", "export", "--organization", "acme.test", "--format", "csv", "-o", str(out))
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert [int(r["seq"]) for r in rows] == [1, 2, 3, 4]
    assert rows[0]["organization_id"] == org_id
    assert rows[0]["user_agent"] == 'pytest, "quoted"'
    assert json.loads(rows[3]["details"]) == {"i": 3, "text": "comma, newline\nand ünïcode"}


def test_export_streams_in_batches(app: Flask) -> None:
    """The export is a generator over a cursor: the first line comes before the range is read."""
    org_id = _org(app, "Acme", events=7)
    with app.app_context():
        stream = audit_queries.iter_events(db.session, org_id, batch=2)
        first = next(stream)
        assert first.seq == 1
        assert next(stream).seq == 2
        assert first not in db.session  # exported rows are released as they go
        assert [e.seq for e in stream] == [3, 4, 5, 6, 7]
        db.session.remove()


@pytest.mark.postgres
def test_trigger_refuses_update_and_delete(app: Flask) -> None:
    org_id = _org(app, "Acme")
    with app.app_context(), db.engine.connect() as conn:
        for statement in (
            update(AuditEvent).where(AuditEvent.organization_id == org_id).values(outcome="failure"),
            AuditEvent.__table__.delete().where(AuditEvent.organization_id == org_id),
            text("TRUNCATE audit_events"),
        ):
            with pytest.raises(DBAPIError, match="append-only"):
                conn.execute(statement)
            conn.rollback()
        assert conn.execute(select(AuditEvent.id).where(AuditEvent.organization_id == org_id)).all()
    result = _cli(app, "audit", "verify", "--organization", org_id)
    assert result.exit_code == 0, result.output


def test_create_organization_and_grant_first_admin(app: Flask, emulator: Any) -> None:
    result = _cli(app, "create-organization", "Pied Piper", "--domain", "piedpiper.test")
    assert result.exit_code == 0, result.output
    with app.app_context():
        org = db.session.scalar(select(Organization).where(Organization.name == "Pied Piper"))
        assert org is not None
        assert org.domains == ["piedpiper.test"]
        assert org.workos_organization_id
        org_id = org.id
        db.session.remove()
    listed = _cli(app, "list-organizations")
    assert org_id in listed.output
    granted = _cli(app, "grant-admin", "piedpiper.test", "Richard@PiedPiper.test")
    assert granted.exit_code == 0, granted.output
    again = _cli(app, "grant-admin", org_id, "richard@piedpiper.test")
    assert again.exit_code == 0
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == "richard@piedpiper.test"))
        assert user is not None
        membership = db.session.scalar(select(Membership).where(Membership.user_id == user.id))
        assert membership is not None
        assert (membership.role, membership.status) == ("admin", "active")
        assert audit.count(db.session, org_id, "membership.admin_granted") == 1
        assert audit.count(db.session, org_id, "organization.created") == 1
        db.session.remove()
    missing = _cli(app, "grant-admin", "nowhere.test", "x@nowhere.test")
    assert missing.exit_code != 0
    assert "no organization" in missing.output


def test_rotate_secrets(app: Flask, emulator: Any) -> None:
    from cryptography.fernet import Fernet

    cookie = _cli(app, "rotate-secret", "cookie-key")
    assert cookie.exit_code == 0
    key = cookie.output.splitlines()[0].removeprefix("HATIDATA_COOKIE_KEY=")
    Fernet(key.encode())  # a valid Fernet key
    webhook = _cli(app, "rotate-secret", "webhook-secret", "--endpoint-url", "http://127.0.0.1:9/webhooks/workos")
    assert webhook.exit_code == 0, webhook.output
    assert "registered the new secret with the emulator" in webhook.output
    secret = webhook.output.strip().splitlines()[-2].removeprefix("WORKOS_WEBHOOK_SECRET=")
    assert secret.startswith("whsec_")


def test_grant_admin_warns_when_the_directory_provides_the_person(app: Flask, emulator: Any) -> None:
    """A new user found the CLI's admin of a directory member silently undone by the next resync: the overwrite
    rule keeps the directory's word, so the CLI says so (and says nothing for a person the directory lacks)."""
    with app.app_context():
        org = mirror_organizations(db.session, app.extensions["hatidata_workos"].client)["acme.test"]
        reconcile.full_resync(db.session, app.extensions["hatidata_workos"].client, organization_id=org.id)
        db.session.commit()
        db.session.remove()
    listed = _cli(app, "grant-admin", "acme.test", "dev@acme.test")
    assert listed.exit_code == 0, listed.output
    assert "warning: the organization's directory provides dev@acme.test" in listed.output
    outside = _cli(app, "grant-admin", "acme.test", "auditor@acme.test")
    assert outside.exit_code == 0, outside.output
    assert "warning" not in outside.output
