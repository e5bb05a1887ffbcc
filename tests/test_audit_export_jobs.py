"""The audit log at scale (issue #17, item 3): a chain larger than one request's budget exports and verifies
through the API (continuation cursors, export jobs ending with a signed trailer), jobs are per organization and
expire, and every filter the API offers reads a composite index (checked with the database's own plan)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import text

from hatidata_auth import audit_runtime
from hatidata_auth.api.audit_api import AuditListArgs
from hatidata_auth.api.common import PageArgsSchema
from hatidata_auth.extensions import db
from hatidata_auth.models import utcnow
from hatidata_auth.services import audit, audit_queries
from tests.api_support import Tenant, headers_for, make_tenant
from tests.audit_support import add_events

EVENTS = 1200  # with a zero budget a request covers one batch of 500: more than two requests' worth


@pytest.fixture
def acme(app: Flask) -> Tenant:
    tenant = make_tenant(app, "Acme")
    add_events(app, tenant.id, EVENTS)
    return tenant


@pytest.fixture
def tight(app: Flask) -> None:
    """A request budget no export or walk of this chain fits in (checked every 500 events: no sleeps)."""
    app.config["HATIDATA_AUDIT_REQUEST_BUDGET"] = 0
    app.config["HATIDATA_AUDIT_CHECKPOINT_EVERY"] = 100


def _total(app: Flask, org_id: str) -> int:
    with app.app_context():
        return audit.count(db.session, org_id)


def _lines(body: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in body.splitlines() if line.strip()]


def _verify_stream(app: Flask, path: Path) -> Any:
    return app.test_cli_runner().invoke(args=["hatidata", "audit", "verify-stream", str(path)])


def test_a_chain_larger_than_one_request_exports_and_verifies_through_the_api(
        app: Flask, acme: Tenant, tight: None, tmp_path: Path) -> None:
    client, headers = app.test_client(), headers_for(acme, "admin")
    total = _total(app, acme.id)
    # The synchronous export stops at the budget and says so in its trailer; its cursor continues.
    parts, cursor, received = 0, None, []
    while True:
        answer = client.get("/api/v1/audit-events/export" + (f"?cursor={cursor}" if cursor else ""),
                            headers=headers)
        assert answer.status_code == 200
        *events, trailer = _lines(answer.get_data(as_text=True))
        assert trailer["type"] == "trailer"
        assert trailer["count"] == len(events)
        assert trailer["final_hash"] == events[-1]["hash"]
        received += events
        parts += 1
        if trailer["complete"]:
            break
        cursor = _cursor(trailer["next_cursor"])
    assert parts == 3
    assert [e["seq"] for e in received] == list(range(1, total + 1))
    # The full walk does the same through verify's continuation.
    walks, checked, query = 0, 0, "?full=true"
    while True:
        report = client.get(f"/api/v1/audit-events/verify{query}", headers=headers).get_json()
        assert report["ok"], report
        walks, checked = walks + 1, checked + report["checked"]
        if report["complete"]:
            break
        query = f"?full=true&cursor={report['next_cursor']}"
    assert (walks, checked) == (3, total)
    # A job writes the whole chain to a file that ends with a signed trailer.
    started = client.post("/api/v1/audit-events/exports", json={}, headers=headers)
    assert started.status_code == 202, started.get_json()
    job = started.get_json()
    assert job["status"] == "pending"
    assert client.get(f"/api/v1/audit-events/exports/{job['id']}/download", headers=headers).status_code == 409
    assert audit_runtime.run_once(app)["jobs"] >= 1  # this one and any the fixture left pending
    status = client.get(f"/api/v1/audit-events/exports/{job['id']}", headers=headers).get_json()
    total = _total(app, acme.id)  # the request is audited (audit.export_requested)
    assert (status["status"], status["count"]) == ("done", total)
    download = client.get(f"/api/v1/audit-events/exports/{job['id']}/download", headers=headers)
    assert download.status_code == 200
    assert download.mimetype == "application/x-ndjson"
    records = _lines(download.get_data(as_text=True))
    trailer = records[-1]
    assert (trailer["type"], trailer["count"], trailer["complete"]) == ("trailer", total, True)
    assert trailer["checkpoint"]["seq"] == total  # signed at the head the job exported
    assert trailer["final_hash"] == status["final_hash"] == trailer["checkpoint"]["hash"]
    assert [r.get("type") for r in records].count("checkpoint") == total // 100 + (total % 100 > 0)
    path = tmp_path / "job.ndjson"
    path.write_text(download.get_data(as_text=True))
    result = _verify_stream(app, path)
    assert result.exit_code == 0, result.output
    assert f"({total} events" in result.output


def _cursor(value: int) -> str:
    from hatidata_auth.api.common import encode_cursor

    return encode_cursor(value)


def test_the_row_budget_pages_ndjson_and_refuses_a_large_csv(app: Flask, acme: Tenant) -> None:
    app.config["HATIDATA_AUDIT_EXPORT_MAX_ROWS"] = 100
    client, headers = app.test_client(), headers_for(acme, "admin")
    *events, trailer = _lines(client.get("/api/v1/audit-events/export", headers=headers).get_data(as_text=True))
    assert len(events) == 100
    assert (trailer["complete"], trailer["next_cursor"]) == (False, events[-1]["seq"])
    refused = client.get("/api/v1/audit-events/export?format=csv", headers=headers)
    assert refused.status_code == 413
    assert refused.get_json()["error"]["code"] == "export_too_large"
    app.config["HATIDATA_AUDIT_EXPORT_MAX_ROWS"] = 10 * EVENTS
    assert client.get("/api/v1/audit-events/export?format=csv", headers=headers).status_code == 200


def test_another_organizations_job_is_not_found(app: Flask, acme: Tenant) -> None:
    globex = make_tenant(app, "Globex")
    client = app.test_client()
    job = client.post("/api/v1/audit-events/exports", json={}, headers=headers_for(acme, "admin")).get_json()
    audit_runtime.run_once(app)
    for path in (f"/api/v1/audit-events/exports/{job['id']}", f"/api/v1/audit-events/exports/{job['id']}/download"):
        assert client.get(path, headers=headers_for(globex, "admin")).status_code == 404
        assert client.get(path, headers=headers_for(acme, "admin")).status_code == 200
        assert client.get(path, headers=headers_for(acme, "developer")).status_code == 403
    assert client.post("/api/v1/audit-events/exports", json={},
                       headers=headers_for(acme, "developer")).status_code == 403


def test_a_job_exports_its_time_range_and_its_file_expires(app: Flask, acme: Tenant) -> None:
    client, headers = app.test_client(), headers_for(acme, "admin")
    job = client.post("/api/v1/audit-events/exports", headers=headers,
                      json={"since": "2026-01-01T00:00:10Z", "until": "2026-01-01T00:00:20Z"}).get_json()
    audit_runtime.run_once(app)
    records = _lines(client.get(f"/api/v1/audit-events/exports/{job['id']}/download",
                                headers=headers).get_data(as_text=True))
    assert records[-1]["count"] == 10
    assert [r["details"]["i"] for r in records if "type" not in r] == list(range(10, 20))
    retention = int(app.config["HATIDATA_AUDIT_EXPORT_RETENTION"])
    assert audit_runtime.run_once(app, now=utcnow() + timedelta(seconds=retention - 60))["expired"] == 0
    assert audit_runtime.run_once(app, now=utcnow() + timedelta(seconds=retention + 60))["expired"] >= 1
    gone = client.get(f"/api/v1/audit-events/exports/{job['id']}/download", headers=headers)
    assert gone.status_code == 410
    assert client.get(f"/api/v1/audit-events/exports/{job['id']}", headers=headers).get_json()["status"] == "expired"


# --- indexes --------------------------------------------------------------------------------------------------

EXPECTED_INDEX = {
    "actor_id": "ix_audit_org_actor_id_seq",
    "actor_type": "ix_audit_org_actor_type_seq",
    "actor_email": "ix_audit_org_actor_email_seq",
    "action": "ix_audit_org_action_seq",
    "target_type": "ix_audit_org_target_type_seq",
    "target_id": "ix_audit_org_target_id_seq",
    "outcome": "ix_audit_org_outcome_seq",
}
RANGE_INDEXES = ("ix_audit_org_time", "ix_audit_org_seq")


def test_every_filter_of_the_api_is_known_here() -> None:
    offered = set(AuditListArgs().fields) - set(PageArgsSchema().fields)
    assert offered == set(EXPECTED_INDEX) | {"since", "until"}


def _plan(app: Flask, org_id: str, flt: audit_queries.AuditFilter) -> str:
    with app.app_context():
        session = db.session
        dialect = session.get_bind().dialect
        query = audit_queries.filtered(org_id, flt).order_by(audit_queries.AuditEvent.seq.desc()).limit(51)
        sql = str(query.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
        if dialect.name == "postgresql":
            session.execute(text("SET LOCAL enable_seqscan = off"))
            rows = session.execute(text("EXPLAIN " + sql)).scalars().all()
        else:
            rows = [row[-1] for row in session.execute(text("EXPLAIN QUERY PLAN " + sql))]
        session.rollback()
        return "\n".join(str(r) for r in rows)


def test_every_filter_reads_its_composite_index(app: Flask, acme: Tenant) -> None:
    with app.app_context():
        db.session.execute(text("ANALYZE audit_events"))  # its own table only: statistics outlive the test
        db.session.commit()
    values = {"actor_id": "usr_3", "actor_type": "api_key", "actor_email": "u3@x.test", "action": "test.action1",
              "target_type": "session", "target_id": "ses_4", "outcome": "failure"}
    for name, index in EXPECTED_INDEX.items():
        plan = _plan(app, acme.id, audit_queries.AuditFilter(**{name: values[name]}))
        assert index in plan, f"{name}: {plan}"
        assert "Seq Scan" not in plan
    both = _plan(app, acme.id, audit_queries.AuditFilter(target_type="session", target_id="ses_4"))
    assert "ix_audit_org_target_id_seq" in both or "ix_audit_org_target_type_seq" in both, both
    start = utcnow() - timedelta(days=400)
    ranged = _plan(app, acme.id, audit_queries.AuditFilter(since=start, until=start + timedelta(days=1)))
    assert any(index in ranged for index in RANGE_INDEXES), ranged
    assert "Seq Scan" not in ranged


def test_a_job_that_cannot_write_its_file_fails_and_says_so(app: Flask, acme: Tenant, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    app.config["HATIDATA_AUDIT_EXPORT_DIR"] = str(blocker)
    client, headers = app.test_client(), headers_for(acme, "admin")
    job = client.post("/api/v1/audit-events/exports", json={}, headers=headers).get_json()
    audit_runtime.run_once(app)
    status = client.get(f"/api/v1/audit-events/exports/{job['id']}", headers=headers).get_json()
    assert status["status"] == "failed"
    assert status["error"].startswith(("NotADirectoryError", "FileExistsError"))
    refused = client.get(f"/api/v1/audit-events/exports/{job['id']}/download", headers=headers)
    assert refused.status_code == 409
    assert refused.get_json()["error"]["details"] == {"status": "failed"}
