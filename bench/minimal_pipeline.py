"""The physical baseline of a signed webhook: the least a Flask app can do per event on this machine.

``gunicorn -c config/gunicorn.conf.py bench.minimal_pipeline:app`` with ``DATABASE_URL`` (PostgreSQL) and
``WORKOS_WEBHOOK_SECRET`` set. ``bench/dsync_bench.py`` runs it under the same gunicorn settings and database as
the app and prints the app's figures as ratios to it.

``POST /webhooks/workos`` does exactly: read the raw body, check the ``WorkOS-Signature`` HMAC (``t=<ms>,
v1=<hex>``, SHA-256 over ``"<t>.<body>"``, 180 s tolerance), parse the JSON, then one transaction of three
statements: an inbox insert (``ON CONFLICT (event_id) DO NOTHING``; a duplicate stops there), one upsert of the
directory user guarded by its ``updated_at``, one audit insert. Answers 200 ``{"event_id", "status"}`` or 401.
``GET /healthz`` answers ``{"status": "ok"}``. Its three tables (``bench_min_*``) carry only the primary keys
and the inbox's unique event id; :func:`create_tables` makes them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from typing import Any

from flask import Flask, Response, jsonify, request
from sqlalchemy import Engine, create_engine, text

TABLES = """
CREATE TABLE IF NOT EXISTS bench_min_inbox (
    id BIGSERIAL PRIMARY KEY, event_id VARCHAR(64) NOT NULL UNIQUE, event_type VARCHAR(96) NOT NULL,
    payload JSONB NOT NULL, received_at TIMESTAMPTZ NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS bench_min_users (
    workos_id VARCHAR(64) PRIMARY KEY, directory_id VARCHAR(64) NOT NULL, email VARCHAR(320),
    first_name VARCHAR(255), last_name VARCHAR(255), state VARCHAR(16) NOT NULL, updated_at TIMESTAMPTZ NOT NULL);
CREATE TABLE IF NOT EXISTS bench_min_audit (
    id BIGSERIAL PRIMARY KEY, action VARCHAR(64) NOT NULL, target_id VARCHAR(64), source_event_id VARCHAR(64),
    details JSONB NOT NULL, created_at TIMESTAMPTZ NOT NULL DEFAULT now());
"""

INSERT_EVENT = text("INSERT INTO bench_min_inbox (event_id, event_type, payload) VALUES (:id, :type, :payload) "
                    "ON CONFLICT (event_id) DO NOTHING RETURNING id")
UPSERT_USER = text(
    "INSERT INTO bench_min_users (workos_id, directory_id, email, first_name, last_name, state, updated_at) "
    "VALUES (:id, :directory_id, :email, :first_name, :last_name, :state, CAST(:updated_at AS TIMESTAMPTZ)) "
    "ON CONFLICT (workos_id) DO UPDATE SET email = excluded.email, first_name = excluded.first_name, "
    "last_name = excluded.last_name, state = excluded.state, updated_at = excluded.updated_at "
    "WHERE bench_min_users.updated_at < excluded.updated_at")
INSERT_AUDIT = text("INSERT INTO bench_min_audit (action, target_id, source_event_id, details) "
                    "VALUES (:action, :target_id, :event_id, :details)")
TOLERANCE_SECONDS = 180


def create_tables(engine: Engine) -> None:
    """Create the three ``bench_min_*`` tables if they are missing."""
    with engine.begin() as conn:
        for statement in filter(str.strip, TABLES.split(";")):
            conn.execute(text(statement))


def signature_ok(secret: str, body: bytes, header: str, now: float) -> bool:
    """Whether *header* (``t=<ms>, v1=<hex>``) signs *body* with *secret* within the tolerance."""
    parts = dict(part.strip().split("=", 1) for part in header.split(",") if "=" in part)
    stamp, given = parts.get("t", ""), parts.get("v1", "")
    if not stamp.isdigit() or abs(now - int(stamp) / 1000) > TOLERANCE_SECONDS:
        return False
    expected = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, given)


def create_app(database_url: str | None = None, secret: str | None = None) -> Flask:
    """The minimal pipeline's app (settings from ``DATABASE_URL`` and ``WORKOS_WEBHOOK_SECRET`` by default)."""
    app = Flask(__name__)
    engine = create_engine(database_url or os.environ["DATABASE_URL"], pool_size=2)
    key = secret or os.environ["WORKOS_WEBHOOK_SECRET"]

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify(status="ok")

    @app.post("/webhooks/workos")
    def webhook() -> Any:
        body = request.get_data()
        if not signature_ok(key, body, request.headers.get("WorkOS-Signature", ""), time.time()):
            return jsonify(error="invalid_signature"), 401
        event = json.loads(body)
        user = event["data"]
        with engine.begin() as conn:
            if conn.execute(INSERT_EVENT, {"id": event["id"], "type": event["event"],
                                           "payload": body.decode()}).first() is None:
                return jsonify(event_id=event["id"], status="duplicate")
            conn.execute(UPSERT_USER, {"id": user["id"], "directory_id": user["directory_id"],
                                       "email": user.get("email"), "first_name": user.get("first_name"),
                                       "last_name": user.get("last_name"), "state": user["state"],
                                       "updated_at": user["updated_at"]})
            conn.execute(INSERT_AUDIT, {"action": "directory_user.updated", "target_id": user["id"],
                                        "event_id": event["id"],
                                        "details": json.dumps({"state": user["state"]})})
        return jsonify(event_id=event["id"], status="applied")

    return app


app = create_app() if os.environ.get("DATABASE_URL") and os.environ.get("WORKOS_WEBHOOK_SECRET") else None
