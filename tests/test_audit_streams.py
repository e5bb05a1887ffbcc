"""Audit streaming (issue #17, item 2): every sink kind delivers the chain with its signed checkpoints to a local
fake speaking its protocol over TLS; a sink killed mid-stream and restarted ends with every event, in order after
de-duplication, and ``verify-stream`` passes (an altered event fails naming it); failures back off with jitter up
to ``dead_letter`` and ``retry`` resumes from the cursor. Both backends."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select
from workos.webhooks import Webhooks

from hatidata_auth import audit_runtime
from hatidata_auth.extensions import db
from hatidata_auth.models import AuditEvent
from hatidata_auth.services import audit_sinks
from hatidata_auth.services.audit_sink_wire import signature_header
from tests.api_support import Tenant, headers_for, make_tenant
from tests.audit_support import add_events
from tests.support.sink_fakes import Certificates, FakeHttpsSink, FakeSyslogSink, make_certificates

T0 = datetime(2026, 6, 1, tzinfo=UTC)
STREAMS = "/api/v1/organization/audit-streams"
KINDS = ("https", "splunk_hec", "datadog", "syslog_tls")


@pytest.fixture
def certs(tmp_path: Path) -> Certificates:
    return make_certificates(tmp_path / "pki")


@pytest.fixture
def app_config(app_config: dict[str, Any], certs: Certificates) -> dict[str, Any]:
    return {**app_config, "HATIDATA_AUDIT_STREAM_CA_BUNDLE": certs.ca_file, "HATIDATA_AUDIT_CHECKPOINT_EVERY": 10,
            "HATIDATA_AUDIT_STREAM_BATCH": 7, "HATIDATA_AUDIT_STREAM_TIMEOUT": 5.0}


@pytest.fixture
def https_sink(certs: Certificates) -> Iterator[FakeHttpsSink]:
    sink = FakeHttpsSink(certs).start()
    yield sink
    sink.stop()


@pytest.fixture
def syslog_sink(certs: Certificates) -> Iterator[FakeSyslogSink]:
    sink = FakeSyslogSink(certs).start()
    yield sink
    sink.stop()


@pytest.fixture
def acme(app: Flask) -> Tenant:
    tenant = make_tenant(app, "Acme")
    add_events(app, tenant.id, 40)
    return tenant


def _sink_body(kind: str, https: FakeHttpsSink, syslog: FakeSyslogSink) -> dict[str, Any]:
    return {"https": {"endpoint": f"{https.url}/webhook", "secret": https.WEBHOOK_SECRET},
            "splunk_hec": {"endpoint": https.url, "secret": https.HEC_TOKEN},
            "datadog": {"endpoint": https.url, "secret": https.DD_KEY},
            "syslog_tls": {"endpoint": syslog.endpoint}}[kind]


def _create(app: Flask, tenant: Tenant, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    response = app.test_client().post(STREAMS, json={"name": f"{kind} sink", "kind": kind, **body},
                                      headers=headers_for(tenant, "admin"))
    assert response.status_code == 201, response.get_json()
    return dict(response.get_json())


def _stream(app: Flask, tenant: Tenant, stream_id: str) -> dict[str, Any]:
    response = app.test_client().get(f"{STREAMS}/{stream_id}", headers=headers_for(tenant, "admin"))
    assert response.status_code == 200
    return dict(response.get_json())


def _created_streams(app: Flask, tenant: Tenant) -> list[dict[str, Any]]:
    """The tenant's sinks but the paused one every test tenant has."""
    listed = app.test_client().get(STREAMS, headers=headers_for(tenant, "admin")).get_json()["data"]
    return [s for s in listed if s["id"] != tenant.ids["audit_stream"]]


def _head(app: Flask, org_id: str) -> int:
    with app.app_context():
        seq = db.session.scalar(select(AuditEvent.seq).where(AuditEvent.organization_id == org_id)
                                .order_by(AuditEvent.seq.desc()).limit(1))
        db.session.remove()
    return int(seq or 0)


def _verify(app: Flask, tmp_path: Path, lines: list[str]) -> Any:
    path = tmp_path / "received.ndjson"
    path.write_text("".join(line + "\n" for line in lines))
    return app.test_cli_runner().invoke(args=["hatidata", "audit", "verify-stream", str(path)])


