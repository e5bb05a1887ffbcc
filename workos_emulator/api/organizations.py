"""Organizations and organization domains."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from .. import serialize
from ..errors import ApiError, invalid_params
from ..http import csv_arg, json_body, opt_str, require_str
from ..ids import iso, new_id, token
from ..pagination import paginate
from ..state import emulator
from ..store import Entity, Store

bp = Blueprint("organizations", __name__)


def _created(body: dict[str, Any]) -> tuple[Response, int]:
    return jsonify(body), 201


def _metadata(data: dict[str, Any]) -> dict[str, str] | None:
    if "metadata" not in data:
        return None
    md = data["metadata"]
    if md is None:
        return {}
    if not isinstance(md, dict) or not all(isinstance(v, str) for v in md.values()):
        raise ApiError(400, "metadata must be an object of string values.", "invalid_metadata")
    return dict(md)


def _domain_entries(data: dict[str, Any]) -> list[tuple[str, str]] | None:
    """``domains`` (strings) and/or ``domain_data`` (``{domain, state}``) as (domain, state) pairs."""
    if data.get("domains") is None and data.get("domain_data") is None:
        return None
    out: list[tuple[str, str]] = []
    for d in data.get("domains") or []:
        if not isinstance(d, str) or "." not in d:
            raise invalid_params(f"Invalid domain: {d!r}.", "domains")
        out.append((d.lower(), "verified"))
    for d in data.get("domain_data") or []:
        if not isinstance(d, dict) or not isinstance(d.get("domain"), str):
            raise invalid_params("domain_data entries need a domain.", "domain_data")
        out.append((d["domain"].lower(), d.get("state") or "pending"))
    return out


def _set_domains(store: Store, org_id: str, entries: list[tuple[str, str]]) -> None:
    for d in [d for d in store.org_domains(org_id) if d["domain"] not in {e[0] for e in entries}]:
        del store.organization_domains[d["id"]]
    existing = {d["domain"] for d in store.org_domains(org_id)}
    for domain, state in entries:
        owner = store.org_for_domain(domain, verified_only=False)
        if owner is not None and owner["id"] != org_id:
            raise ApiError(409, f"Domain {domain} is already used by another organization.", "domain_already_exists")
        if domain not in existing:
            _new_domain(store, org_id, domain, state)


def _new_domain(store: Store, org_id: str, domain: str, state: str) -> Entity:
    now = iso()
    d = {
        "id": new_id("org_domain"),
        "organization_id": org_id,
        "domain": domain,
        "state": state,
        "verification_strategy": "dns",
        "verification_token": token(12),
        "verification_prefix": "workos-verification",
        "created_at": now,
        "updated_at": now,
    }
    store.organization_domains[d["id"]] = d
    return d


@bp.get("/organizations")
def list_organizations() -> Any:
    """``GET /organizations`` (filters: ``domains`` comma-joined, ``search``)."""
    emu = emulator()
    domains = {d.lower() for d in csv_arg("domains")}
    search = request.args.get("search", "").lower()
    with emu.store.lock:
        store = emu.store
        items = [
            o
            for o in store.organizations.values()
            if (not domains or domains & {d["domain"] for d in store.org_domains(o["id"])})
            and (not search or search in o["name"].lower())
        ]
        return jsonify(paginate(items, lambda o: serialize.organization(store, o)))


@bp.post("/organizations")
def create_organization() -> Any:
    """``POST /organizations``."""
    emu = emulator()
    data = json_body()
    name = require_str(data, "name")
    metadata = _metadata(data) or {}
    entries = _domain_entries(data) or []
    external_id = opt_str(data, "external_id")
    with emu.store.lock:
        store = emu.store
        if external_id and any(o.get("external_id") == external_id for o in store.organizations.values()):
            raise ApiError(400, "external_id is already used by another organization.", "external_id_already_used")
        for domain, _ in entries:
            if store.org_for_domain(domain) is not None:
                raise ApiError(409, f"Domain {domain} is already used by another organization.",
                               "domain_already_exists")
        now = iso()
        org: dict[str, Any] = {
            "id": new_id("org"),
            "name": name,
            "allow_profiles_outside_organization": bool(data.get("allow_profiles_outside_organization", False)),
            "metadata": metadata,
            "external_id": external_id,
            "created_at": now,
            "updated_at": now,
        }
        store.organizations[org["id"]] = org
        _set_domains(store, org["id"], entries)
        out = serialize.organization(store, org)
        emu.emit("organization.created", out, org["id"])
        return _created(out)


@bp.get("/organizations/<org_id>")
def get_organization(org_id: str) -> Any:
    """``GET /organizations/{id}``."""
    emu = emulator()
    with emu.store.lock:
        return jsonify(serialize.organization(emu.store, emu.store.get("organizations", org_id, "Organization")))


@bp.get("/organizations/external_id/<external_id>")
def get_organization_by_external_id(external_id: str) -> Any:
    """``GET /organizations/external_id/{external_id}``."""
    emu = emulator()
    with emu.store.lock:
        for o in emu.store.organizations.values():
            if o.get("external_id") == external_id:
                return jsonify(serialize.organization(emu.store, o))
    raise ApiError(404, f"Organization not found: external_id '{external_id}'.", "entity_not_found")


def update_org(org_id: str, data: dict[str, Any]) -> Entity:
    """Apply an update (REST ``PUT`` or control API), emit ``organization.updated``, return the org JSON."""
    emu = emulator()
    with emu.store.lock:
        store = emu.store
        org = store.get("organizations", org_id, "Organization")
        if "name" in data:
            org["name"] = require_str(data, "name")
        md = _metadata(data)
        if md is not None:
            org["metadata"] = md
        if "external_id" in data:
            org["external_id"] = opt_str(data, "external_id")
        if "stripe_customer_id" in data:
            org["stripe_customer_id"] = opt_str(data, "stripe_customer_id")
        if "allow_profiles_outside_organization" in data:
            org["allow_profiles_outside_organization"] = bool(data["allow_profiles_outside_organization"])
        entries = _domain_entries(data)
        if entries is not None:
            _set_domains(store, org_id, entries)
        serialize.touch(org)
        out = serialize.organization(store, org)
        emu.emit("organization.updated", out, org_id)
        return out


@bp.put("/organizations/<org_id>")
def put_organization(org_id: str) -> Any:
    """``PUT /organizations/{id}``."""
    return jsonify(update_org(org_id, json_body()))


@bp.delete("/organizations/<org_id>")
def delete_organization(org_id: str) -> Any:
    """``DELETE /organizations/{id}`` (cascades to domains, connections, directories, memberships)."""
    emu = emulator()
    with emu.store.lock:
        store = emu.store
        org = store.get("organizations", org_id, "Organization")
        out = serialize.organization(store, org)
        for coll in ("organization_domains", "connections", "directories", "memberships"):
            items = getattr(store, coll)
            for k in [k for k, v in items.items() if v.get("organization_id") == org_id]:
                del items[k]
        for coll in ("directory_users", "directory_groups"):
            items = getattr(store, coll)
            for k in [k for k, v in items.items() if v.get("organization_id") == org_id]:
                del items[k]
        del store.organizations[org_id]
        emu.emit("organization.deleted", out, org_id)
    return Response(status=202)


# ---- organization domains --------------------------------------------------------------------------------
@bp.post("/organization_domains")
def create_organization_domain() -> Any:
    """``POST /organization_domains``."""
    emu = emulator()
    data = json_body()
    domain = require_str(data, "domain").lower()
    org_id = require_str(data, "organization_id")
    with emu.store.lock:
        store = emu.store
        store.get("organizations", org_id, "Organization")
        if store.org_for_domain(domain) is not None:
            raise ApiError(409, f"Domain {domain} already exists.", "domain_already_exists")
        d = _new_domain(store, org_id, domain, "pending")
        out = serialize.organization_domain(d)
        emu.emit("organization_domain.created", out, org_id)
        return _created(out)


@bp.get("/organization_domains/<domain_id>")
def get_organization_domain(domain_id: str) -> Any:
    """``GET /organization_domains/{id}``."""
    emu = emulator()
    with emu.store.lock:
        return jsonify(serialize.organization_domain(
            emu.store.get("organization_domains", domain_id, "OrganizationDomain")))


@bp.delete("/organization_domains/<domain_id>")
def delete_organization_domain(domain_id: str) -> Any:
    """``DELETE /organization_domains/{id}``."""
    emu = emulator()
    with emu.store.lock:
        d = emu.store.get("organization_domains", domain_id, "OrganizationDomain")
        del emu.store.organization_domains[domain_id]
        emu.emit("organization_domain.deleted", serialize.organization_domain(d), d["organization_id"])
    return Response(status=204)


@bp.post("/organization_domains/<domain_id>/verify")
def verify_organization_domain(domain_id: str) -> Any:
    """``POST /organization_domains/{id}/verify`` (always succeeds in the emulator)."""
    emu = emulator()
    with emu.store.lock:
        d = emu.store.get("organization_domains", domain_id, "OrganizationDomain")
        if d["state"] == "verified":
            raise ApiError(400, "Domain is already verified.", "domain_already_verified")
        d["state"] = "verified"
        serialize.touch(d)
        out = serialize.organization_domain(d)
        emu.emit("organization_domain.verified", out, d["organization_id"])
        return _created(out)
