"""Export jobs under faults and abuse (docs/audit.md, "Export jobs: leases, limits, redaction"): a file past its
retention is gone by the clock, a worker's crash never leaves a job running, an organization's queue is bounded,
and a job's file shows each downloader only what that downloader may see."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from hatidata_auth import audit_runtime
from hatidata_auth.causes import Actor, Cause
from hatidata_auth.extensions import db
from hatidata_auth.models import AuditEvent, AuditExportJob, utcnow
from hatidata_auth.services import audit, audit_exports
from tests.api_support import Tenant, headers_for, make_tenant
from tests.audit_support import add_events
from tests.credential_support import bearer, new_key

SECRET = "session_01SECRETWORKOSSESSION"
READER_SCOPES = {"reveals": ["audit:read", "sessions:write"], "redacted": ["audit:read"]}


@pytest.fixture
def acme(app: Flask) -> Tenant:
    tenant = make_tenant(app, "Acme")
    add_events(app, tenant.id, 5)
    with app.app_context():
        audit.record(db.session, action="session.revoked", cause=Cause.by(Actor("user", tenant.users["admin"])),
                     organization_id=tenant.id, details={"workos_session_id": SECRET})
        for job in db.session.scalars(select(AuditExportJob).where(AuditExportJob.organization_id == tenant.id)):
            job.status = "done"  # make_tenant's own job: these tests count theirs
        db.session.commit()
        db.session.remove()
    return tenant


def _post(app: Flask, headers: dict[str, str], body: dict[str, Any] | None = None) -> Any:
    return app.test_client().post("/api/v1/audit-events/exports", json=body or {}, headers=headers)


def _set(app: Flask, job_id: str, **values: Any) -> None:
    with app.app_context():
        job = db.session.get(AuditExportJob, job_id)
        assert job is not None
        for key, value in values.items():
            setattr(job, key, value)
        db.session.commit()
        db.session.remove()


@pytest.mark.parametrize("maker", sorted(READER_SCOPES))
@pytest.mark.parametrize("reader", sorted(READER_SCOPES))
def test_a_job_file_reveals_session_ids_only_to_a_reader_who_may_see_them(
        app: Flask, acme: Tenant, maker: str, reader: str) -> None:
    _, maker_key = new_key(app, acme.id, acme.users["admin"], READER_SCOPES[maker])
    _, reader_key = new_key(app, acme.id, acme.users["admin"], READER_SCOPES[reader])
    job = _post(app, bearer(maker_key)).get_json()
    audit_runtime.run_once(app)
    download = app.test_client().get(f"/api/v1/audit-events/exports/{job['id']}/download", headers=bearer(reader_key))
    assert download.status_code == 200
    body = download.get_data(as_text=True)
    assert (SECRET in body) == (maker == "reveals" and reader == "reveals")
    lines = [json.loads(line) for line in body.splitlines()]
    assert lines[-1]["type"] == "trailer"  # the trailer is still last, every event still there
    assert lines[-1]["count"] == sum(1 for line in lines if "type" not in line)


@pytest.mark.parametrize("age", [timedelta(seconds=-1), timedelta(0), timedelta(seconds=1)])
def test_a_download_follows_the_retention_by_the_clock(app: Flask, acme: Tenant, age: timedelta) -> None:
    headers = headers_for(acme, "admin")
    job = _post(app, headers).get_json()
    audit_runtime.run_once(app)
    _set(app, job["id"], expires_at=utcnow() - age)  # no worker pass since
    answer = app.test_client().get(f"/api/v1/audit-events/exports/{job['id']}/download", headers=headers)
    assert answer.status_code == (200 if age < timedelta(0) else 410)
    if answer.status_code == 410:
        assert answer.get_json()["error"]["code"] == "export_expired"
    status = app.test_client().get(f"/api/v1/audit-events/exports/{job['id']}", headers=headers).get_json()
    assert status["status"] == ("done" if age < timedelta(0) else "expired")


def test_a_running_job_is_retaken_only_past_its_lease(app: Flask, acme: Tenant) -> None:
    job = _post(app, headers_for(acme, "admin")).get_json()
    now = utcnow()
    _set(app, job["id"], status="running", claim="clm_dead", lease_until=now + timedelta(minutes=5))
    audit_runtime.run_once(app, now=now)
    with app.app_context():  # its worker may still be at it
        assert db.session.get(AuditExportJob, job["id"]).status == "running"  # type: ignore[union-attr]
        db.session.remove()
    audit_runtime.run_once(app, now=now + timedelta(minutes=6))
    with app.app_context():
        done = db.session.get(AuditExportJob, job["id"])
        assert done is not None
        assert done.status == "done"
        assert done.lease_until is None
        db.session.remove()


def test_a_job_is_claimed_once(app: Flask, acme: Tenant, tmp_path: Path) -> None:
    job = _post(app, headers_for(acme, "admin")).get_json()
    with app.app_context():
        first = audit_exports.run_job(db.session(), job["id"], tmp_path, retention=60)
        second = audit_exports.run_job(db.session(), job["id"], tmp_path, retention=60)
        db.session.remove()
    assert first is not None
    assert first.status == "done"
    assert second is None


def test_an_unexpected_error_fails_the_job_and_removes_its_temporary_file(
        app: Flask, acme: Tenant, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Iterator[str]:
        yield "{}\n"
        raise RuntimeError("the database went away")

    monkeypatch.setattr(audit_exports, "export_lines", broken)
    app.config["HATIDATA_AUDIT_EXPORT_DIR"] = str(tmp_path)
    headers = headers_for(acme, "admin")
    job = _post(app, headers).get_json()
    audit_runtime.run_once(app)
    status = app.test_client().get(f"/api/v1/audit-events/exports/{job['id']}", headers=headers).get_json()
    assert status["status"] == "failed"
    assert status["error"] == "RuntimeError: the database went away"
    assert list(tmp_path.rglob("*.tmp")) == []


def test_an_organizations_queue_is_bounded_and_a_repeat_is_the_same_job(app: Flask, acme: Tenant) -> None:
    app.config["HATIDATA_AUDIT_EXPORT_MAX_JOBS"] = 3
    headers = headers_for(acme, "admin")
    start = utcnow() - timedelta(days=30)
    ranges = [{"since": (start + timedelta(days=d)).isoformat()} for d in range(4)]
    first = _post(app, headers, ranges[0])
    assert first.status_code == 202
    again = _post(app, headers, ranges[0])
    assert (again.status_code, again.get_json()["id"]) == (200, first.get_json()["id"])
    assert [_post(app, headers, r).status_code for r in ranges[1:3]] == [202, 202]
    refused = _post(app, headers, ranges[3])
    assert refused.status_code == 429
    assert refused.get_json()["error"]["code"] == "too_many_export_jobs"
    other = make_tenant(app, "Globex")  # the limit is per organization
    assert _post(app, headers_for(other, "admin"), ranges[3]).status_code == 202
    with app.app_context():
        requested = db.session.scalar(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.organization_id == acme.id, AuditEvent.action == "audit.export_requested"))
        db.session.remove()
    assert requested == 3
    audit_runtime.run_once(app)  # done jobs no longer count
    assert _post(app, headers, ranges[3]).status_code == 202
