"""Control API (``/_emulator/...``): plays the customer's IdP and drives the emulator in tests.

All routes except ``/_emulator/health`` need the same ``Authorization: Bearer <api key>``.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from . import redirects, serialize, sessions, signing_certs
from .api.misc import EVENT_TYPE, _check_url, _events_list, upsert_endpoint
from .api.organizations import update_org
from .errors import ApiError, invalid_params
from .http import json_body, opt_str, require_str
from .ids import iso
from .lifecycle import reset_emulator
from .state import emulator

bp = Blueprint("control", __name__, url_prefix="/_emulator")


@bp.get("/health")
def health() -> Any:
    """Liveness probe."""
    return jsonify({"status": "ok"})


@bp.post("/reset")
def reset() -> Any:
    """Reload the seed (keeps the signing key; clears events, sessions, faults, queued webhooks)."""
    reset_emulator(emulator())
    return jsonify({"status": "reset"})


@bp.get("/info")
def info() -> Any:
    """Configuration summary (client id, issuer, kid, registered redirect URIs)."""
    emu = emulator()
    return jsonify({
        "client_id": emu.config.client_id,
        "issuer": emu.issuer(),
        "kid": emu.keys.kid,
        "jwks_url": f"{emu.issuer()}/sso/jwks/{emu.config.client_id}",
        "access_token_ttl": emu.config.access_token_ttl,
        "application": emu.store.application,
    })


@bp.post("/redirect_uris")
def register_redirect_uri() -> Any:
    """``{uri, kind?}``: register a redirect URI (``kind`` ``redirect``, the default) or a sign-out redirect
    (``logout``), as the WorkOS dashboard does; 201 with the application, 200 when it was already registered."""
    data = json_body()
    emu = emulator()
    with emu.store.lock:
        added = redirects.register(emu.store, data.get("kind", "redirect"), data.get("uri"))
        return jsonify(emu.store.application), 201 if added else 200


# ---- webhooks ------------------------------------------------------------------------------------------
@bp.post("/webhook_endpoints")
def register_webhook_endpoint() -> Any:
    """``{endpoint_url, secret?, events?}``: register or replace (by URL) an endpoint with a chosen secret."""
    data = json_body()
    url = _check_url(require_str(data, "endpoint_url"))
    ep, created = upsert_endpoint(url, opt_str(data, "secret"), _events_list(data), replace=True)
    return jsonify(serialize.webhook_endpoint(ep)), 201 if created else 200


@bp.put("/settings/webhooks")
def webhook_settings() -> Any:
    """``{duplicate_rate, reorder, reorder_window, reorder_window_ms, delay_ms, paused, retry_base_s,
    max_attempts, timeout_s}`` (any subset)."""
    emu = emulator()
    data = json_body()
    current = emu.dispatcher.settings.to_dict()
    changes: dict[str, Any] = {}
    for key, value in data.items():
        if key not in current:
            raise invalid_params(f"Unknown setting '{key}'.", key)
        kind = type(current[key])
        if kind is bool:
            if not isinstance(value, bool):
                raise invalid_params(f"{key} must be a boolean.", key)
        elif not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise invalid_params(f"{key} must be a non-negative number.", key)
        if key == "duplicate_rate" and value > 1:
            raise invalid_params("duplicate_rate must be between 0 and 1.", key)
        changes[key] = kind(value)
    return jsonify(emu.dispatcher.update(**changes).to_dict())


@bp.get("/settings/webhooks")
def get_webhook_settings() -> Any:
    """Current delivery settings."""
    return jsonify(emulator().dispatcher.settings.to_dict())


@bp.get("/webhook_deliveries")
def webhook_deliveries() -> Any:
    """Every delivery with its attempts (``?event=`` / ``?status=`` filters)."""
    items = emulator().dispatcher.deliveries()
    if request.args.get("event"):
        items = [d for d in items if d["event"] == request.args["event"]]
    if request.args.get("status"):
        items = [d for d in items if d["status"] == request.args["status"]]
    return jsonify({"data": items})


@bp.post("/webhooks/flush")
def webhooks_flush() -> Any:
    """Wait (``?timeout=`` s, default 30) until queued deliveries are sent or given up."""
    emu = emulator()
    try:
        timeout = float(request.args.get("timeout", "30"))
    except ValueError:
        raise invalid_params("timeout must be a number.", "timeout") from None
    drained = emu.dispatcher.flush(timeout)
    return jsonify({"drained": drained, "pending": emu.dispatcher.pending_count()})


# ---- faults --------------------------------------------------------------------------------------------
@bp.post("/faults")
def add_fault() -> Any:
    """``{method, path (exact or glob), status?, count?, delay_ms?, body?}``."""
    emu = emulator()
    data = json_body()
    path = require_str(data, "path")
    method = opt_str(data, "method") or "*"
    status = data.get("status")
    if status is not None and (not isinstance(status, int) or not 400 <= status <= 599):
        raise invalid_params("status must be an HTTP error status (400-599).", "status")
    count = data.get("count")
    if count is not None and (not isinstance(count, int) or count < 1):
        raise invalid_params("count must be a positive integer.", "count")
    delay = data.get("delay_ms", 0)
    if not isinstance(delay, int) or delay < 0:
        raise invalid_params("delay_ms must be a non-negative integer.", "delay_ms")
    if status is None and not delay:
        raise invalid_params("Give status and/or delay_ms.", "status", "delay_ms")
    body = data.get("body")
    if body is not None and not isinstance(body, dict):
        raise invalid_params("body must be an object.", "body")
    fault = emu.faults.add(method, path, status, count, delay, body)
    return jsonify(fault.to_dict()), 201


@bp.get("/faults")
def list_faults() -> Any:
    """Active faults."""
    return jsonify({"data": emulator().faults.list()})


@bp.delete("/faults")
def clear_faults() -> Any:
    """Remove all faults."""
    emulator().faults.clear()
    return Response(status=204)


# ---- connections and organizations -----------------------------------------------------------------------
def _conn_state(conn_id: str, state: str, event: str) -> Any:
    emu = emulator()
    with emu.store.lock:
        conn = emu.store.get("connections", conn_id, "Connection")
        conn["state"] = state
        serialize.touch(conn)
        emu.emit(event, serialize.connection_event(emu.store, conn), conn.get("organization_id"))
        return jsonify(serialize.connection(emu.store, conn))


@bp.post("/connections/<conn_id>/activate")
def activate_connection(conn_id: str) -> Any:
    """State ``active`` + ``connection.activated``."""
    return _conn_state(conn_id, "active", "connection.activated")


@bp.post("/connections/<conn_id>/deactivate")
def deactivate_connection(conn_id: str) -> Any:
    """State ``inactive`` + ``connection.deactivated``."""
    return _conn_state(conn_id, "inactive", "connection.deactivated")


@bp.delete("/connections/<conn_id>")
def delete_connection(conn_id: str) -> Any:
    """Delete + ``connection.deleted``."""
    emu = emulator()
    with emu.store.lock:
        conn = emu.store.get("connections", conn_id, "Connection")
        conn["state"] = "deleting"
        serialize.touch(conn)
        emu.emit("connection.deleted", serialize.connection_event(emu.store, conn, full=False),
                 conn.get("organization_id"))
        del emu.store.connections[conn_id]
    return Response(status=204)


@bp.post("/connections/<conn_id>/certificate")
def certificate_event(conn_id: str) -> Any:
    """``{"kind": "renewed"|"renewal_required", "days_until_expiry"?: int}``: SAML certificate events; without
    ``days_until_expiry`` a connection holding certificates warns of the one the IdP signs with."""
    emu = emulator()
    data = json_body()
    kind = data.get("kind", "renewal_required")
    if kind not in ("renewed", "renewal_required"):
        raise invalid_params("kind must be renewed or renewal_required.", "kind")
    days = data.get("days_until_expiry", 30)
    if not isinstance(days, int):
        raise invalid_params("days_until_expiry must be an integer.", "days_until_expiry")
    from datetime import timedelta

    from .ids import utcnow

    with emu.store.lock:
        conn = emu.store.get("connections", conn_id, "Connection")
        expiry = utcnow() + timedelta(days=days if kind == "renewal_required" else 365)
        held = signing_certs.signing_certificate(conn)
        if held is not None and kind == "renewal_required" and "days_until_expiry" not in data:
            # The certificate the IdP signs with, as WorkOS warns of the one in use.
            expiry = signing_certs.expiry(held)
            days = (expiry - utcnow()).days
        payload: dict[str, Any] = {
            "connection": {"id": conn["id"], "organization_id": conn.get("organization_id")},
            "certificate": {"certificate_type": "ResponseSigning", "expiry_date": iso(expiry),
                            "is_expired": days < 0},
        }
        if kind == "renewed":
            payload["renewed_at"] = iso()
            del payload["certificate"]["is_expired"]
            event = "connection.saml_certificate_renewed"
        else:
            payload["days_until_expiry"] = days
            event = "connection.saml_certificate_renewal_required"
        return jsonify(emu.emit(event, payload, conn.get("organization_id"))), 201


@bp.patch("/organizations/<org_id>")
def patch_organization(org_id: str) -> Any:
    """Update an organization (``organization.updated``)."""
    return jsonify(update_org(org_id, json_body()))


@bp.post("/organization_domains/<domain_id>/state")
def set_domain_state(domain_id: str) -> Any:
    """Set a domain's verification ``state`` (``pending``, ``verified`` or ``failed``), as the DNS check or the
    Admin Portal's ``domain_verification`` flow would; emits ``organization_domain.*`` and ``organization.updated``.
    ``failed`` takes an optional ``reason`` (:data:`FAILURE_REASONS`): WorkOS's ``verification_failed`` event
    carries ``{"reason", "organization_domain"}``, the other two the domain itself."""
    emu = emulator()
    body = json_body()
    state, reason = body.get("state"), body.get("reason", FAILURE_REASONS[0])
    if state not in DOMAIN_EVENTS:
        raise ApiError(422, f"state must be one of {sorted(DOMAIN_EVENTS)}.", "invalid_request_parameters")
    if reason not in FAILURE_REASONS:
        raise ApiError(422, f"reason must be one of {list(FAILURE_REASONS)}.", "invalid_request_parameters")
    with emu.store.lock:
        d = emu.store.get("organization_domains", domain_id, "OrganizationDomain")
        d["state"] = state
        serialize.touch(d)
        out = serialize.organization_domain(d)
        data = {"reason": reason, "organization_domain": out} if state == "failed" else out
        emu.emit(DOMAIN_EVENTS[state], data, d["organization_id"])
        org = emu.store.get("organizations", d["organization_id"], "Organization")
        serialize.touch(org)
        emu.emit("organization.updated", serialize.organization(emu.store, org), org["id"])
        return jsonify(out)


DOMAIN_EVENTS = {"pending": "organization_domain.updated", "verified": "organization_domain.verified",
                 "failed": "organization_domain.verification_failed"}
FAILURE_REASONS = ("domain_verification_period_expired", "domain_verified_by_other_organization")
"""WorkOS's reasons for ``organization_domain.verification_failed`` (OpenAPI 0.61.0), the first the default."""


