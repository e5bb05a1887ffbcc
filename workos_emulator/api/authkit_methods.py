"""AuthKit's password, Magic Auth and email-verification grants, ``/user_management/magic_auth``, and the control
routes that stand in for the emails WorkOS would send (``/_emulator/magic_auth``, ``/_emulator/email_verification``,
``/_emulator/seed_passwords``)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

from .. import authkit, sessions
from ..errors import invalid_params, oauth_error
from ..http import json_body, require_str
from ..seed import load_seed_file
from ..seed_passwords import sync_seed_passwords
from ..state import Emulator, emulator
from ..store import Entity

bp = Blueprint("authkit_methods", __name__, url_prefix="/user_management")
control_bp = Blueprint("authkit_control", __name__, url_prefix="/_emulator")

PASSWORD_GRANT = "password"
MAGIC_AUTH_GRANT = "urn:workos:oauth:grant-type:magic-auth:code"
EMAIL_VERIFICATION_GRANT = "urn:workos:oauth:grant-type:email-verification:code"
GRANTS = frozenset({PASSWORD_GRANT, MAGIC_AUTH_GRANT, EMAIL_VERIFICATION_GRANT})


def authenticate(emu: Emulator, grant: str, data: dict[str, Any], ip: str | None, ua: str | None) -> dict[str, Any]:
    """``POST /user_management/authenticate`` for the three grants in :data:`GRANTS` (client secret required)."""
    ip = data.get("ip_address") or ip
    ua = data.get("user_agent") or ua
    with emu.store.lock:
        sessions.check_client(emu, data, secret_required=True)
        if grant == EMAIL_VERIFICATION_GRANT:
            user, pending = authkit.verify_email(emu, require_str(data, "pending_authentication_token"),
                                                 require_str(data, "code"), ip, ua)
            method = pending.get("method") or authkit.PASSWORD
            authkit.emit_result(emu, method, user["email"], user, ip, ua)
            return _sign_in(emu, data, user, pending.get("organization_id"), method, ip, ua)
        email = require_str(data, "email").strip()
        if grant == PASSWORD_GRANT:
            user = authkit.verify_password(emu, email, require_str(data, "password"), ip, ua)
            return _sign_in(emu, data, user, None, authkit.PASSWORD, ip, ua)
        user = authkit.verify_magic_code(emu, email, require_str(data, "code"), ip, ua)
        return _sign_in(emu, data, user, None, authkit.MAGIC_AUTH, ip, ua)


def _sign_in(emu: Emulator, data: dict[str, Any], user: Entity, org_id: str | None, method: str, ip: str | None,
             ua: str | None) -> dict[str, Any]:
    """The session of a sign-in AuthKit authenticated by *method*, in *org_id*, else in the user's only active
    organization; a member of several gets ``organization_selection_required``, as on the code exchange."""
    if org_id is None:
        orgs = [m["organization_id"] for m in emu.store.user_memberships(user["id"])]
        org_id = orgs[0] if len(orgs) == 1 else None
    record = sessions.sign_in_record(emu, user, method, data.get("client_id"))
    return sessions.sign_in(emu, user, org_id, record, ip, ua)


@bp.post("/magic_auth")
def create_magic_auth() -> Any:
    """``POST /user_management/magic_auth`` ``{email}``: 201 MagicAuth (the code is also readable through
    ``GET /_emulator/magic_auth?email=``); 400 ``authentication_method_not_allowed`` for an SSO-only email;
    429 past 3 codes per 60 s per email."""
    emu = emulator()
    email = require_str(json_body(), "email").strip()
    if "@" not in email:
        raise invalid_params("email is invalid.", "email")
    with emu.store.lock:
        if authkit.sso_connections(emu.store, email):
            raise oauth_error("authentication_method_not_allowed",
                              "Magic Auth is not allowed for this user: their organization requires SSO.")
        record = authkit.create_magic_auth(emu, email)
        return jsonify(authkit.magic_auth_view(record)), 201


@bp.get("/magic_auth/<magic_auth_id>")
def get_magic_auth(magic_auth_id: str) -> Any:
    """``GET /user_management/magic_auth/{id}``."""
    emu = emulator()
    with emu.store.lock:
        return jsonify(authkit.magic_auth_view(emu.store.get("magic_auths", magic_auth_id, "MagicAuth")))


def _codes(kind: str) -> Any:
    email = request.args.get("email") or ""
    if "@" not in email:
        raise invalid_params("email is required.", "email")
    emu = emulator()
    with emu.store.lock:
        return jsonify({"data": [c for c in authkit.sent_codes(emu.store, email) if c["kind"] == kind]})


@control_bp.get("/magic_auth")
def sent_magic_codes() -> Any:
    """The Magic Auth codes the emulator would have emailed to ``?email=``, newest first."""
    return _codes("magic_auth")


@control_bp.get("/email_verification")
def sent_verification_codes() -> Any:
    """The email-verification codes pending for ``?email=``, newest first (with their pending token)."""
    return _codes("email_verification")


@control_bp.get("/seed_passwords")
def get_seed_passwords() -> Any:
    """The passwords generated for the seed's users in this data folder (``{email: password}``)."""
    emu = emulator()
    with emu.store.lock:
        return jsonify(sync_seed_passwords(emu.store, load_seed_file(emu.config.seed_path), emu.config.data_dir))
