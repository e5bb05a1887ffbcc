"""Break-it findings on the integration branch (audit streams, webhook body rules, WorkOS revocation jobs): each
test states a fault and is marked ``xfail(strict=True)`` until the product is fixed. Both backends."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from hatidata_auth import audit_runtime
from hatidata_auth.extensions import db
from hatidata_auth.models import AuditStream
from tests.api_support import Tenant, headers_for, make_tenant

# the emulator-backed fixtures of the revocation-job suite, shared rather than copied
from tests.test_workos_revocation_jobs import control, resynced  # noqa: F401

STREAMS = "/api/v1/organization/audit-streams"


@pytest.fixture
def acme(app: Flask) -> Tenant:
    app.config["HATIDATA_AUDIT_STREAM_ALLOW_LOOPBACK_HTTP"] = False  # production's rule
    return make_tenant(app, "Acme")


def _count(app: Flask, tenant: Tenant) -> int:
    with app.app_context():
        found = db.session.scalar(select(func.count()).select_from(AuditStream)
                                  .where(AuditStream.organization_id == tenant.id))
        db.session.remove()
    return int(found or 0)


@pytest.mark.parametrize("endpoint", ["https://2130706433/hook", "https://0x7f000001/hook",
                                      "https://0177.0.0.1/hook", "https://127.1/hook"])
def test_a_loopback_address_in_a_numeric_form_is_refused_when_the_sink_is_configured(
        app: Flask, acme: Tenant, endpoint: str) -> None:
    response = app.test_client().post(STREAMS, json={"name": "n", "kind": "https", "endpoint": endpoint},
                                      headers=headers_for(acme, "admin"))
    assert response.status_code == 422, response.get_json()


def test_concurrent_creates_never_pass_the_per_organization_limit(app: Flask, acme: Tenant) -> None:
    app.config["HATIDATA_AUDIT_STREAMS_MAX"] = 2  # the tenant has one (paused) sink already
    barrier = threading.Barrier(8)
    codes: list[int] = []

    def create(n: int) -> None:
        client = app.test_client()
        barrier.wait()
        codes.append(client.post(STREAMS, json={"name": f"s{n}", "kind": "https",
                                                 "endpoint": f"https://siem{n}.acme.test/hook"},
                                  headers=headers_for(acme, "admin")).status_code)

    threads = [threading.Thread(target=create, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _count(app, acme) <= 2, codes
    # one create fits, the others wait for it and are refused cleanly (never a lock error)
    assert sorted(codes) == [201] + [409] * 7, codes


@pytest.fixture
def listener() -> Iterator[tuple[int, list[str]]]:
    """A TCP listener on loopback recording who connected (an internal service an attacker aims a sink at)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    seen: list[str] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, peer = server.accept()
            except OSError:
                continue
            seen.append(peer[0])
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], seen
    stop.set()
    thread.join()
    server.close()


REBIND_SINKS = {"https": ("https://rebind.attacker.test:{port}/hook", None),
                "splunk_hec": ("https://rebind.attacker.test:{port}", "hec-token-0123456789abcdef"),
                "datadog": ("https://rebind.attacker.test:{port}", "dd-api-key-0123456789abcdef"),
                "syslog_tls": ("rebind.attacker.test:{port}", None)}


@pytest.mark.parametrize("kind", sorted(REBIND_SINKS))
def test_a_name_rebinding_to_loopback_after_the_check_is_never_connected_to(
        app: Flask, acme: Tenant, listener: tuple[int, list[str]], monkeypatch: pytest.MonkeyPatch,
        kind: str) -> None:
    """The host is resolved once by ``check_resolved`` and again by the HTTP client: a name that answers a public
    address first and loopback next (DNS rebinding, TTL 0) reaches an internal service."""
    port, seen = listener
    app.config["HATIDATA_AUDIT_STREAM_TIMEOUT"] = 1.0
    endpoint, secret = REBIND_SINKS[kind]
    body = {"name": "rebind", "kind": kind, "endpoint": endpoint.format(port=port),
            **({"secret": secret} if secret else {})}
    created = app.test_client().post(STREAMS, json=body, headers=headers_for(acme, "admin"))
    assert created.status_code == 201, created.get_json()
    real = socket.getaddrinfo
    answers = iter(["93.184.216.34"])

    def rebinding(host: Any, port_: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "rebind.attacker.test":
            return real(host, port_, *args, **kwargs)
        address = next(answers, "127.0.0.1")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port_)))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    audit_runtime.run_once(app)
    assert seen == []