# ---- sessions ------------------------------------------------------------------------------------------
@bp.post("/sessions/<session_id>/expire")
def expire_session(session_id: str) -> Any:
    """Force a session to expire now (its refresh token then fails with ``invalid_grant``)."""
    emu = emulator()
    with emu.store.lock:
        s = emu.store.get("sessions", session_id, "Session")
        s["expires_at"] = iso()
        serialize.touch(s)
        return jsonify(serialize.session(s))


@bp.post("/sessions/<session_id>/revoke")
def revoke_session(session_id: str) -> Any:
    """Revoke a session (``session.revoked``)."""
    return jsonify(serialize.session(sessions.revoke_session(emulator(), session_id)))


@bp.get("/events")
def all_events() -> Any:
    """Every recorded event (no filter required), oldest first."""
    emu = emulator()
    with emu.store.lock:
        return jsonify({"data": [serialize.snapshot(e["payload"]) for e in emu.store.events]})


@bp.post("/events")
def record_event() -> Any:
    """``{"event", "data", "organization_id"?}``: record an event no other control route produces (e.g.
    ``authentication.*``) as WorkOS would: listed by ``GET /events`` and sent to the webhook endpoints.

    The caller supplies *data* in the event type's shape (it is not checked against the spec); the nullable
    fields every ``authentication.*`` event carries (``ip_address``, ``user_agent``, ``user_id``) default to null.
    """
    data = json_body()
    event = require_str(data, "event")
    if not EVENT_TYPE.fullmatch(event):
        raise invalid_params("event must be one event type such as authentication.sso_succeeded.", "event")
    payload = data.get("data")
    if not isinstance(payload, dict):
        raise invalid_params("data must be an object.", "data")
    if event.startswith("authentication."):
        # WorkOS's authentication events always carry these (nullable) fields: keep the payload valid per spec.
        for name in ("ip_address", "user_agent", "user_id"):
            payload.setdefault(name, None)
    return jsonify(emulator().emit(event, payload, opt_str(data, "organization_id"))), 201


@bp.errorhandler(KeyError)
def _key_error(exc: KeyError) -> Any:  # pragma: no cover - defensive
    raise ApiError(422, f"Missing field {exc}.", "invalid_request_parameters")
