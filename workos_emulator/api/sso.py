"""Connections and standalone SSO (authorize, token, profile, JWKS, logout)."""

from __future__ import annotations

import secrets
from typing import Any

from flask import Blueprint, Response, jsonify, redirect, render_template, request

from .. import flows, serialize, sessions, signing_certs
from ..errors import ApiError, invalid_params, oauth_error
from ..hosted import begin_authorization
from ..http import json_body, opt_str, require_str
from ..ids import iso, new_id, token
from ..pagination import paginate
from ..state import emulator

bp = Blueprint("sso", __name__)

SAML_DEFAULT = "GenericSAML"
OIDC_DEFAULT = "GenericOIDC"


# ---- connections ---------------------------------------------------------------------------------------
@bp.get("/connections")
def list_connections() -> Any:
    """``GET /connections`` (filters: ``connection_type``, ``organization_id``, ``domain``, ``search``)."""
    emu = emulator()
    ctype = request.args.get("connection_type")
    org_id = request.args.get("organization_id")
    domain = (request.args.get("domain") or "").lower()
    search = (request.args.get("search") or "").lower()
    with emu.store.lock:
        store = emu.store
        items = [
            c
            for c in store.connections.values()
            if (not ctype or c["connection_type"] == ctype)
            and (not org_id or c.get("organization_id") == org_id)
            and (not domain or domain in {d["domain"] for d in store.org_domains(c.get("organization_id") or "")})
            and (not search or search in c["name"].lower())
        ]
        return jsonify(paginate(items, lambda c: serialize.connection(store, c)))


@bp.get("/connections/<conn_id>")
def get_connection(conn_id: str) -> Any:
    """``GET /connections/{id}``."""
    emu = emulator()
    with emu.store.lock:
        return jsonify(serialize.connection(emu.store, emu.store.get("connections", conn_id, "Connection")))


