"""The WorkOS webhook endpoint: size limit, signature check on the raw body, envelope check, then the inbox.

The event is acknowledged once stored (one statement); the appliers (:mod:`~hatidata_auth.services.inbox_worker`)
apply it afterwards, except an event that takes access away, which this request applies before it answers
(after its entity's older pending events: :func:`~hatidata_auth.inbox_runtime.acknowledged`).

Answers: 200 ``{"event_id", "status": "received"}`` (stored for the appliers, or a known failed event queued
again) or ``{"event_id", "status": "duplicate"}`` (known already: nothing changes); 400 malformed JSON or envelope
(nothing stored; a well-formed envelope whose data a handler refuses is stored and recorded ``failed`` by the
applier), or JSON nested deeper than ``HATIDATA_MAX_JSON_DEPTH`` or holding a number that is not finite
(``invalid_json``); 422 a signed body holding a NUL, a lone surrogate or an integer past 64 bits
(``validation_error`` naming the fields); 401 bad, missing or stale signature, checked before any byte of the body is
parsed (nothing stored; counted, and audited as a rate-limited summary without organization:
:mod:`~hatidata_auth.services.security_events`); 413 body over ``HATIDATA_WEBHOOK_MAX_BYTES``; 503 the database is
unreachable (nothing stored, WorkOS retries).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from .. import inbox_runtime, inputs, metrics
from ..causes import Actor, Cause
from ..config import DEFAULTS
from ..errors import error_response
from ..extensions import csrf, db, never_rate_limited
from ..request_hooks import request_info
from ..security_reports import report
from ..services.events import PayloadError
from ..services.inbox import error_summary, store, validate_envelope
from ..workos.webhooks import InvalidSignature, MalformedEvent, parse_event, verify_signature

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")
csrf.exempt(bp)

SIGNATURE_HEADER = "WorkOS-Signature"


def _reject_signature(reason: str) -> Response:
    report("webhook_signature", "invalid_signature", reason, target_type="webhook", target_id="workos")
    return error_response(401, "invalid_signature", "The WorkOS-Signature header is missing, invalid or stale.")


def _malformed(cause: BaseException) -> Response:
    return error_response(400, "malformed_event", "The event is not valid JSON of the expected shape.",
                          {"reason": error_summary(cause)})


def _read_body(limit: int) -> bytes | None:
    if request.content_length is not None and request.content_length > limit:
        return None
    body = request.stream.read(limit + 1)
    return None if len(body) > limit else body


@bp.post("/workos")
@inputs.checks_own_body  # the signature is checked on the raw body before any byte of it is parsed
@never_rate_limited  # WorkOS retries what it cannot deliver: a limit would only delay events
def workos_webhook() -> Any:
    """Receive one signed WorkOS event."""
    limit = int(current_app.config.get("HATIDATA_WEBHOOK_MAX_BYTES", DEFAULTS["HATIDATA_WEBHOOK_MAX_BYTES"]))
    body = _read_body(limit)
    if body is None:
        return error_response(413, "payload_too_large", f"The body exceeds {limit} bytes.")
    signature = request.headers.get(SIGNATURE_HEADER)
    gateway = current_app.extensions["hatidata_workos"]
    secret = gateway.settings.webhook_secret
    if not signature or not secret:
        return _reject_signature("missing signature" if secret else "no webhook secret configured")
    client = gateway.client
    try:
        # The SDK's verify_event is verify_header + EventSchema.from_dict; the two steps are run apart so
        # that a bad signature (401) is told from a well-signed but malformed body (400).
        verify_signature(client, body=body, header=signature, secret=secret,
                         tolerance=gateway.settings.webhook_tolerance)
    except InvalidSignature as exc:
        return _reject_signature(exc.reason)
    depth = int(current_app.config.get("HATIDATA_MAX_JSON_DEPTH") or inputs.MAX_JSON_DEPTH)
    try:
        parsed = inputs.load_storable_json(body, max_depth=depth)
    except inputs.NotJSON as exc:
        return _malformed(exc.__cause__ or exc)
    try:
        payload = validate_envelope(parse_event(parsed))
    except MalformedEvent as exc:
        return _malformed(exc.cause)
    except PayloadError as exc:
        return _malformed(exc)
    status = store(db.session(), payload, source="webhook", notify=not inbox_runtime.wakes_itself(current_app))
    metrics.webhook_event(payload["event"], status)
    if status == "received":
        inbox_runtime.acknowledged(current_app, payload, Cause.by(Actor.workos(), request_info()))
    return jsonify({"event_id": payload["id"], "status": status})
