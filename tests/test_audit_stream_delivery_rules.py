"""Audit stream delivery rules over every sink kind (docs/audit.md, "Delivery, retries and states"): any exception
of one sink's delivery fails that sink only and never ends the worker; a sink is never due for another worker
while a batch is in flight; a checkpoint signed after its events were delivered is still streamed; an admin's
pause during a batch stays. Both backends."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from hatidata_auth import audit_runtime
from hatidata_auth.extensions import db
from hatidata_auth.services import audit_sinks
from hatidata_auth.services.audit_sink_wire import DeliveryFailed
from tests.api_support import Tenant, headers_for, make_tenant
from tests.audit_support import add_events
from tests.support.sink_fakes import Certificates, FakeHttpsSink, FakeSyslogSink

# the sink suite's certificate fixture, kinds and constants, shared rather than copied
from tests.test_audit_streams import KINDS, STREAMS, T0, certs  # noqa: F401


@pytest.fixture
def app_config(app_config: dict[str, Any], certs: Certificates) -> dict[str, Any]:  # noqa: F811
    """The sink suite's settings, with checkpoints only once a minute (a quiet chain's)."""
    return {**app_config, "HATIDATA_AUDIT_STREAM_CA_BUNDLE": certs.ca_file, "HATIDATA_AUDIT_CHECKPOINT_EVERY": 1000,
            "HATIDATA_AUDIT_CHECKPOINT_INTERVAL": 60, "HATIDATA_AUDIT_STREAM_BATCH": 7,
            "HATIDATA_AUDIT_STREAM_TIMEOUT": 5.0}


@pytest.fixture
def fakes(certs: Certificates) -> Iterator[tuple[FakeHttpsSink, FakeSyslogSink]]:  # noqa: F811
    https, syslog = FakeHttpsSink(certs).start(), FakeSyslogSink(certs).start()
    yield https, syslog
    https.stop()
    syslog.stop()


def _create(app: Flask, tenant: Tenant, kind: str, fakes: tuple[FakeHttpsSink, FakeSyslogSink]) -> str:
    https, syslog = fakes
    body = {"https": {"endpoint": f"{https.url}/webhook", "secret": https.WEBHOOK_SECRET},
            "splunk_hec": {"endpoint": https.url, "secret": https.HEC_TOKEN},
            "datadog": {"endpoint": https.url, "secret": https.DD_KEY},
            "syslog_tls": {"endpoint": syslog.endpoint}}[kind]
    response = app.test_client().post(STREAMS, json={"name": f"{kind} sink", "kind": kind, **body},
                                      headers=headers_for(tenant, "admin"))
    assert response.status_code == 201, response.get_json()
    return str(response.get_json()["id"])


def _shown(app: Flask, tenant: Tenant, stream_id: str) -> dict[str, Any]:
    return dict(app.test_client().get(f"{STREAMS}/{stream_id}", headers=headers_for(tenant, "admin")).get_json())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("raised", [RecursionError("deep"), KeyError("code"), TypeError("x"), MemoryError()])
def test_any_exception_of_one_sinks_delivery_fails_that_sink_only(
        app: Flask, fakes: tuple[FakeHttpsSink, FakeSyslogSink], monkeypatch: pytest.MonkeyPatch, kind: str,
        raised: Exception) -> None:
    hostile, other = make_tenant(app, "Hostile"), make_tenant(app, "Other")
    add_events(app, hostile.id, 5)
    add_events(app, other.id, 5)
    broken, healthy = _create(app, hostile, kind, fakes), _create(app, other, kind, fakes)
    real = audit_sinks.deliver

    def deliver(target: Any, lines: Any, **kwargs: Any) -> None:
        if target.organization_id == hostile.id:
            raise raised
        real(target, lines, **kwargs)

    monkeypatch.setattr(audit_sinks, "deliver", deliver)
    audit_runtime.run_once(app, now=T0)
    failed, delivered = _shown(app, hostile, broken), _shown(app, other, healthy)
    assert (failed["state"], failed["attempts"]) == ("retrying", 1)
    assert failed["last_error"] == f"{type(raised).__name__} while delivering"  # never the exception's text
    assert delivered["state"] == "active"
    assert delivered["cursor"] > 0


def test_the_worker_loop_survives_any_exception_of_a_pass(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    passes: list[int] = []
    done = threading.Event()

    def failing_pass(_app: Flask, **kwargs: Any) -> dict[str, int]:
        passes.append(1)
        if len(passes) >= 3:
            done.set()
        raise RecursionError("a pass that blew up")

    monkeypatch.setattr(audit_runtime, "run_once", failing_pass)
    worker = audit_runtime.AuditWorker(app, period=0.01)
    worker.start()
    try:
        assert done.wait(10)
        assert worker.running
    finally:
        worker.stop()


@pytest.mark.parametrize("kind", KINDS)
def test_a_sink_is_never_due_for_another_worker_during_any_batch(
        app: Flask, fakes: tuple[FakeHttpsSink, FakeSyslogSink], monkeypatch: pytest.MonkeyPatch,
        kind: str) -> None:
    app.config["HATIDATA_AUDIT_STREAM_LEASE"] = 1  # shorter than a batch: the lease covers two timeouts
    tenant = make_tenant(app, "Acme")
    add_events(app, tenant.id, 30)
    stream = _create(app, tenant, kind, fakes)
    elapsed = [0.0]
    real, seen = audit_sinks.deliver, []

    def clock() -> float:  # the real clock (receivers check signature times) plus the simulated batch times
        return time.time() + elapsed[0]

    def slow(target: Any, lines: Any, **kwargs: Any) -> None:
        elapsed[0] += 4.0  # each batch takes most of the delivery timeout (5 s)
        with Session(db.engine) as other_worker:
            seen.append(stream in audit_sinks.due_streams(other_worker, now=T0 + timedelta(seconds=elapsed[0])))
        real(target, lines, **kwargs)

    monkeypatch.setattr(audit_sinks, "deliver", slow)
    with app.app_context():
        audit_sinks.run(db.session, seal_key=audit_runtime.seal_key(app), policy=audit_runtime.stream_policy(app),
                        now=T0, clock=clock)
        db.session.remove()
    assert len(seen) >= 5
    assert not any(seen)
    assert _shown(app, tenant, stream)["state"] == "active"


@pytest.mark.parametrize("kind", KINDS)
def test_a_checkpoint_signed_after_its_events_were_delivered_reaches_every_kind_and_verifies(
        app: Flask, fakes: tuple[FakeHttpsSink, FakeSyslogSink], tmp_path: Path, kind: str) -> None:
    tenant = make_tenant(app, "Acme")
    _create(app, tenant, kind, fakes)
    fake = fakes[1] if kind == "syslog_tls" else fakes[0]
    audit_runtime.run_once(app, now=T0)
    add_events(app, tenant.id, 3, start=100)
    audit_runtime.run_once(app, now=T0 + timedelta(seconds=10))  # delivered before the minute's checkpoint
    for minutes in (2, 4):
        audit_runtime.run_once(app, now=T0 + timedelta(minutes=minutes))
    records = fake.records()
    head = max(r["seq"] for r in records if "type" not in r)
    checkpoints = [r["seq"] for r in records if r.get("type") == "checkpoint"]
    assert checkpoints[-1] == head
    assert checkpoints.count(head) == 1
    path = tmp_path / "received.ndjson"
    path.write_text("".join(line + "\n" for line in fake.lines))
    result = app.test_cli_runner().invoke(args=["hatidata", "audit", "verify-stream", str(path)])
    assert result.exit_code == 0, result.output
    assert f"last at #{head}" in result.output, result.output  # every event is covered by a checkpoint


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("outcome", ["confirmed", "failed"])
def test_a_pause_during_a_batch_stays_whatever_the_batch_did(
        app: Flask, fakes: tuple[FakeHttpsSink, FakeSyslogSink], monkeypatch: pytest.MonkeyPatch, kind: str,
        outcome: str) -> None:
    tenant = make_tenant(app, "Acme")
    add_events(app, tenant.id, 20)
    stream = _create(app, tenant, kind, fakes)
    real, batches = audit_sinks.deliver, []

    def pause_meanwhile(target: Any, lines: Any, **kwargs: Any) -> None:
        batches.append(len(lines))
        if len(batches) == 1:
            response = app.test_client().patch(f"{STREAMS}/{stream}", json={"enabled": False},
                                               headers=headers_for(tenant, "admin"))
            assert response.status_code == 200
        if outcome == "failed":
            raise DeliveryFailed("HTTP 503")
        real(target, lines, **kwargs)

    monkeypatch.setattr(audit_sinks, "deliver", pause_meanwhile)
    audit_runtime.run_once(app, now=T0)
    shown = _shown(app, tenant, stream)
    assert (shown["enabled"], shown["state"]) == (False, "paused")
    assert len(batches) == 1  # no further batch once paused
    assert (shown["cursor"] > 0) == (outcome == "confirmed")


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "syslog_tls"])  # the kinds with a sealed secret
def test_an_unreadable_secret_fails_with_its_own_message(
        app: Flask, fakes: tuple[FakeHttpsSink, FakeSyslogSink], kind: str) -> None:
    tenant = make_tenant(app, "Acme")
    stream = _create(app, tenant, kind, fakes)
    app.config["HATIDATA_COOKIE_KEY"] = "a-rotated-cookie-key-0123456789abcdef"
    audit_runtime.run_once(app, now=T0)
    with app.app_context():
        from hatidata_auth.models import AuditStream

        row = db.session.get(AuditStream, stream)
        assert row is not None
        shown = (row.state, row.last_error)
        db.session.remove()
    assert shown == ("retrying", "A stored secret cannot be read with the current key; enter it again.")