def _options(data: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """Validate ``saml_options``/``oidc_options``; returns (inferred type, stored options without secrets)."""
    saml, oidc = data.get("saml_options"), data.get("oidc_options")
    if saml is not None and oidc is not None:
        raise invalid_params("Provide only one of saml_options and oidc_options.", "saml_options", "oidc_options")
    if saml is not None:
        if not isinstance(saml, dict):
            raise invalid_params("saml_options must be an object.", "saml_options")
        if not (saml.get("idp_metadata_url") or saml.get("idp_metadata_xml") or saml.get("idp_sso_url")):
            raise invalid_params("saml_options needs idp_metadata_url, idp_metadata_xml or idp_sso_url.",
                                 "saml_options")
        return SAML_DEFAULT, {"saml": {k: v for k, v in saml.items() if "key_pair" not in k}}
    if oidc is not None:
        if not isinstance(oidc, dict):
            raise invalid_params("oidc_options must be an object.", "oidc_options")
        missing = [k for k in ("discovery_endpoint", "client_id") if not oidc.get(k)]
        if missing:
            raise invalid_params(f"oidc_options needs {', '.join(missing)}.", *[f"oidc_options.{m}" for m in missing])
        stored = {k: v for k, v in oidc.items() if k != "client_secret"}
        stored["has_client_secret"] = bool(oidc.get("client_secret"))
        return OIDC_DEFAULT, {"oidc": stored}
    return None, {}


@bp.post("/connections")
def create_connection() -> Any:
    """``POST /connections`` (SAML via metadata URL/XML or OIDC via discovery endpoint)."""
    emu = emulator()
    data = json_body()
    org_id = require_str(data, "organization_id")
    inferred, options = _options(data)
    if inferred is None:
        raise invalid_params("saml_options or oidc_options is required.", "saml_options", "oidc_options")
    ctype = opt_str(data, "connection_type") or inferred
    pems = (data.get("saml_options") or {}).get("idp_signing_certs")
    certs = [signing_certs.parse_pem(p) for p in pems] if isinstance(pems, list) else []
    external_id = opt_str(data, "external_id")
    with emu.store.lock:
        store = emu.store
        org = store.get("organizations", org_id, "Organization")
        if external_id:
            for c in store.connections.values():
                if c.get("organization_id") == org_id and c.get("external_id") == external_id:
                    return jsonify(serialize.connection(store, c)), 201
        now = iso()
        conn: dict[str, Any] = {
            "id": new_id("conn"),
            "organization_id": org_id,
            "connection_type": ctype,
            "name": opt_str(data, "name") or org["name"],
            "state": "active",
            "external_key": secrets.token_hex(8),
            "external_id": external_id,
            "created_at": now,
            "updated_at": now,
            "_options": options,
        }
        for cert in certs:
            signing_certs.add(conn, cert)
        store.connections[conn["id"]] = conn
        emu.emit("connection.activated", serialize.connection_event(store, conn), org_id)
        return jsonify(serialize.connection(store, conn)), 201


@bp.patch("/connections/<conn_id>")
def update_connection(conn_id: str) -> Any:
    """``PATCH /connections/{id}``."""
    emu = emulator()
    data = json_body()
    _, options = _options(data)
    with emu.store.lock:
        store = emu.store
        conn = store.get("connections", conn_id, "Connection")
        if "name" in data:
            conn["name"] = require_str(data, "name")
        if data.get("connection_type"):
            conn["connection_type"] = require_str(data, "connection_type")
        if "external_id" in data:
            conn["external_id"] = opt_str(data, "external_id")
        if options:
            conn["_options"] = options
        serialize.touch(conn)
        return jsonify(serialize.connection(store, conn))


@bp.delete("/connections/<conn_id>")
def delete_connection(conn_id: str) -> Any:
    """``DELETE /connections/{id}`` (emits ``connection.deleted``)."""
    emu = emulator()
    with emu.store.lock:
        conn = emu.store.get("connections", conn_id, "Connection")
        conn["state"] = "deleting"
        serialize.touch(conn)
        emu.emit("connection.deleted", serialize.connection_event(emu.store, conn, full=False),
                 conn.get("organization_id"))
        del emu.store.connections[conn_id]
    return Response(status=204)


# ---- SSO -----------------------------------------------------------------------------------------------
@bp.get("/sso/authorize")
def sso_authorize() -> Any:
    """``GET /sso/authorize``: 302 with a code for a ``login_hint`` user, else the hosted IdP picker."""
    return begin_authorization("sso")


@bp.post("/sso/token")
def sso_token() -> Any:
    """``POST /sso/token``: exchange an SSO code for an access token and Profile."""
    emu = emulator()
    data = request.form.to_dict() if request.form else json_body()
    if data.get("grant_type", "authorization_code") != "authorization_code":
        raise oauth_error("unsupported_grant_type", "Only authorization_code is supported.")
    with emu.store.lock:
        record = sessions.take_code(emu, data, "sso")
        profile = emu.store.profile_data[record["profile_id"]]
        access = token(32)
        emu.store.sso_access_tokens[access] = profile["id"]
        return jsonify(
            {"token_type": "Bearer", "access_token": access, "expires_in": 600, "profile": serialize.snapshot(profile)}
        )


@bp.get("/sso/profile")
def sso_profile() -> Any:
    """``GET /sso/profile`` with ``Authorization: Bearer <SSO access token>``."""
    emu = emulator()
    auth = request.headers.get("Authorization", "")
    access = auth.removeprefix("Bearer ").strip()
    with emu.store.lock:
        prof_id = emu.store.sso_access_tokens.get(access)
        if prof_id is None:
            raise ApiError(401, "Invalid access token.", "unauthorized", error="Unauthorized")
        return jsonify(emu.store.profile_data[prof_id])


@bp.get("/sso/jwks/<client_id>")
def jwks(client_id: str) -> Any:
    """``GET /sso/jwks/{client_id}``."""
    emu = emulator()
    if client_id != emu.config.client_id:
        raise ApiError(404, f"Client not found: '{client_id}'.", "entity_not_found")
    return jsonify(emu.keys.jwks())


@bp.post("/sso/logout/authorize")
def sso_logout_authorize() -> Any:
    """``POST /sso/logout/authorize`` ``{profile_id}`` -> ``{logout_url, logout_token}``."""
    emu = emulator()
    data = json_body()
    profile_id = require_str(data, "profile_id")
    with emu.store.lock:
        if profile_id not in emu.store.profile_data:
            raise ApiError(404, f"Profile not found: '{profile_id}'.", "entity_not_found")
        logout_token = token(24)
        emu.store.logout_tokens[logout_token] = {"profile_id": profile_id}
    url = flows.add_query(f"{emu.issuer()}/sso/logout", token=logout_token)
    return jsonify({"logout_url": url, "logout_token": logout_token})


@bp.get("/sso/logout")
def sso_logout() -> Any:
    """``GET /sso/logout?token=..``: end the IdP session and redirect to the logout redirect URI."""
    emu = emulator()
    tok = request.args.get("token", "")
    with emu.store.lock:
        rec = emu.store.logout_tokens.pop(tok, None)
        target = emu.store.application.get("logout_redirect_uri")
    if rec is None:
        raise oauth_error("invalid_request", "Invalid or expired logout token.")
    if target:
        return redirect(target, code=302)
    return Response(render_template("message.html", title="Signed out", message="You have been signed out."))
