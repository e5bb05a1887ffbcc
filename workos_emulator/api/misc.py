"""Events API, Admin Portal links, roles and webhook endpoints."""

from __future__ import annotations

import re
import secrets
from typing import Any

from flask import Blueprint, Response, jsonify, request

from .. import serialize
from ..errors import ApiError, invalid_params
from ..http import csv_arg, json_body, opt_str, require_str
from ..ids import iso, new_id, parse_iso, token
from ..pagination import paginate
from ..state import emulator
from ..store import Entity

bp = Blueprint("misc", __name__)

EVENT_TYPE = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)+")
PORTAL_INTENTS = {"sso", "dsync", "audit_logs", "log_streams", "domain_verification", "certificate_renewal",
                  "bring_your_own_key"}


# ---- events --------------------------------------------------------------------------------------------
@bp.get("/events")
def list_events() -> Any:
    """``GET /events`` (``events``: comma-joined exact event types, optional; ranges; organization).

    WorkOS documents ``events`` as an optional list of event types (spec 0.61.0), not patterns: a wildcard
    such as ``dsync.*`` is refused with 422 rather than matched. Without ``events`` every type is listed; an
    empty ``events=`` names no type and is refused.
    """
    emu = emulator()
    types = csv_arg("events")
    if not types and "events" in request.args:
        raise ApiError(422, "events is required.", "invalid_request_parameters",
                       errors=[{"code": "required", "field": "events"}])
    not_types = [t for t in types if not EVENT_TYPE.fullmatch(t)]
    if not_types:
        raise invalid_params(f"events must be event types such as dsync.user.created, not {not_types[0]!r}.",
                             "events")
    org_id = request.args.get("organization_id")
    try:
        start = parse_iso(request.args["range_start"]) if request.args.get("range_start") else None
        end = parse_iso(request.args["range_end"]) if request.args.get("range_end") else None
    except ValueError:
        raise ApiError(422, "range_start/range_end must be ISO-8601 timestamps.", "invalid_request_parameters",
                       errors=[{"code": "invalid", "field": "range_start"}]) from None
    wanted = set(types) if types else None
    with emu.store.lock:
        items = []
        for ev in emu.store.events:
            p = ev["payload"]
            if wanted is not None and p["event"] not in wanted:
                continue
            if org_id and ev["organization_id"] != org_id:
                continue
            created = parse_iso(p["created_at"]) if (start or end) else None
            if start and created and created < start:
                continue
            if end and created and created > end:
                continue
            items.append(p)
        return jsonify(paginate(items, serialize.snapshot))


# ---- admin portal ----------------------------------------------------------------------------------------
@bp.post("/portal/generate_link")
def generate_link() -> Any:
    """``POST /portal/generate_link`` -> ``{"link"}`` to a small emulator page."""
    emu = emulator()
    data = json_body()
    org_id = require_str(data, "organization")
    intent = opt_str(data, "intent") or "sso"
    if intent not in PORTAL_INTENTS:
        raise invalid_params(f"intent must be one of {sorted(PORTAL_INTENTS)}.", "intent")
    with emu.store.lock:
        emu.store.get("organizations", org_id, "Organization")
        tok = token(18)
        emu.store.portal_links[tok] = {
            "organization_id": org_id,
            "intent": intent,
            "return_url": opt_str(data, "return_url"),
            "success_url": opt_str(data, "success_url"),
            "external_user_id": opt_str(data, "external_user_id"),
            "created_at": iso(),
        }
    return jsonify({"link": f"{emu.issuer()}/portal/{tok}"}), 201


@bp.post("/portal/revoke_link")
def revoke_link() -> Any:
    """``POST /portal/revoke_link`` (revokes the organization's links, optionally per external user)."""
    emu = emulator()
    data = json_body()
    org_id = require_str(data, "organization")
    ext = opt_str(data, "external_user_id")
    with emu.store.lock:
        emu.store.get("organizations", org_id, "Organization")
        for tok in [t for t, v in emu.store.portal_links.items()
                    if v["organization_id"] == org_id and (ext is None or v["external_user_id"] == ext)]:
            del emu.store.portal_links[tok]
    return Response(status=204)


# ---- roles ---------------------------------------------------------------------------------------------
@bp.get("/authorization/roles")
def list_environment_roles() -> Any:
    """``GET /authorization/roles``."""
    emu = emulator()
    with emu.store.lock:
        return jsonify({"object": "list", "data": [serialize.role(r) for r in emu.store.roles.values()]})


@bp.get("/authorization/roles/<slug>")
def get_environment_role(slug: str) -> Any:
    """``GET /authorization/roles/{slug}``: 404 for a slug no role has."""
    emu = emulator()
    with emu.store.lock:
        return jsonify(serialize.role(emu.store.get("roles", slug, "Role")))


ROLE_SLUG = re.compile(r"[a-z0-9][a-z0-9_:-]*")


def _limited(data: dict[str, Any], name: str, limit: int, *, required: bool) -> str | None:
    value = require_str(data, name) if required else opt_str(data, name)
    if value is not None and len(value) > limit:
        raise invalid_params(f"{name} must be at most {limit} characters.", name)
    return value