@pytest.mark.parametrize("kind", KINDS)
def test_a_sink_killed_mid_stream_and_restarted_ends_with_every_event_and_verifies(
        app: Flask, acme: Tenant, https_sink: FakeHttpsSink, syslog_sink: FakeSyslogSink, tmp_path: Path,
        kind: str) -> None:
    fake = syslog_sink if kind == "syslog_tls" else https_sink
    stream = _create(app, acme, kind, _sink_body(kind, https_sink, syslog_sink))
    fake.die_after = 20  # dies inside the third batch of 7 (+ checkpoint lines)
    audit_runtime.run_once(app, now=T0)
    after_death = _stream(app, acme, stream["id"])
    assert after_death["state"] == "retrying"
    assert 0 < after_death["cursor"] < _head(app, acme.id)
    assert after_death["last_error"]
    assert len(fake.lines) == 20
    fake.stop()  # killed: the next attempt finds nobody
    audit_runtime.run_once(app, now=T0 + timedelta(hours=2))
    assert _stream(app, acme, stream["id"])["attempts"] == 2
    fake.die_after = None
    fake.start()  # restarted on the same port
    add_events(app, acme.id, 15, start=40)  # traffic goes on meanwhile
    for hour in range(3, 8):  # backoff (jittered) is under an hour at these attempts
        audit_runtime.run_once(app, now=T0 + timedelta(hours=hour))
    final = _stream(app, acme, stream["id"])
    head = _head(app, acme.id)
    assert (final["state"], final["cursor"], final["attempts"], final["last_error"]) == ("active", head, 0, None)
    records = fake.records()
    events = [r for r in records if "type" not in r]
    seen: dict[int, dict[str, Any]] = {}
    for event in events:  # de-duplicate by seq: a repeat is identical
        assert seen.setdefault(event["seq"], event) == event
    assert list(seen) == list(range(1, head + 1))  # every event, in order after de-duplication
    assert len(events) > head  # the cut batch was delivered again (at least once)
    checkpoints = [r for r in records if r.get("type") == "checkpoint"]
    assert {c["seq"] for c in checkpoints} >= {10, 20, 30, 40, 50}
    result = _verify(app, tmp_path, fake.lines)
    assert result.exit_code == 0, result.output
    assert f"{head} events" in result.output
    victim_at = next(i for i, r in enumerate(records) if r.get("seq") == 23 and "type" not in r)
    altered = json.loads(fake.lines[victim_at])
    altered["action"] = "forged.action"
    lines = [*fake.lines[:victim_at], json.dumps(altered), *fake.lines[victim_at + 1:]]
    result = _verify(app, tmp_path, lines)
    assert result.exit_code == 1
    assert f"event #23 ({altered['id']})" in result.output


def test_wire_formats_are_each_protocols(app: Flask, acme: Tenant, https_sink: FakeHttpsSink,
                                         syslog_sink: FakeSyslogSink) -> None:
    for kind in KINDS:
        _create(app, acme, kind, _sink_body(kind, https_sink, syslog_sink))
    audit_runtime.run_once(app, now=T0)
    by_path: dict[str, list[dict[str, Any]]] = {}
    for request in https_sink.requests:
        by_path.setdefault(request["path"], []).append(request)
    webhook = by_path["/webhook"][0]
    assert webhook["headers"]["Content-Type"] == "application/x-ndjson"
    header = webhook["headers"]["HatiData-Signature"]
    Webhooks.verify_header(None, event_body=webhook["body"], event_signature=header,  # type: ignore[arg-type]
                           secret=https_sink.WEBHOOK_SECRET, tolerance=180)
    with pytest.raises(ValueError, match="Signature hash does not match"):
        Webhooks.verify_header(None, event_body=webhook["body"] + b" ", event_signature=header,  # type: ignore[arg-type]
                               secret=https_sink.WEBHOOK_SECRET, tolerance=180)
    hec = by_path["/services/collector/event"][0]
    assert hec["headers"]["Authorization"] == f"Splunk {https_sink.HEC_TOKEN}"
    first = json.JSONDecoder().raw_decode(hec["body"].decode())[0]
    assert set(first) == {"event", "time", "sourcetype", "source"}
    assert first["event"]["seq"] == 1
    dd = json.loads(by_path["/api/v2/logs"][0]["body"])
    assert (dd[0]["ddsource"], json.loads(dd[0]["message"])["seq"]) == ("hatidata", 1)
    assert by_path["/api/v2/logs"][0]["headers"]["DD-API-KEY"] == https_sink.DD_KEY
    pri, stamp, _host, app_name, procid, msgid, sd = syslog_sink.frames[0]
    assert (pri, app_name, procid, msgid, sd) == ("110", "hatidata-auth", "-", "event", "-")
    assert stamp.endswith("Z")
    assert {"event", "checkpoint"} == {frame[5] for frame in syslog_sink.frames}
    assert len({r["seq"] for r in syslog_sink.records() if "type" not in r}) == _head(app, acme.id)


