"""``/api/v1``: the caller (``/me``), sessions and API keys, documented and paginated.

Lists carry ``next_cursor`` for cursor pagination.
"""

from __future__ import annotations

import dataclasses
import math
from datetime import datetime
from typing import Any, cast

from flask import Response, current_app, jsonify
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from ..errors import AppError
from ..extensions import db
from ..identity import Identity, current_identity, get_identity, request_cause, require_recent_authentication, runtime
from ..local_cache import LocalCache
from ..roles import ALL_PERMISSIONS
from ..services import api_keys as key_service
from ..services import sessions as session_service
from ..step_up import has_admin_scope
from .common import Instant, PageArgsSchema, guard, page_body, page_request, page_schema, timestamp

me_blp = Blueprint("me", __name__, description="The caller's identity.")
sessions_blp = Blueprint("sessions", __name__, description="Dashboard sessions: list and revoke.")
keys_blp = Blueprint("api-keys", __name__, description="Agent API keys: create, list, revoke, rotate.")
BLUEPRINTS = (me_blp, sessions_blp, keys_blp)


# --- schemas --------------------------------------------------------------------------------------------------


SCOPES = sorted(ALL_PERMISSIONS)
"""What an API key may be scoped to: every permission (its effective ones are within its owner's role)."""


class IdentitySchema(Schema):
    auth_type = fields.String(required=True, validate=validate.OneOf(["session", "api_key"]))
    user_id = fields.String(allow_none=True)
    email = fields.String(allow_none=True)
    organization_id = fields.String(required=True)
    role = fields.String(allow_none=True)
    permissions = fields.List(fields.String(), required=True)
    session_id = fields.String(allow_none=True)
    api_key_id = fields.String(allow_none=True)
    scopes = fields.List(fields.String(), required=True)


class SessionSchema(Schema):
    id = fields.String(required=True)
    workos_session_id = fields.String(required=True, allow_none=True, metadata={
        "description": "WorkOS's session id (it can end the session through WorkOS's logout URL): `null` "
                       "unless you may revoke this session (your own, or `sessions:write`)."})
    user_id = fields.String(required=True)
    organization_id = fields.String(required=True)
    auth_method = fields.String(required=True)
    ip_address = fields.String(allow_none=True)
    user_agent = fields.String(allow_none=True)
    remembered = fields.Boolean(required=True)
    created_at = timestamp(allow_none=True)
    last_seen_at = timestamp(allow_none=True)
    expires_at = timestamp(allow_none=True)
    revoked_at = timestamp(allow_none=True)
    revoked_by = fields.String(allow_none=True)
    revoked_reason = fields.String(allow_none=True)


class SessionListArgs(PageArgsSchema):
    user_id = fields.String(validate=validate.Length(max=64),
                            metadata={"description": "Only this user's sessions."})
    include_ended = fields.String(validate=validate.OneOf(["0", "1"]), load_default="0",
                                  metadata={"description": "`1` to include revoked and expired sessions."})


class ReasonSchema(Schema):
    reason = fields.String(validate=validate.Length(max=255), allow_none=True)


class RevokedOneSchema(Schema):
    revoked = fields.Boolean(required=True, metadata={"description": "Whether the session was still active."})
    session_id = fields.String(required=True)


class RevokedCountSchema(Schema):
    revoked = fields.Integer(required=True, metadata={"description": "How many active sessions were revoked."})


class ApiKeySchema(Schema):
    id = fields.String(required=True)
    name = fields.String(required=True)
    prefix = fields.String(required=True)
    organization_id = fields.String(required=True)
    owner_user_id = fields.String(allow_none=True)
    scopes = fields.List(fields.String(validate=validate.OneOf(SCOPES)), required=True)
    status = fields.String(required=True, validate=validate.OneOf(["active", "suspended", "revoked"]))
    expires_at = timestamp(allow_none=True)
    last_used_at = timestamp(allow_none=True)
    created_at = timestamp(allow_none=True)
    revoked_at = timestamp(allow_none=True)
    grace_until = timestamp(allow_none=True)
    rotated_from_id = fields.String(allow_none=True)


class KeyEnvelopeSchema(Schema):
    key = fields.Nested(ApiKeySchema, required=True)