@bp.post("/authorization/roles")
def create_environment_role() -> Any:
    """``POST /authorization/roles`` (``slug``, ``name``: at most 48 characters; ``description``: at most 150;
    ``resource_type_slug``: ``organization`` when absent): 201 with the role, and a ``role.created`` event; 409
    ``role_slug_conflict`` for a slug taken; 422 for a missing or malformed field."""
    emu = emulator()
    data = json_body()
    slug = str(_limited(data, "slug", 48, required=True))
    if not ROLE_SLUG.fullmatch(slug):
        raise invalid_params("slug must be lowercase letters, digits, '-', '_' or ':'.", "slug")
    name = _limited(data, "name", 48, required=True)
    description = _limited(data, "description", 150, required=False)
    resource_type = _limited(data, "resource_type_slug", 48, required=False) or "organization"
    with emu.store.lock:
        if slug in emu.store.roles:
            raise ApiError(409, f"A role with slug '{slug}' already exists.", "role_slug_conflict")
        now = iso()
        role: Entity = {
            "id": new_id("role"), "slug": slug, "name": name, "description": description,
            "type": "EnvironmentRole", "resource_type_slug": resource_type, "permissions": [],
            "created_at": now, "updated_at": now,
        }
        emu.store.roles[slug] = role
        emu.emit("role.created", {"object": "role", "slug": slug, "resource_type_slug": resource_type,
                                  "permissions": [], "created_at": now, "updated_at": now})
        return jsonify(serialize.role(role)), 201


@bp.get("/authorization/organizations/<org_id>/roles")
def list_organization_roles(org_id: str) -> Any:
    """``GET /authorization/organizations/{id}/roles`` (environment roles apply to every organization)."""
    emu = emulator()
    with emu.store.lock:
        emu.store.get("organizations", org_id, "Organization")
        return jsonify({"object": "list", "data": [serialize.role(r) for r in emu.store.roles.values()]})


# ---- webhook endpoints -------------------------------------------------------------------------------------
def _event_types(data: dict[str, Any]) -> list[str]:
    """``events`` of the public webhook-endpoint API: event types only (patterns are the control API's)."""
    events = _events_list(data)
    unknown = [e for e in events if not EVENT_TYPE.fullmatch(e)]
    if unknown:  # the shape spec 0.61.0 documents for this endpoint's 422
        raise ApiError(422, "events must be event types such as dsync.user.created.", "invalid_request_parameters",
                       errors=[{"code": "unknown_event_type", "message": f"Invalid event type {e!r}.",
                                "field": "events"} for e in unknown])
    return events


def _events_list(data: dict[str, Any]) -> list[str]:
    events = data.get("events")
    if events is None:
        return []
    if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
        raise invalid_params("events must be a list of event names.", "events")
    return events


def _check_url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise ApiError(422, "endpoint_url must be an http(s) URL.", "invalid_url")
    return url


def upsert_endpoint(url: str, secret: str | None, events: list[str], *, replace: bool) -> tuple[Entity, bool]:
    """Create (or, with ``replace``, update by URL) a webhook endpoint; returns (endpoint, created)."""
    emu = emulator()
    with emu.store.lock:
        for ep in emu.store.webhook_endpoints.values():
            if ep["endpoint_url"] == url:
                if not replace:
                    raise ApiError(409, "An endpoint with this URL already exists.", "duplicate_endpoint")
                if secret:
                    ep["secret"] = secret
                ep["events"] = events
                ep["status"] = "enabled"
                serialize.touch(ep)
                return ep, False
        now = iso()
        ep = {
            "id": new_id("we"),
            "endpoint_url": url,
            "secret": secret or f"whsec_{secrets.token_urlsafe(24)}",
            "status": "enabled",
            "events": events,
            "created_at": now,
            "updated_at": now,
        }
        emu.store.webhook_endpoints[ep["id"]] = ep
        return ep, True


@bp.get("/webhook_endpoints")
def list_webhook_endpoints() -> Any:
    """``GET /webhook_endpoints``."""
    emu = emulator()
    with emu.store.lock:
        return jsonify(paginate(list(emu.store.webhook_endpoints.values()), serialize.webhook_endpoint))


@bp.post("/webhook_endpoints")
def create_webhook_endpoint() -> Any:
    """``POST /webhook_endpoints``."""
    data = json_body()
    url = _check_url(require_str(data, "endpoint_url"))
    ep, _ = upsert_endpoint(url, None, _event_types(data), replace=False)
    return jsonify(serialize.webhook_endpoint(ep)), 201


@bp.patch("/webhook_endpoints/<endpoint_id>")
def update_webhook_endpoint(endpoint_id: str) -> Any:
    """``PATCH /webhook_endpoints/{id}``."""
    emu = emulator()
    data = json_body()
    with emu.store.lock:
        ep = emu.store.get("webhook_endpoints", endpoint_id, "WebhookEndpoint")
        if "endpoint_url" in data:
            ep["endpoint_url"] = _check_url(require_str(data, "endpoint_url"))
        if "events" in data:
            ep["events"] = _event_types(data)
        if "status" in data:
            if data["status"] not in ("enabled", "disabled"):
                raise invalid_params("status must be enabled or disabled.", "status")
            ep["status"] = data["status"]
        serialize.touch(ep)
        return jsonify(serialize.webhook_endpoint(ep))


@bp.delete("/webhook_endpoints/<endpoint_id>")
def delete_webhook_endpoint(endpoint_id: str) -> Any:
    """``DELETE /webhook_endpoints/{id}``."""
    emu = emulator()
    with emu.store.lock:
        emu.store.get("webhook_endpoints", endpoint_id, "WebhookEndpoint")
        del emu.store.webhook_endpoints[endpoint_id]
    return Response(status=204)