def test_the_signature_is_workos_s_scheme() -> None:
    """The SDK's own check accepts it (``t`` in milliseconds, ``", "`` between the parts)."""
    now_ms = int(time.time() * 1000)
    header = signature_header("whsec_x", b'{"a":1}\n', now_ms)
    assert header.startswith(f"t={now_ms}, v1=")
    Webhooks.verify_header(None, event_body=b'{"a":1}\n', event_signature=header,  # type: ignore[arg-type]
                           secret="whsec_x", tolerance=180)
    with pytest.raises(ValueError, match="Signature hash does not match"):
        Webhooks.verify_header(None, event_body=b'{"a":1}\n', event_signature=header,  # type: ignore[arg-type]
                               secret="whsec_y", tolerance=180)


def test_a_wrong_credential_is_a_failed_attempt_never_a_delivery(app: Flask, acme: Tenant,
                                                                 https_sink: FakeHttpsSink) -> None:
    for kind, endpoint in (("https", f"{https_sink.url}/webhook"), ("splunk_hec", https_sink.url),
                           ("datadog", https_sink.url)):
        _create(app, acme, kind, {"endpoint": endpoint, "secret": "wrong-secret-0123456789"})
    audit_runtime.run_once(app, now=T0)
    streams = _created_streams(app, acme)
    assert {(s["kind"], s["state"], s["cursor"], s["last_error"]) for s in streams} == {
        ("https", "retrying", 0, "HTTP 401"), ("splunk_hec", "retrying", 0, "HTTP 401 (HEC code 4)"),
        ("datadog", "retrying", 0, "HTTP 403")}
    assert https_sink.lines == []


def test_an_untrusted_certificate_is_refused(app: Flask, acme: Tenant, https_sink: FakeHttpsSink,
                                             syslog_sink: FakeSyslogSink, tmp_path: Path) -> None:
    app.config["HATIDATA_AUDIT_STREAM_CA_BUNDLE"] = make_certificates(tmp_path / "other").ca_file
    for kind in ("https", "syslog_tls"):
        _create(app, acme, kind, _sink_body(kind, https_sink, syslog_sink))
    audit_runtime.run_once(app, now=T0)
    streams = _created_streams(app, acme)
    assert all(s["state"] == "retrying" and "CERTIFICATE_VERIFY_FAILED" in s["last_error"] for s in streams)
    assert (https_sink.lines, syslog_sink.lines) == ([], [])


