"""Signed checkpoints of the audit chains (issue #17, item 2's checkpoints and keys): the signed bytes, the
worker that makes them (every N events, at least once per interval while events come, never over a broken
chain), incremental verification from the newest trusted one, key rotation, and ``verify-stream``."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from hatidata_auth import audit_runtime
from hatidata_auth.extensions import db
from hatidata_auth.models import AuditCheckpoint, AuditEvent, AuditSigningKey
from hatidata_auth.services import audit, audit_exports, audit_signing
from hatidata_auth.services.audit_queries import AuditFilter
from tests.api_support import Tenant, headers_for, make_tenant
from tests.audit_support import add_events, new_org, tampering

NOW = datetime(2026, 6, 1, tzinfo=UTC)
KEY = audit_signing.load_signer(audit_signing.generate_key())


def _checkpoints(app: Flask, org_id: str) -> list[int]:
    with app.app_context():
        return list(db.session.scalars(select(AuditCheckpoint.seq).where(AuditCheckpoint.organization_id == org_id)
                                       .order_by(AuditCheckpoint.seq)))


@pytest.fixture
def small_every(app: Flask) -> None:
    app.config["HATIDATA_AUDIT_CHECKPOINT_EVERY"] = 10
    app.config["HATIDATA_AUDIT_CHECKPOINT_INTERVAL"] = 60


# --- the signed bytes ---------------------------------------------------------------------------------------


def test_the_signed_message_is_the_documented_byte_string() -> None:
    assert audit_signing.checkpoint_message("org_1", 42, "ab" * 32) == \
        b"hatidata-audit-checkpoint:v1:org_1:42:" + b"ab" * 32


@settings(max_examples=40, deadline=None)
@given(org=st.text(min_size=1, max_size=40), seq=st.integers(1, 2**62), other_seq=st.integers(1, 2**62),
       digest=st.binary(min_size=32, max_size=32))
def test_a_signature_verifies_only_its_own_checkpoint(org: str, seq: int, other_seq: int, digest: bytes) -> None:
    assert KEY is not None
    chain_hash = digest.hex()
    signature = KEY.sign(org, seq, chain_hash)
    assert audit_signing.verify_signature(KEY.public_key, org, seq, chain_hash, signature)
    if other_seq != seq:
        assert not audit_signing.verify_signature(KEY.public_key, org, other_seq, chain_hash, signature)
    assert not audit_signing.verify_signature(KEY.public_key, org + "x", seq, chain_hash, signature)
    other = audit_signing.load_signer(audit_signing.generate_key())
    assert other is not None
    assert not audit_signing.verify_signature(other.public_key, org, seq, chain_hash,
                                                                     signature)


def test_keys_load_from_base64url_or_pem_and_never_show_in_repr() -> None:
    from cryptography.hazmat.primitives import serialization

    assert KEY is not None
    pem = KEY.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()).decode()
    assert audit_signing.load_signer(pem) == KEY
    assert "private" not in repr(KEY)
    for bad in ("not-a-key", "QUJD", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"):
        with pytest.raises(audit_signing.InvalidSigningKey):
            audit_signing.load_signer(bad)
    assert audit_signing.load_signer(None) is None


def test_development_generates_one_key_per_instance_folder(tmp_path: Path) -> None:
    from hatidata_auth.config import fill_local_defaults

    first: dict[str, Any] = {}
    second: dict[str, Any] = {}
    fill_local_defaults(first, tmp_path)
    fill_local_defaults(second, tmp_path)
    assert first["HATIDATA_AUDIT_SIGNING_KEY"] == second["HATIDATA_AUDIT_SIGNING_KEY"]
    assert (tmp_path / "audit-signing-key").stat().st_mode & 0o077 == 0


# --- the worker -----------------------------------------------------------------------------------------------


def test_checkpoints_every_n_events_and_once_per_interval_while_events_come(app: Flask, small_every: None) -> None:
    org_id = new_org(app, "Acme")
    add_events(app, org_id, 25)
    audit_runtime.run_once(app, now=NOW)
    assert _checkpoints(app, org_id) == [10, 20, 25]  # each multiple, then the head (the first pass)
    add_events(app, org_id, 3, start=25)
    audit_runtime.run_once(app, now=NOW + timedelta(seconds=30))
    assert _checkpoints(app, org_id) == [10, 20, 25]  # neither N events nor the interval yet
    audit_runtime.run_once(app, now=NOW + timedelta(seconds=61))
    assert _checkpoints(app, org_id) == [10, 20, 25, 28]
    audit_runtime.run_once(app, now=NOW + timedelta(seconds=200))
    assert _checkpoints(app, org_id) == [10, 20, 25, 28]  # no traffic, no checkpoint
    add_events(app, org_id, 12, start=28)
    audit_runtime.run_once(app, now=NOW + timedelta(seconds=201))
    assert _checkpoints(app, org_id) == [10, 20, 25, 28, 30, 40]


def test_an_ordinary_write_makes_no_checkpoint(app: Flask, small_every: None) -> None:
    org_id = new_org(app, "Acme")
    add_events(app, org_id, 30)
    assert _checkpoints(app, org_id) == []


def test_no_checkpoint_seals_a_broken_chain(app: Flask, small_every: None) -> None:
    org_id = new_org(app, "Acme")
    add_events(app, org_id, 5)
    with app.app_context(), tampering(db.session):
        db.session.execute(update(AuditEvent).where(AuditEvent.organization_id == org_id, AuditEvent.seq == 3)
                           .values(actor_email="mallory@x.test"))
    audit_runtime.run_once(app, now=NOW)
    assert _checkpoints(app, org_id) == []


@pytest.mark.postgres
def test_checkpoints_are_append_only_on_postgresql(app: Flask, small_every: None) -> None:
    org_id = new_org(app, "Acme")
    add_events(app, org_id, 12)
    audit_runtime.run_once(app, now=NOW)
    table = AuditCheckpoint.__table__
    with app.app_context(), db.engine.connect() as conn:
        for statement in (update(table).where(table.c.organization_id == org_id).values(hash="0" * 64),
                          table.delete().where(table.c.organization_id == org_id),
                          text("TRUNCATE audit_checkpoints")):
            with pytest.raises(DBAPIError, match="append-only"):
                conn.execute(statement)
            conn.rollback()
    assert _checkpoints(app, org_id) == [10, 12]


# --- incremental verification -------------------------------------------------------------------------------


@pytest.fixture
def acme(app: Flask) -> Tenant:
    return make_tenant(app, "Acme")


def _verify(app: Flask, tenant: Tenant, query: str = "") -> dict[str, Any]:
    answer = app.test_client().get(f"/api/v1/audit-events/verify{query}", headers=headers_for(tenant, "admin"))
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return dict(answer.get_json())


def test_verify_costs_only_the_events_since_the_newest_checkpoint(app: Flask, acme: Tenant,
                                                                 small_every: None) -> None:
    add_events(app, acme.id, 30)
    audit_runtime.run_once(app, now=NOW)
    with app.app_context():
        head = audit.count(db.session, acme.id)
    add_events(app, acme.id, 4, start=30)
    report = _verify(app, acme)
    assert report["ok"]
    assert report["complete"]
    assert (report["from_seq"], report["checked"], report["last_seq"]) == (head, 4, head + 4)
    assert report["checkpoint"]["seq"] == head
    full = _verify(app, acme, "?full=true")
    assert full["ok"]
    assert (full["from_seq"], full["checked"]) == (0, head + 4)


def test_an_edit_before_the_checkpoint_is_found_by_a_full_walk(app: Flask, acme: Tenant, small_every: None) -> None:
    add_events(app, acme.id, 25)
    audit_runtime.run_once(app, now=NOW)
    with app.app_context(), tampering(db.session):
        db.session.execute(update(AuditEvent).where(AuditEvent.organization_id == acme.id, AuditEvent.seq == 4)
                           .values(action="test.forged"))
    assert _verify(app, acme)["ok"]  # the tail after the checkpoint is intact
    full = _verify(app, acme, "?full=true")
    assert not full["ok"]
    assert full["first_broken_seq"] == 4


def test_a_rewritten_tail_contradicts_its_signed_checkpoint(app: Flask, acme: Tenant, small_every: None) -> None:
    add_events(app, acme.id, 25)
    audit_runtime.run_once(app, now=NOW)
    # The attacker edits event #22 and re-hashes it and every later event: every link holds again.
    with app.app_context(), tampering(db.session):
        rows = list(db.session.scalars(select(AuditEvent).where(AuditEvent.organization_id == acme.id,
                                                                AuditEvent.seq >= 22).order_by(AuditEvent.seq)))
        prev = db.session.scalar(select(AuditEvent.hash).where(AuditEvent.organization_id == acme.id,
                                                               AuditEvent.seq == 21))
        for row in rows:
            if row.seq == 22:
                row.actor_email = "mallory@x.test"
            row.prev_hash = prev
            row.hash = prev = audit.chain_hash(prev, row)
    with app.app_context():
        last_seq = audit.count(db.session, acme.id)
    for query in ("", "?full=true"):
        report = _verify(app, acme, query)
        assert not report["ok"], report
        assert report["first_broken_seq"] == last_seq, report
        assert "signed checkpoint" in report["problem"]


def test_rotation_keeps_old_keys_published_and_their_checkpoints_trusted(
        app: Flask, app_config: dict[str, Any], acme: Tenant, small_every: None) -> None:
    add_events(app, acme.id, 10)
    audit_runtime.run_once(app, now=NOW)
    first = audit_runtime.signer(app)
    assert first is not None
    first_kid = first.kid
    rotated = audit_signing.load_signer(audit_signing.generate_key())
    assert rotated is not None
    app.extensions[audit_runtime.SIGNER] = rotated
    # Until the configuration names the old public key, its database row vouches for nothing.
    listed = app.test_client().get("/api/v1/audit-events/signing-keys",
                                   headers=headers_for(acme, "admin")).get_json()["data"]
    assert [k["kid"] for k in listed] == [rotated.kid]
    assert "no trusted key signed" in _verify(app, acme)["problem"]
    app.config["HATIDATA_AUDIT_TRUSTED_KEYS"] = [first.public_key]
    keys = app.test_client().get("/api/v1/audit-events/signing-keys", headers=headers_for(acme, "admin"))
    assert keys.status_code == 200
    listed = keys.get_json()["data"]
    assert [k["kid"] for k in listed] == [rotated.kid, first_kid]  # the new one first, not yet used
    assert all(k["algorithm"] == "Ed25519" for k in listed)
    report = _verify(app, acme)
    assert report["ok"]
    assert report["checkpoint"]["kid"] == first_kid
    # The CLI's incremental verify trusts the same configured keys.
    cli = app.test_cli_runner().invoke(args=["hatidata", "audit", "verify", "--organization", acme.id])
    assert cli.exit_code == 0, cli.output
    add_events(app, acme.id, 10, start=10)
    audit_runtime.run_once(app, now=NOW + timedelta(minutes=5))
    listed = app.test_client().get("/api/v1/audit-events/signing-keys",
                                   headers=headers_for(acme, "admin")).get_json()["data"]
    by_kid = {k["kid"]: k for k in listed}
    assert by_kid[first_kid]["retired_at"] is not None
    assert by_kid[rotated.kid]["retired_at"] is None
    assert _verify(app, acme)["checkpoint"]["kid"] == rotated.kid
    assert app.test_client().get("/api/v1/audit-events/signing-keys",
                                 headers=headers_for(acme, "developer")).status_code == 403


# --- verify-stream ----------------------------------------------------------------------------------------------


def _stream(app: Flask, org_id: str) -> list[str]:
    with app.app_context():
        lines = list(audit_exports.export_lines(db.session, org_id, AuditFilter(), reveal_session_ids=True,
                                                with_checkpoints=True))
        db.session.remove()
    return lines


def _kind(line: str) -> str:
    return str(json.loads(line).get("type", "event"))


def _verify_stream(app: Flask, tmp_path: Path, lines: list[str]) -> Any:
    path = tmp_path / "stream.ndjson"
    path.write_text("".join(lines))
    return app.test_cli_runner().invoke(args=["hatidata", "audit", "verify-stream", str(path)])


def test_two_workers_registering_one_key_at_once_both_succeed(app: Flask) -> None:
    """Every worker process registers the key it signs with; the second of two concurrent registrations (which
    found no row before the first committed) changes nothing instead of failing."""
    signer = audit_signing.load_signer(audit_signing.generate_key())
    assert signer is not None
    errors: list[BaseException] = []
    with app.app_context():
        first, second = Session(db.engine), Session(db.engine)
        assert second.get(AuditSigningKey, signer.kid) is None  # the second has looked before the first commits
        audit_signing.register(first, signer)

        def register_second() -> None:
            try:
                audit_signing.register(second, signer)
                second.commit()
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                errors.append(exc)

        thread = threading.Thread(target=register_second)
        thread.start()
        first.commit()
        thread.join(timeout=30)
        first.close()
        second.close()
        rows = db.session.scalars(select(AuditSigningKey).where(AuditSigningKey.kid == signer.kid)).all()
        db.session.remove()
    assert errors == []
    assert len(rows) == 1


def test_an_empty_stream_says_so(app: Flask, tmp_path: Path) -> None:
    result = _verify_stream(app, tmp_path, [])
    assert (result.exit_code, result.output.strip()) == (0, "ok: the stream holds no events")


@pytest.fixture
def stream(app: Flask, small_every: None) -> tuple[str, list[str]]:
    org_id = new_org(app, "Acme")
    add_events(app, org_id, 25)
    audit_runtime.run_once(app, now=NOW)
    lines = _stream(app, org_id)
    assert [json.loads(line).get("type") for line in lines].count("checkpoint") == 3
    return org_id, lines


def test_a_good_stream_passes_and_repeated_deliveries_are_ignored(app: Flask, tmp_path: Path,
                                                                  stream: tuple[str, list[str]]) -> None:
    _, lines = stream
    result = _verify_stream(app, tmp_path, lines)
    assert result.exit_code == 0, result.output
    assert "25 events" in result.output
    assert "3 signed checkpoint(s)" in result.output
    redelivered = lines[:12] + lines[5:12] + lines[12:-1]  # at-least-once: a retry resends a range
    result = _verify_stream(app, tmp_path, redelivered)
    assert result.exit_code == 0, result.output
    assert "repeated deliveries ignored" in result.output


@pytest.mark.parametrize("field", ["actor", "action", "details", "created_at", "outcome"])
def test_an_altered_event_fails_naming_it(app: Flask, tmp_path: Path, stream: tuple[str, list[str]],
                                          field: str) -> None:
    _, lines = stream
    events = [(i, json.loads(line)) for i, line in enumerate(lines) if _kind(line) == "event"]
    index, victim = events[16]
    victim[field] = {"forged": True} if field in ("actor", "details") else "forged"
    altered = [*lines[:index], json.dumps(victim) + "\n", *lines[index + 1:]]
    result = _verify_stream(app, tmp_path, altered)
    assert result.exit_code == 1
    assert f"event #{victim['seq']} ({victim['id']})" in result.output
    assert "altered" in result.output


def test_a_missing_event_fails_naming_it(app: Flask, tmp_path: Path, stream: tuple[str, list[str]]) -> None:
    _, lines = stream
    events = [i for i, line in enumerate(lines) if _kind(line) == "event"]
    missing = json.loads(lines[events[7]])
    result = _verify_stream(app, tmp_path, [line for i, line in enumerate(lines) if i != events[7]])
    assert result.exit_code == 1
    assert f"event #{missing['seq']} is missing" in result.output


def test_a_lost_tail_and_a_forged_checkpoint_fail(app: Flask, tmp_path: Path, stream: tuple[str, list[str]]) -> None:
    _, lines = stream
    cut = _verify_stream(app, tmp_path, lines[:-3])  # event #25, its checkpoint and the trailer lost
    assert cut.exit_code == 0, cut.output  # a prefix proves itself up to its last checkpoint, and says so
    assert "last at #20; 4 event(s) after it not yet signed" in cut.output
    checkpoint_at = next(i for i, line in enumerate(lines) if _kind(line) == "checkpoint")
    forged = json.loads(lines[checkpoint_at])
    forged["hash"] = "0" * 64
    result = _verify_stream(app, tmp_path, [*lines[:checkpoint_at], json.dumps(forged) + "\n",
                                            *lines[checkpoint_at + 1:]])
    assert result.exit_code == 1
    assert "signature does not verify" in result.output
    trailer = json.loads(lines[-1])
    trailer["count"] += 1
    result = _verify_stream(app, tmp_path, [*lines[:-1], json.dumps(trailer) + "\n"])
    assert result.exit_code == 1
    assert "trailer" in result.output


def test_keys_come_from_the_published_list(app: Flask, tmp_path: Path, stream: tuple[str, list[str]]) -> None:
    _, lines = stream
    org = make_tenant(app, "Globex")
    published = app.test_client().get("/api/v1/audit-events/signing-keys", headers=headers_for(org, "admin"))
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(published.get_data(as_text=True))
    stream_file = tmp_path / "s.ndjson"
    stream_file.write_text("".join(lines))
    ok = app.test_cli_runner().invoke(args=["hatidata", "audit", "verify-stream", str(stream_file),
                                            "--keys", str(keys_file)])
    assert ok.exit_code == 0, ok.output
    keys_file.write_text(json.dumps({"data": []}))
    unknown = app.test_cli_runner().invoke(args=["hatidata", "audit", "verify-stream", str(stream_file),
                                                 "--keys", str(keys_file)])
    assert unknown.exit_code == 1
    assert "unknown key" in unknown.output


def test_stream_properties_over_deliveries(app: Flask, tmp_path: Path, stream: tuple[str, list[str]]) -> None:
    """Any redelivery of earlier ranges passes; dropping any one event fails naming it."""
    from hatidata_auth.services.audit_stream import verify_stream

    _, lines = stream
    with app.app_context():
        keys = audit_signing.public_keys(audit_signing.published_keys(db.session, audit_runtime.signer(app)))
    events = [i for i, line in enumerate(lines) if _kind(line) == "event"]

    @settings(max_examples=60, deadline=None, database=None)
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        cut = data.draw(st.integers(1, len(lines) - 1))
        start = data.draw(st.integers(0, cut - 1))
        redelivered = [*lines[:cut], *lines[start:cut], *lines[cut:]]
        assert verify_stream(redelivered, keys).ok
        dropped = data.draw(st.sampled_from(events[:-1]))
        seq = json.loads(lines[dropped])["seq"]
        report = verify_stream([line for i, line in enumerate(lines) if i != dropped], keys)
        assert report.problem is not None
        assert report.problem.startswith(f"event #{seq} is missing")

    check()


def test_the_cli_verifies_from_the_newest_checkpoint_unless_full(app: Flask, small_every: None) -> None:
    org_id = new_org(app, "Acme")
    add_events(app, org_id, 23)
    audit_runtime.run_once(app, now=NOW)
    add_events(app, org_id, 2, start=23)
    runner = app.test_cli_runner()
    incremental = runner.invoke(args=["hatidata", "audit", "verify", "--organization", org_id])
    assert incremental.exit_code == 0, incremental.output
    assert f"{org_id}: ok, 2 events after checkpoint #23" in incremental.output
    full = runner.invoke(args=["hatidata", "audit", "verify", "--organization", org_id, "--full"])
    assert f"{org_id}: ok, 25 events" in full.output