def _create(app: Flask, tenant: Tenant, name: str, endpoint: str) -> str:
    response = app.test_client().post(STREAMS, json={"name": name, "kind": "https", "endpoint": endpoint},
                                      headers=headers_for(tenant, "admin"))
    assert response.status_code == 201, response.get_json()
    return str(response.get_json()["id"])


def test_a_sink_being_delivered_is_never_due_for_another_worker(
        app: Flask, acme: Tenant, monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy.orm import Session

    from hatidata_auth.models import utcnow
    from hatidata_auth.services import audit_sinks

    app.config["HATIDATA_AUDIT_STREAM_LEASE"] = 1
    first, second = _create(app, acme, "first", "https://a.acme.test/hook"), \
        _create(app, acme, "second", "https://b.acme.test/hook")
    due_while_delivered: list[str] = []

    def slow_sink(target: Any, lines: Any, **kwargs: Any) -> None:  # a receiver taking longer than the lease
        delivering = {"a.acme.test": first, "b.acme.test": second}[target.endpoint.host]
        with Session(db.engine) as other_worker:
            if delivering in audit_sinks.due_streams(other_worker, now=utcnow()):
                due_while_delivered.append(delivering)
        threading.Event().wait(1.3)

    monkeypatch.setattr(audit_sinks, "deliver", slow_sink)
    audit_runtime.run_once(app)
    assert due_while_delivered == []


def test_a_sink_paused_during_a_delivery_stays_paused(app: Flask, acme: Tenant,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from hatidata_auth.services import audit_sinks

    stream = _create(app, acme, "sink", "https://a.acme.test/hook")
    paused: list[int] = []

    def pause_meanwhile(target: Any, lines: Any, **kwargs: Any) -> None:
        if not paused:
            paused.append(app.test_client().patch(f"{STREAMS}/{stream}", json={"enabled": False},
                                                  headers=headers_for(acme, "admin")).status_code)

    monkeypatch.setattr(audit_sinks, "deliver", pause_meanwhile)
    audit_runtime.run_once(app)
    assert paused == [200]
    shown = app.test_client().get(f"{STREAMS}/{stream}", headers=headers_for(acme, "admin")).get_json()
    assert (shown["enabled"], shown["state"]) == (False, "paused")


def _read_only_audit_key(app: Flask, tenant: Tenant) -> str:
    """An admin's API key scoped to ``audit:read`` only (what a SIEM that pulls the log is given)."""
    from hatidata_auth.causes import Actor, Cause
    from hatidata_auth.services import api_keys as key_service

    with app.app_context():
        created = key_service.create_key(db.session, organization_id=tenant.id, owner_user_id=tenant.users["admin"],
                                         name="siem puller", scopes=["audit:read"],
                                         cause=Cause.by(Actor("user", tenant.users["admin"])))
        db.session.commit()
        db.session.remove()
    return str(created.secret)


@pytest.mark.parametrize("change", ["create", "patch", "delete", "retry"])
def test_a_read_only_audit_key_cannot_change_the_sinks(app: Flask, acme: Tenant, change: str) -> None:
    key = {"Authorization": f"Bearer {_read_only_audit_key(app, acme)}"}
    client, sink = app.test_client(), f"{STREAMS}/{acme.ids['audit_stream']}"
    answer = {"create": lambda: client.post(STREAMS, json={"name": "x", "kind": "https",
                                                           "endpoint": "https://attacker.test/h"}, headers=key),
              "patch": lambda: client.patch(sink, json={"enabled": True}, headers=key),
              "delete": lambda: client.delete(sink, headers=key),
              "retry": lambda: client.post(f"{sink}/retry", headers=key)}[change]()
    assert answer.status_code == 403, answer.get_data(as_text=True)
    assert answer.get_json()["error"]["details"]["missing_permissions"] == ["audit:manage"]
    assert client.get(sink, headers=key).status_code == 200  # reading stays audit:read


@pytest.mark.parametrize(("content_type", "body"), [
    ("application/x-www-form-urlencoded", b"a=%00"),
    ("multipart/form-data; boundary=XX", b'--XX\r\nContent-Disposition: form-data; name="a"\r\n\r\n\x00\r\n--XX--\r\n'),
])
def test_an_unsigned_webhook_of_any_content_type_is_refused_unread(app: Flask, content_type: str,
                                                                    body: bytes) -> None:
    answer = app.test_client().post("/webhooks/workos", data=body, headers={"Content-Type": content_type})
    assert (answer.status_code, answer.get_json()["error"]["code"]) == (401, "invalid_signature")


@pytest.mark.usefixtures("resynced")
def test_a_deprovisioning_polled_from_the_events_api_queues_its_workos_revocations(
        app: Flask, request: pytest.FixtureRequest) -> None:
    from hatidata_auth.services import inbox
    from tests.test_workos_revocation_jobs import _audit, _deprovisioning_event, _signed_in

    client, _ = _signed_in(app)
    event = _deprovisioning_event(request.getfixturevalue("control"), "deactivate")
    with app.app_context():
        result = inbox.receive(db.session(), app.extensions["hatidata_workos"].client, event, source="events_api")
        db.session.remove()
    assert result.status == "applied", result
    assert client.get("/api/v1/me").status_code == 401
    revoked = [e.details["workos"] for e in _audit(app, "session.revoked") if e.details.get("session_id")]
    assert revoked
    assert set(revoked) == {"queued"}


@pytest.mark.usefixtures("resynced")
def test_a_polled_deprovisioning_during_a_workos_outage_still_ends_the_session_at_workos(
        app: Flask, request: pytest.FixtureRequest, emulator: Any) -> None:
    from hatidata_auth.services import inbox
    from tests.auth_support import add_fault
    from tests.support.dsync import drain_inbox
    from tests.test_workos_revocation_jobs import _deprovisioning_event, _signed_in, _workos_status

    client, sid = _signed_in(app)
    event = _deprovisioning_event(request.getfixturevalue("control"), "deactivate")
    add_fault(emulator, "POST", "/user_management/sessions/revoke", 503)
    with app.app_context():
        inbox.receive(db.session(), app.extensions["hatidata_workos"].client, event, source="events_api")
        db.session.remove()
    assert client.get("/api/v1/me").status_code == 401
    request.getfixturevalue("control").ctl("DELETE", "/faults")
    drain_inbox(app)
    assert _workos_status(app, sid) == "revoked"


RECEIVER_TOKEN = "receiver-token-5f1d0c9e"


def test_a_token_in_the_endpoint_query_is_never_logged(app: Flask, acme: Tenant, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    from tests.support.sink_fakes import FakeHttpsSink, make_certificates

    certs = make_certificates(tmp_path / "pki")
    app.config.update(HATIDATA_AUDIT_STREAM_ALLOW_LOOPBACK_HTTP=True, HATIDATA_AUDIT_STREAM_CA_BUNDLE=certs.ca_file)
    sink = FakeHttpsSink(certs).start()
    try:
        _create(app, acme, "query token", f"{sink.url}/webhook?token={RECEIVER_TOKEN}")
        caplog.set_level("INFO")
        audit_runtime.run_once(app)
        assert sink.requests  # it was delivered to
    finally:
        sink.stop()
    assert RECEIVER_TOKEN not in caplog.text


def test_the_stream_carries_the_checkpoint_signed_after_its_events_were_delivered(
        app: Flask, acme: Tenant, monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import UTC, datetime, timedelta

    from hatidata_auth.services import audit_sinks
    from tests.audit_support import add_events

    app.config.update(HATIDATA_AUDIT_CHECKPOINT_EVERY=1000, HATIDATA_AUDIT_CHECKPOINT_INTERVAL=60)
    _create(app, acme, "sink", "https://a.acme.test/hook")
    received: list[dict[str, Any]] = []
    monkeypatch.setattr(audit_sinks, "deliver",
                        lambda target, lines, **kw: received.extend(line.value for line in lines))
    t0 = datetime(2026, 6, 1, tzinfo=UTC)
    audit_runtime.run_once(app, now=t0)  # the first checkpoint (at the head) and the events so far
    add_events(app, acme.id, 3, start=100)  # a little traffic, delivered at once
    audit_runtime.run_once(app, now=t0 + timedelta(seconds=10))
    for minutes in (2, 4, 6):  # the traffic's once-a-minute checkpoint is signed at the next passes
        audit_runtime.run_once(app, now=t0 + timedelta(minutes=minutes))
    head = max(r["seq"] for r in received if r.get("type") != "checkpoint")
    streamed_checkpoints = [r["seq"] for r in received if r.get("type") == "checkpoint"]
    with app.app_context():
        from hatidata_auth.models import AuditCheckpoint

        signed = list(db.session.scalars(select(AuditCheckpoint.seq)
                                         .where(AuditCheckpoint.organization_id == acme.id)))
        db.session.remove()
    assert head in signed  # it was signed...
    assert head in streamed_checkpoints, (head, streamed_checkpoints)


class _HostileReceiver:
    """A plain-HTTP receiver on loopback (allowed in development) owned by a tenant that means harm: it answers
    every POST with ``answer`` (status line, headers, then body chunks sent ``drip`` seconds apart)."""

    def __init__(self, body_chunks: list[bytes], drip: float = 0.0) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        chunks, pause = body_chunks, drip

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(sum(len(c) for c in chunks)))
                self.end_headers()
                try:
                    for chunk in chunks:
                        self.wfile.write(chunk)
                        self.wfile.flush()
                        threading.Event().wait(pause)
                except OSError:
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _hec_sink(app: Flask, tenant: Tenant, url: str) -> str:
    app.config["HATIDATA_AUDIT_STREAM_ALLOW_LOOPBACK_HTTP"] = True
    response = app.test_client().post(STREAMS, json={"name": "hostile", "kind": "splunk_hec", "endpoint": url,
                                                     "secret": "hec-token-0123456789abcdef"},
                                      headers=headers_for(tenant, "admin"))
    assert response.status_code == 201, response.get_json()
    return str(response.get_json()["id"])


def test_a_sink_answering_deeply_nested_json_only_fails_its_own_delivery(app: Flask, acme: Tenant) -> None:
    receiver = _HostileReceiver([b"[" * 200_000 + b"]" * 200_000])
    try:
        stream = _hec_sink(app, acme, receiver.url)
        audit_runtime.run_once(app)
    finally:
        receiver.stop()
    shown = app.test_client().get(f"{STREAMS}/{stream}", headers=headers_for(acme, "admin")).get_json()
    assert shown["state"] == "retrying"


def test_a_sink_trickling_its_answer_is_cut_at_the_delivery_timeout(app: Flask, acme: Tenant) -> None:
    import time

    app.config["HATIDATA_AUDIT_STREAM_TIMEOUT"] = 1.0
    receiver = _HostileReceiver([b" "] * 12 + [b'{"text": "Success", "code": 0}'], drip=0.5)
    try:
        _hec_sink(app, acme, receiver.url)
        started = time.monotonic()
        audit_runtime.run_once(app)
        elapsed = time.monotonic() - started
    finally:
        receiver.stop()
    assert elapsed < 4.0, elapsed