def test_backoff_then_dead_letter_then_retry_resumes_from_the_cursor(app: Flask, acme: Tenant,
                                                                     https_sink: FakeHttpsSink) -> None:
    app.config["HATIDATA_AUDIT_STREAM_MAX_ATTEMPTS"] = 3
    app.config["HATIDATA_AUDIT_STREAM_BACKOFF"] = 10.0
    stream = _create(app, acme, "datadog", {"endpoint": https_sink.url, "secret": https_sink.DD_KEY})
    https_sink.die_after = 14  # one batch confirmed, the second cut, then the receiver fails
    # A failure is timed at the pass's *now* plus the real seconds the pass took to reach it (a loaded machine's
    # milliseconds), so each delay is allowed what its pass took.
    started = time.monotonic()
    audit_runtime.run_once(app, now=T0)
    took = [time.monotonic() - started]
    https_sink.die_after, https_sink.answer_status = None, 503
    now, delays = T0, []
    for _ in range(2):
        state = _stream(app, acme, stream["id"])
        assert state["state"] == "retrying"
        due = datetime.fromisoformat(state["next_attempt_at"])
        delays.append((due - now).total_seconds())
        before = len(https_sink.requests)
        audit_runtime.run_once(app, now=due - timedelta(seconds=1))  # not yet due: untouched
        assert len(https_sink.requests) == before
        now = due
        started = time.monotonic()
        audit_runtime.run_once(app, now=now)
        took.append(time.monotonic() - started)
    assert 5 <= delays[0] < 10 + took[0]  # 10 s, jitter in [0.5, 1)
    assert 10 <= delays[1] < 20 + took[1]  # doubled
    dead = _stream(app, acme, stream["id"])
    assert (dead["state"], dead["attempts"], dead["next_attempt_at"], dead["last_error"]) == \
        ("dead_letter", 3, None, "HTTP 503")
    cursor = dead["cursor"]
    assert cursor > 0
    with app.app_context():
        rows = db.session.scalars(select(AuditEvent).where(AuditEvent.organization_id == acme.id,
                                                           AuditEvent.action == "audit_stream.dead_lettered")).all()
        assert [(r.target_id, r.outcome, r.details["attempts"]) for r in rows] == [(stream["id"], "failure", 3)]
        db.session.remove()
    alert = _dead_letter_alerts(app, acme)
    assert [(a["target_id"], a["details"]["attempts"]) for a in alert] == [(stream["id"], 3)]  # the admin is told
    before = len(https_sink.requests)
    audit_runtime.run_once(app, now=now + timedelta(days=1))  # dead letters wait for an admin
    assert len(https_sink.requests) == before
    https_sink.answer_status = None
    retried = app.test_client().post(f"{STREAMS}/{stream['id']}/retry", headers=headers_for(acme, "admin"))
    assert retried.status_code == 200
    assert (retried.get_json()["state"], retried.get_json()["cursor"]) == ("active", cursor)
    audit_runtime.run_once(app, now=now + timedelta(days=1))
    final = _stream(app, acme, stream["id"])
    assert (final["state"], final["cursor"]) == ("active", _head(app, acme.id))
    seqs = [r["seq"] for r in https_sink.records() if "type" not in r]
    assert list(dict.fromkeys(seqs)) == list(range(1, final["cursor"] + 1))
    assert _dead_letter_alerts(app, acme) == []  # resolved by the first delivery after the retry


def _dead_letter_alerts(app: Flask, tenant: Tenant) -> list[dict[str, Any]]:
    answer = app.test_client().get("/api/v1/organization/alerts", headers=headers_for(tenant, "admin"))
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return [a for a in answer.get_json()["data"] if a["kind"] == "audit_stream_dead_letter"]


@given(attempts=st.integers(1, 60), jitter=st.floats(0, 0.999999))
def test_backoff_is_exponential_capped_and_jittered(attempts: int, jitter: float) -> None:
    policy = audit_sinks.Policy(batch=500, max_attempts=8, backoff=5.0, backoff_max=3600.0, timeout=10.0,
                                lease=300.0, allow_loopback=False, ca_bundle=None)
    delay = audit_sinks.backoff_delay(attempts, policy, lambda: jitter)
    ceiling = min(3600.0, 5.0 * 2 ** (attempts - 1))
    assert ceiling / 2 <= delay < ceiling


def test_two_workers_never_deliver_one_sink_at_once(app: Flask, acme: Tenant, https_sink: FakeHttpsSink) -> None:
    stream = _create(app, acme, "https", {"endpoint": f"{https_sink.url}/webhook", "secret": https_sink.WEBHOOK_SECRET})
    with app.app_context():
        first = audit_sinks._claim(db.session, stream["id"], T0, 300)
        second = audit_sinks._claim(db.session, stream["id"], T0, 300)
        after_lease = audit_sinks._claim(db.session, stream["id"], T0 + timedelta(seconds=301), 300)
        db.session.remove()
    assert first is not None
    assert second is None
    assert after_lease not in (None, first)


def test_delivery_metrics_carry_kind_and_outcome_only(app: Flask, acme: Tenant,
                                                      https_sink: FakeHttpsSink) -> None:
    _create(app, acme, "splunk_hec", {"endpoint": https_sink.url, "secret": https_sink.HEC_TOKEN})
    audit_runtime.run_once(app, now=T0)
    body = app.test_client().get("/metrics").get_data(as_text=True)
    lines = [line for line in body.splitlines() if line.startswith("hatidata_audit_stream")]
    assert any(line.startswith('hatidata_audit_stream_deliveries_total{kind="splunk_hec",outcome="delivered"}')
               for line in lines)
    assert any(line.startswith("hatidata_audit_stream_lag_seconds_bucket") for line in lines)
    assert not any(acme.id in line or "ast_" in line for line in lines)
