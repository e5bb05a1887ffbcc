"""AuthKit / User Management: authorize, authenticate, sessions, users, organization memberships."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, redirect, render_template, request

from .. import authkit, redirects, serialize, sessions
from ..continuations import ORGANIZATION_SELECTION_GRANT, authenticate_organization_selection
from ..errors import ApiError, invalid_params, oauth_error
from ..hosted import begin_authorization
from ..http import csv_arg, json_body, opt_str, require_str
from ..ids import iso, new_id
from ..pagination import paginate
from ..state import emulator
from ..store import Entity
from . import authkit_methods

bp = Blueprint("user_management", __name__, url_prefix="/user_management")


@bp.get("/authorize")
def authorize() -> Any:
    """``GET /user_management/authorize``: 302 for a ``login_hint`` member, else the hosted login page."""
    return begin_authorization("authkit")


@bp.post("/authenticate")
def authenticate() -> Any:
    """``POST /user_management/authenticate`` (``authorization_code``, ``refresh_token``, and AuthKit's own
    ``password``, Magic Auth and email-verification grants)."""
    emu = emulator()
    data = request.form.to_dict() if request.form else json_body()
    grant = data.get("grant_type")
    if grant == "authorization_code":
        out = sessions.authenticate_code(emu, data, request.remote_addr, request.headers.get("User-Agent"))
    elif grant == "refresh_token":
        out = sessions.authenticate_refresh(emu, data)
    elif grant == ORGANIZATION_SELECTION_GRANT:
        out = authenticate_organization_selection(emu, data, request.remote_addr, request.headers.get("User-Agent"))
    elif grant in authkit_methods.GRANTS:
        out = authkit_methods.authenticate(emu, grant, data, request.remote_addr, request.headers.get("User-Agent"))
    elif not grant:
        raise invalid_params("grant_type is required.", "grant_type")
    else:
        raise oauth_error("unsupported_grant_type", f"grant_type '{grant}' is not supported by the emulator.")
    return jsonify(out)


# ---- sessions ------------------------------------------------------------------------------------------
@bp.get("/users/<user_id>/sessions")
def list_sessions(user_id: str) -> Any:
    """``GET /user_management/users/{id}/sessions``."""
    emu = emulator()
    with emu.store.lock:
        emu.store.get("users", user_id, "User")
        items = [s for s in emu.store.sessions.values() if s["user_id"] == user_id]
        return jsonify(paginate(items, serialize.session))


@bp.post("/sessions/revoke")
def revoke_session() -> Any:
    """``POST /user_management/sessions/revoke`` ``{session_id}``."""
    data = json_body()
    emu = emulator()
    session_id = require_str(data, "session_id")
    with emu.store.lock:
        if session_id not in emu.store.sessions:  # spec 0.61.0: 200 or 400 {message}
            raise ApiError(400, f"Session not found: '{session_id}'.", "session_not_found")
        sessions.revoke_session(emu, session_id)
    return Response(status=200)


@bp.get("/sessions/logout")
def logout() -> Any:
    """``GET /user_management/sessions/logout?session_id&return_to``: revoke and redirect to ``return_to`` (a
    registered sign-out redirect, else 422 and nothing revoked) or the default sign-out redirect."""
    emu = emulator()
    session_id = request.args.get("session_id")
    if not session_id:
        raise invalid_params("session_id is required.", "session_id")
    with emu.store.lock:
        if session_id not in emu.store.sessions:  # spec 0.61.0: 200, 302 or 422 {message}
            raise ApiError(422, f"Session not found: '{session_id}'.", "session_not_found")
        return_to = request.args.get("return_to")
        if return_to:  # checked before the revocation: a refused logout changes nothing
            redirects.check_return_to(emu.store, return_to)
        sessions.revoke_session(emu, session_id)
        return_to = return_to or emu.store.application.get("logout_redirect_uri")
    if return_to:
        return redirect(return_to, code=302)
    return Response(render_template("message.html", title="Signed out", message="You have been signed out."))


# ---- users ---------------------------------------------------------------------------------------------
@bp.get("/users")
def list_users() -> Any:
    """``GET /user_management/users`` (filters: ``email``, ``organization_id``)."""
    emu = emulator()
    email = (request.args.get("email") or "").lower()
    org_id = request.args.get("organization_id")
    with emu.store.lock:
        store = emu.store
        members = {m["user_id"] for m in store.memberships.values() if m["organization_id"] == org_id}
        items = [
            u
            for u in store.users.values()
            if (not email or u["email"].lower() == email) and (not org_id or u["id"] in members)
        ]
        return jsonify(paginate(items, serialize.user))


@bp.post("/users")
def create_user() -> Any:
    """``POST /user_management/users``."""
    emu = emulator()
    data = json_body()
    email = require_str(data, "email")
    if "@" not in email:
        raise invalid_params("email is invalid.", "email")
    with emu.store.lock:
        if emu.store.user_by_email(email):
            raise ApiError(409, "A user with this email already exists.", "user_already_exists")
        now = iso()
        user: dict[str, Any] = {
            "id": new_id("user"),
            "email": email,
            "email_verified": bool(data.get("email_verified", False)),
            "first_name": opt_str(data, "first_name"),
            "last_name": opt_str(data, "last_name"),
            "profile_picture_url": None,
            "external_id": opt_str(data, "external_id"),
            "metadata": dict(data.get("metadata") or {}),
            "last_sign_in_at": None,
            "locale": None,
            "created_at": now,
            "updated_at": now,
        }
        if data.get("password") is not None:
            authkit.set_password(emu.store, user["id"], require_str(data, "password"))
        emu.store.users[user["id"]] = user
        out = serialize.user(user)
        emu.emit("user.created", out)
        return jsonify(out), 201


@bp.get("/users/<user_id>")
def get_user(user_id: str) -> Any:
    """``GET /user_management/users/{id}``."""
    emu = emulator()
    with emu.store.lock:
        return jsonify(serialize.user(emu.store.get("users", user_id, "User")))


@bp.put("/users/<user_id>")
def update_user(user_id: str) -> Any:
    """``PUT /user_management/users/{id}``."""
    emu = emulator()
    data = json_body()
    with emu.store.lock:
        user = emu.store.get("users", user_id, "User")
        for field in ("first_name", "last_name", "external_id", "locale"):
            if field in data:
                user[field] = opt_str(data, field)
        if "email" in data:
            user["email"] = require_str(data, "email")
        if "email_verified" in data:
            user["email_verified"] = bool(data["email_verified"])
        if "metadata" in data:
            user["metadata"] = dict(data.get("metadata") or {})
        if data.get("password") is not None:
            authkit.set_password(emu.store, user_id, require_str(data, "password"))
        serialize.touch(user)
        out = serialize.user(user)
        emu.emit("user.updated", out)
        return jsonify(out)


@bp.delete("/users/<user_id>")
def delete_user(user_id: str) -> Any:
    """``DELETE /user_management/users/{id}`` (also drops memberships and revokes sessions)."""
    emu = emulator()
    with emu.store.lock:
        store = emu.store
        user = store.get("users", user_id, "User")
        for s in [s for s in store.sessions.values() if s["user_id"] == user_id]:
            sessions.revoke_session(emu, s["id"])
        for mid in [k for k, m in store.memberships.items() if m["user_id"] == user_id]:
            del store.memberships[mid]
        del store.users[user_id]
        store.passwords.pop(user_id, None)
        emu.emit("user.deleted", serialize.user(user))
    return Response(status=200)


# ---- organization memberships ------------------------------------------------------------------------------
def _membership_event(kind: str, m: Entity) -> None:
    emu = emulator()
    emu.emit(f"organization_membership.{kind}", serialize.membership(emu.store, m, embed_user=False))


def _role_from(data: dict[str, Any]) -> str | None:
    slug = data.get("role_slug")
    if slug is None and data.get("role_slugs"):
        slugs = data["role_slugs"]
        if not isinstance(slugs, list) or not slugs:
            raise invalid_params("role_slugs must be a non-empty list.", "role_slugs")
        slug = slugs[0]
    if slug is None:
        return None
    if not isinstance(slug, str) or slug not in emulator().store.roles:
        raise ApiError(422, f"Role '{slug}' does not exist.", "invalid_request_parameters",
                       errors=[{"code": "role_not_found", "field": "role_slug"}])
    return slug


@bp.get("/organization_memberships")
def list_memberships() -> Any:
    """``GET /user_management/organization_memberships`` (``organization_id``, ``user_id``, ``statuses``: only
    ``active`` ones when absent, as WorkOS's reference says)."""
    emu = emulator()
    org_id = request.args.get("organization_id")
    user_id = request.args.get("user_id")
    statuses = set(csv_arg("statuses")) or {"active"}
    if not org_id and not user_id:
        raise ApiError(400, "Either organization_id or user_id is required.", "missing_user_id_or_organization_id")
    with emu.store.lock:
        store = emu.store
        items = [
            m
            for m in store.memberships.values()
            if (not org_id or m["organization_id"] == org_id)
            and (not user_id or m["user_id"] == user_id)
            and m["status"] in statuses
        ]
        return jsonify(paginate(items, lambda m: serialize.membership(store, m)))


@bp.post("/organization_memberships")
def create_membership() -> Any:
    """``POST /user_management/organization_memberships``."""
    emu = emulator()
    data = json_body()
    user_id = require_str(data, "user_id")
    org_id = require_str(data, "organization_id")
    role = _role_from(data) or "viewer"
    with emu.store.lock:
        store = emu.store
        store.get("users", user_id, "User")
        store.get("organizations", org_id, "Organization")
        if store.membership(user_id, org_id):
            raise ApiError(409, "The user is already a member of this organization.",
                           "organization_membership_already_exists")
        now = iso()
        m: dict[str, Any] = {
            "id": new_id("om"),
            "user_id": user_id,
            "organization_id": org_id,
            "status": "active",
            "role_slug": role,
            "directory_managed": False,
            "custom_attributes": {},
            "created_at": now,
            "updated_at": now,
        }
        store.memberships[m["id"]] = m
        _membership_event("created", m)
        return jsonify(serialize.membership(store, m)), 201


@bp.get("/organization_memberships/<om_id>")
def get_membership(om_id: str) -> Any:
    """``GET /user_management/organization_memberships/{id}``."""
    emu = emulator()
    with emu.store.lock:
        return jsonify(serialize.membership(emu.store, emu.store.get("memberships", om_id, "OrganizationMembership")))


@bp.put("/organization_memberships/<om_id>")
def update_membership(om_id: str) -> Any:
    """``PUT /user_management/organization_memberships/{id}`` (role change)."""
    emu = emulator()
    data = json_body()
    role = _role_from(data)
    with emu.store.lock:
        m = emu.store.get("memberships", om_id, "OrganizationMembership")
        if role:
            m["role_slug"] = role
        serialize.touch(m)
        _membership_event("updated", m)
        return jsonify(serialize.membership(emu.store, m))


@bp.delete("/organization_memberships/<om_id>")
def delete_membership(om_id: str) -> Any:
    """``DELETE /user_management/organization_memberships/{id}``."""
    emu = emulator()
    with emu.store.lock:
        m = emu.store.get("memberships", om_id, "OrganizationMembership")
        del emu.store.memberships[om_id]
        _membership_event("deleted", m)
    return Response(status=200)


def _set_status(om_id: str, status: str) -> Any:
    emu = emulator()
    with emu.store.lock:
        m = emu.store.get("memberships", om_id, "OrganizationMembership")
        if m["status"] == "pending" and status == "inactive":
            raise ApiError(400, "Cannot deactivate a pending membership.",
                           "cannot_deactivate_pending_organization_membership")
        if m["status"] != status:
            m["status"] = status
            serialize.touch(m)
            _membership_event("updated", m)
        return jsonify(serialize.membership(emu.store, m))


@bp.put("/organization_memberships/<om_id>/deactivate")
def deactivate_membership(om_id: str) -> Any:
    """``PUT .../{id}/deactivate``."""
    return _set_status(om_id, "inactive")


@bp.put("/organization_memberships/<om_id>/reactivate")
def reactivate_membership(om_id: str) -> Any:
    """``PUT .../{id}/reactivate``."""
    return _set_status(om_id, "active")