class CreatedKeySchema(Schema):
    secret = fields.String(required=True, metadata={"description": "Shown once; store it now."})
    key = fields.Nested(ApiKeySchema, required=True)


class CreateKeySchema(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=255))
    # An enum in the OpenAPI document (Swagger UI offers the values); an unknown one's 422 lists the valid ones.
    scopes = fields.List(fields.String(validate=validate.OneOf(SCOPES, error="Unknown scope {input!r}; the valid "
                                                                             "scopes are {choices}.")),
                         load_default=lambda: ["data:read"],
                         metadata={"description": "Permissions, within the owner's role: " + ", ".join(SCOPES)})
    expires_at = Instant(allow_none=True, load_default=None)


class RotateKeySchema(Schema):
    grace_seconds = fields.Integer(strict=True, validate=validate.Range(min=0, max=30 * 24 * 3600), load_default=None,
                                   allow_none=True)


SessionPage = page_schema(SessionSchema, "SessionPage")
ApiKeyPage = page_schema(ApiKeySchema, "ApiKeyPage")


def _commit() -> None:
    db.session.commit()


# --- me -------------------------------------------------------------------------------------------------------


@me_blp.route("/me", methods=["GET"])
@guard(me_blp)
@me_blp.response(200, IdentitySchema)
def me() -> Response:
    """The caller's identity."""
    # Already in the documented shape: answering it directly skips a marshmallow dump on the hottest route.
    identity = get_identity()
    assert identity is not None  # the guard let the request through
    app = current_app._get_current_object()  # type: ignore[attr-defined]  # once: the hottest route
    provider = app.json
    rendering = (type(provider), getattr(provider, "compact", None), getattr(provider, "sort_keys", None),
                 getattr(provider, "ensure_ascii", None), app.debug)
    return app.response_class(_me_body(app.extensions["hatidata_auth"].me_bodies, identity, rendering),
                              mimetype=getattr(provider, "mimetype", "application/json"))


def _me_body(bodies: LocalCache[bytes], identity: Identity, rendering: tuple[Any, ...]) -> bytes:
    """``jsonify(identity.to_json())``'s body, rendered once per identity (a frozen value) and way of rendering
    (*rendering*: the JSON provider's class and settings, and the debug flag it indents under; values, never the
    provider itself, which would keep every app a test process builds alive), kept in *bodies* (the app's LRU,
    sized from the expected live sessions like the status caches: each session has its own identity, and a
    smaller cache than the sessions in use renders every body again): an identity's view never changes, and
    rendering it was half of the route's own CPU."""
    key = (identity, rendering)
    body = bodies.get(key)
    if body is None:
        body = cast(bytes, jsonify(identity.to_json()).get_data())
        bodies.set(key, body, math.inf)
    return body


# --- sessions ---------------------------------------------------------------------------------------------------


def _require_key_scope(identity: Identity, permission: str) -> None:
    """API keys reach sessions only through their scopes, even their owner's own sessions."""
    if identity.auth_type == "api_key" and not identity.has_permission(permission):
        raise AppError("You lack a permission this needs.", status=403, code="forbidden",
                       details={"missing_permissions": [permission]})


def may_revoke(identity: Identity, session_user_id: str) -> bool:
    """Whether *identity* may end a session of *session_user_id*: with `sessions:write`, or a signed-in
    member's own session (an API key needs `sessions:write` even for its owner's)."""
    if identity.has_permission("sessions:write"):
        return True
    return identity.auth_type == "session" and identity.user_id is not None and identity.user_id == session_user_id


def _session_json(identity: Identity, info: session_service.SessionInfo) -> dict[str, Any]:
    view = {name: value.isoformat() if isinstance(value, datetime) else value
            for name, value in dataclasses.asdict(info).items()}
    if not may_revoke(identity, info.user_id):
        view["workos_session_id"] = None
    return view


