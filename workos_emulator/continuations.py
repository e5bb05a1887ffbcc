"""AuthKit sign-ins finished in a second step: organization selection, and impersonation started from the
control API (WorkOS starts it from its dashboard)."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, jsonify

from . import flows, redirects
from .errors import ApiError, invalid_params
from .http import json_body, opt_str, require_str
from .ids import token
from .pending import take_pending
from .sessions import check_client, sign_in
from .state import Emulator, emulator
from .store import Entity

bp = Blueprint("continuations", __name__, url_prefix="/_emulator")

ORGANIZATION_SELECTION_GRANT = "urn:workos:oauth:grant-type:organization-selection"


def authenticate_organization_selection(emu: Emulator, body: dict[str, Any], ip: str | None,
                                        ua: str | None) -> dict[str, Any]:
    """``grant_type=urn:workos:oauth:grant-type:organization-selection``: finish a sign-in that answered
    ``organization_selection_required``, in the organization the user chose."""
    store = emu.store
    with store.lock:
        pending_token = body.get("pending_authentication_token")
        org_id = body.get("organization_id")
        if not isinstance(pending_token, str) or not pending_token:
            raise invalid_params("pending_authentication_token is required.", "pending_authentication_token")
        if not isinstance(org_id, str) or not org_id:
            raise invalid_params("organization_id is required.", "organization_id")
        check_client(emu, body, secret_required=True)
        pending = take_pending(emu, pending_token, "organization_selection")
        membership = store.membership(pending["user_id"], org_id)
        if membership is None or membership["status"] != "active":
            raise ApiError(400, f"The user is not a member of organization '{org_id}'.", "invalid_organization_id")
        del store.pending_authentications[pending_token]
        user = store.users.get(pending["user_id"])
        if user is None:
            raise ApiError(400, "The pending authentication token is invalid or has expired.",
                           "invalid_pending_authentication_token")
        return sign_in(emu, user, org_id, pending["record"], body.get("ip_address") or ip,
                       body.get("user_agent") or ua)


def impersonation_code(emu: Emulator, user: Entity, impersonator: Entity, org_id: str | None,
                       redirect_uri: str) -> str:
    """A code whose exchange starts an impersonation session (``authentication_method: Impersonation``)."""
    code = token(24)
    emu.store.codes[code] = {
        "kind": "authkit", "client_id": emu.config.client_id, "redirect_uri": redirect_uri,
        "code_challenge": None, "code_challenge_method": None, "organization_id": org_id,
        "expires": time.time() + emu.config.code_ttl, "user_id": user["id"],
        "authentication_method": "Impersonation", "connection_id": None, "impersonator": impersonator,
    }
    return code


@bp.post("/impersonations")
def start_impersonation() -> Any:
    """``{user_id, impersonator_email, reason?, organization_id?, redirect_uri?}``: what WorkOS's dashboard
    "Impersonate user" does: 201 ``{code, redirect_url, impersonator}``; the app exchanges the code."""
    emu = emulator()
    data = json_body()
    user_id = require_str(data, "user_id")
    email = require_str(data, "impersonator_email")
    org_id = opt_str(data, "organization_id")
    with emu.store.lock:
        store = emu.store
        user = store.get("users", user_id, "User")
        if org_id:
            membership = store.membership(user_id, org_id)
            if membership is None or membership["status"] != "active":
                raise invalid_params(f"The user is not an active member of '{org_id}'.", "organization_id")
        redirect_uri = opt_str(data, "redirect_uri") or (store.application.get("redirect_uris") or [""])[0]
        if not redirect_uri:
            raise invalid_params("redirect_uri is required.", "redirect_uri")
        redirects.check_redirect_uri(store, redirect_uri)
        impersonator = {"email": email, "reason": opt_str(data, "reason")}
        code = impersonation_code(emu, user, impersonator, org_id, redirect_uri)
    return jsonify({"code": code, "redirect_url": flows.add_query(redirect_uri, code=code),
                    "impersonator": impersonator}), 201