@sessions_blp.route("/sessions", methods=["GET"])
@guard(sessions_blp)
@sessions_blp.arguments(SessionListArgs, location="query")
@sessions_blp.response(200, SessionPage)
def list_sessions(args: dict[str, Any]) -> dict[str, Any]:
    """Sessions of the organization, or of one user (`user_id`); without `sessions:read`, your own.

    API keys need `sessions:read`. `workos_session_id` is shown only for sessions you may revoke.
    """
    identity = current_identity
    _require_key_scope(identity, "sessions:read")
    user_id = args.get("user_id")
    if not identity.has_permission("sessions:read"):
        user_id = identity.user_id
    page = session_service.sessions_page(db.session(), page_request(args, session_service.PAGE_KEY),
                                         organization_id=identity.organization_id, user_id=user_id,
                                         include_ended=args["include_ended"] == "1")
    return page_body(page, lambda info: _session_json(identity, info))


@sessions_blp.route("/sessions/<session_id>/revoke", methods=["POST"])
@guard(sessions_blp)
@sessions_blp.arguments(ReasonSchema, required=False)
@sessions_blp.response(200, RevokedOneSchema)
def revoke_session(body: dict[str, Any], session_id: str) -> dict[str, Any]:
    """Revoke one session: your own, or any of the organization's with `sessions:write` (API keys: always)."""
    identity = current_identity
    _require_key_scope(identity, "sessions:write")
    record = session_service.session_info(db.session(), organization_id=identity.organization_id,
                                          session_id=session_id)
    if record is None:
        raise AppError("No such session.", status=404, code="not_found")
    if not may_revoke(identity, record.user_id):
        raise AppError("You lack a permission this needs.", status=403, code="forbidden",
                       details={"missing_permissions": ["sessions:write"]})
    revoked = session_service.revoke_session(db.session(), runtime().gateway.client,
                                             organization_id=identity.organization_id, session_id=session_id,
                                             cause=request_cause(reason=_reason(body)))
    _commit()
    return {"revoked": revoked, "session_id": session_id}


def _reason(body: dict[str, Any] | None) -> str:
    return str((body or {}).get("reason") or "revoked through the API")[:255]


@sessions_blp.route("/users/<user_id>/sessions/revoke", methods=["POST"])
@guard(sessions_blp, "sessions:write")
@sessions_blp.arguments(ReasonSchema, required=False)
@sessions_blp.response(200, RevokedCountSchema)
def revoke_user_sessions(body: dict[str, Any], user_id: str) -> dict[str, Any]:
    """Revoke every session of a member of the organization; 404 for a user who is not one."""
    identity = current_identity
    count = session_service.revoke_member_sessions(db.session(), runtime().gateway.client,
                                                   organization_id=identity.organization_id, user_id=user_id,
                                                   cause=request_cause(reason=_reason(body)))
    _commit()
    return {"revoked": count}


@sessions_blp.route("/organization/sessions/revoke", methods=["POST"])
@guard(sessions_blp, "sessions:write")
@sessions_blp.arguments(ReasonSchema, required=False)
@sessions_blp.response(200, RevokedCountSchema)
def revoke_organization_sessions(body: dict[str, Any]) -> dict[str, Any]:
    """Revoke every session of the organization (the caller's included)."""
    identity = current_identity
    count = session_service.revoke_organization_sessions(db.session(), runtime().gateway.client,
                                                         organization_id=identity.organization_id,
                                                         cause=request_cause(reason=_reason(body)))
    _commit()
    return {"revoked": count}


# --- API keys ---------------------------------------------------------------------------------------------------


@keys_blp.route("/api-keys", methods=["GET"])
@guard(keys_blp, "keys:read")
@keys_blp.arguments(PageArgsSchema, location="query")
@keys_blp.response(200, ApiKeyPage)
def list_keys(args: dict[str, Any]) -> dict[str, Any]:
    """The organization's API keys (never their secrets)."""
    page = key_service.keys_page(db.session(), page_request(args, key_service.PAGE_KEY),
                                 organization_id=current_identity.organization_id)
    return page_body(page, key_service.ApiKeyView.to_json)


def _caller() -> key_service.Caller:
    identity = current_identity
    return key_service.Caller(user_id=identity.user_id, permissions=identity.permissions)


def _no_store(payload: dict[str, Any], status: int) -> Response:
    response = jsonify(payload)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


@keys_blp.route("/api-keys", methods=["POST"])
@guard(keys_blp, "keys:write")
@keys_blp.arguments(CreateKeySchema)
@keys_blp.response(201, CreatedKeySchema)
def create_key(body: dict[str, Any]) -> Response:
    """Create a key (signed-in members only); the secret is in this answer only. A key with an admin scope needs a
    recent sign-in (401 `reauthentication_required`)."""
    identity = current_identity
    if identity.auth_type != "session" or identity.user_id is None:
        raise AppError("API keys are created by a signed-in member.", status=403, code="forbidden")
    if has_admin_scope(body["scopes"]):
        require_recent_authentication(identity)
    created = key_service.create_key(db.session(), organization_id=identity.organization_id,
                                     owner_user_id=identity.user_id, name=body["name"], scopes=body["scopes"],
                                     cause=request_cause(), expires_at=body.get("expires_at"))
    _commit()
    return _no_store(CreatedKeySchema().dump({"secret": created.secret, "key": created.key.to_json()}), 201)


@keys_blp.route("/api-keys/<key_id>", methods=["GET"])
@guard(keys_blp, "keys:read")
@keys_blp.response(200, KeyEnvelopeSchema)
def get_key(key_id: str) -> dict[str, Any]:
    """One key."""
    view = key_service.get_key(db.session(), organization_id=current_identity.organization_id, key_id=key_id)
    return {"key": view.to_json()}


@keys_blp.route("/api-keys/<key_id>/revoke", methods=["POST"])
@guard(keys_blp, "keys:write")
@keys_blp.arguments(ReasonSchema, required=False)
@keys_blp.response(200, KeyEnvelopeSchema)
def revoke_key(body: dict[str, Any], key_id: str) -> dict[str, Any]:
    """Revoke a key (at once, everywhere): your own, or any member's with `keys:manage`."""
    identity = current_identity
    view = key_service.revoke_key(db.session(), organization_id=identity.organization_id, key_id=key_id,
                                  cause=request_cause(reason=(body or {}).get("reason")),
                                  caller=_caller())
    _commit()
    return {"key": view.to_json()}


@keys_blp.route("/api-keys/<key_id>/rotate", methods=["POST"])
@guard(keys_blp, "keys:write")
@keys_blp.arguments(RotateKeySchema, required=False)
@keys_blp.response(201, CreatedKeySchema)
def rotate_key(body: dict[str, Any], key_id: str) -> Response:
    """Issue a replacement (your own key, or any member's with `keys:manage`; never with a scope you lack);
    the old key keeps working for `grace_seconds`. A key with an admin scope needs a recent sign-in (401
    `reauthentication_required`)."""
    identity = current_identity
    if has_admin_scope(key_service.get_key(db.session(), organization_id=identity.organization_id,
                                           key_id=key_id).scopes):
        require_recent_authentication(identity)
    grace = (body or {}).get("grace_seconds")
    created = key_service.rotate_key(db.session(), organization_id=identity.organization_id, key_id=key_id,
                                     cause=request_cause(),
                                     grace_seconds=runtime().rotation_grace if grace is None else int(grace),
                                     caller=_caller())
    _commit()
    return _no_store(CreatedKeySchema().dump({"secret": created.secret, "key": created.key.to_json()}), 201)


@keys_blp.route("/api-keys/<key_id>/suspend", methods=["POST"])
@guard(keys_blp, "keys:write")
@keys_blp.response(200, KeyEnvelopeSchema)
def suspend_key(key_id: str) -> dict[str, Any]:
    """Suspend a key: your own, or any member's with `keys:manage`."""
    identity = current_identity
    view = key_service.suspend_key(db.session(), organization_id=identity.organization_id, key_id=key_id,
                                   cause=request_cause(), caller=_caller())
    _commit()
    return {"key": view.to_json()}


@keys_blp.route("/api-keys/<key_id>/reinstate", methods=["POST"])
@guard(keys_blp, "keys:manage")
@keys_blp.response(200, KeyEnvelopeSchema)
def reinstate_key(key_id: str) -> dict[str, Any]:
    """Reinstate a suspended key (never one with a scope you lack)."""
    identity = current_identity
    view = key_service.reinstate_key(db.session(), organization_id=identity.organization_id, key_id=key_id,
                                     cause=request_cause(), caller=_caller())
    _commit()
    return {"key": view.to_json()}
