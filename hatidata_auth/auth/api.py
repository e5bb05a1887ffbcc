"""``/api/v1``: the caller's identity, sessions and API keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, Response, jsonify, request

from ..errors import AppError
from ..extensions import db
from ..identity import current_identity, login_required, require_permission, runtime
from ..requests import request_info
from ..services import api_keys as key_service
from ..services import sessions as session_service

bp = Blueprint("hatidata_api", __name__, url_prefix="/api/v1")


def _body() -> dict[str, Any]:
    data = request.get_json(silent=True)
    if data is None:
        data = request.form.to_dict()
    if not isinstance(data, dict):
        raise AppError("Expected a JSON object.", status=400, code="bad_request")
    return data


@bp.get("/me")
@login_required
def me() -> Response:
    """The caller's identity."""
    return jsonify(current_identity.to_json())


# --- sessions ------------------------------------------------------------------------------------------------


@bp.get("/sessions")
@login_required
def list_sessions() -> Response:
    """Sessions of the organization (``sessions:read``) or, without it, the caller's own."""
    identity = current_identity
    user_id = request.args.get("user_id")
    if not identity.has_permission("sessions:read"):
        user_id = identity.user_id
    records = session_service.list_sessions(db.session(), organization_id=identity.organization_id, user_id=user_id,
                                            include_ended=request.args.get("include_ended") == "1")
    return jsonify(data=[session_service.session_view(r) for r in records])


@bp.post("/sessions/<session_id>/revoke")
@login_required
def revoke_session(session_id: str) -> Response:
    """Revoke one session: your own, or any of the organization's with ``sessions:write``."""
    identity = current_identity
    record = session_service.get_session(db.session(), organization_id=identity.organization_id,
                                         session_id=session_id)
    if record is None:
        raise AppError("No such session.", status=404, code="not_found")
    if record.user_id != identity.user_id and not identity.has_permission("sessions:write"):
        raise AppError("You lack a permission this needs.", status=403, code="forbidden",
                       details={"missing_permissions": ["sessions:write"]})
    reason = str(_body().get("reason") or "revoked through the API")[:255]
    revoked = session_service.revoke_session(db.session(), runtime().gateway.client,
                                             organization_id=identity.organization_id, session_id=session_id,
                                             actor=identity.actor, reason=reason, request=request_info())
    db.session.commit()
    return jsonify(revoked=revoked, session_id=session_id)


@bp.post("/users/<user_id>/sessions/revoke")
@require_permission("sessions:write")
def revoke_user_sessions(user_id: str) -> Response:
    """Revoke every session of a user in the organization."""
    identity = current_identity
    reason = str(_body().get("reason") or "revoked through the API")[:255]
    count = session_service.revoke_user_sessions(db.session(), runtime().gateway.client,
                                                 organization_id=identity.organization_id, user_id=user_id,
                                                 actor=identity.actor, reason=reason, request=request_info())
    db.session.commit()
    return jsonify(revoked=count)


@bp.post("/organization/sessions/revoke")
@require_permission("sessions:write")
def revoke_organization_sessions() -> Response:
    """Revoke every session of the organization (the caller's included)."""
    identity = current_identity
    reason = str(_body().get("reason") or "revoked through the API")[:255]
    count = session_service.revoke_organization_sessions(db.session(), runtime().gateway.client,
                                                         organization_id=identity.organization_id,
                                                         actor=identity.actor, reason=reason,
                                                         request=request_info())
    db.session.commit()
    return jsonify(revoked=count)


# --- API keys ------------------------------------------------------------------------------------------------


def _parse_expiry(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError as exc:
        raise AppError("expires_at must be an ISO 8601 timestamp.", status=422, code="invalid_expiry") from exc
    if parsed.tzinfo is None:
        raise AppError("expires_at needs a timezone.", status=422, code="invalid_expiry")
    return parsed


@bp.get("/api-keys")
@require_permission("keys:read")
def list_keys() -> Response:
    """The organization's API keys (never their secrets)."""
    keys = key_service.list_keys(db.session(), organization_id=current_identity.organization_id)
    return jsonify(data=[k.to_json() for k in keys])


@bp.post("/api-keys")
@require_permission("keys:write")
def create_key() -> Response:
    """Create a key; the secret is in this answer only."""
    identity = current_identity
    if identity.auth_type != "session" or identity.user_id is None:
        raise AppError("API keys are created by a signed-in member.", status=403, code="forbidden")
    data = _body()
    scopes = data.get("scopes")
    if scopes is None:
        scopes = ["data:read"]
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise AppError("scopes must be a list of permission names.", status=422, code="invalid_scopes")
    created = key_service.create_key(db.session(), organization_id=identity.organization_id,
                                     owner_user_id=identity.user_id, name=str(data.get("name") or ""),
                                     scopes=scopes, actor=identity.actor,
                                     expires_at=_parse_expiry(data.get("expires_at")), request=request_info())
    db.session.commit()
    response = jsonify(secret=created.secret, key=created.key.to_json())
    response.status_code = 201
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/api-keys/<key_id>/revoke")
@require_permission("keys:write")
def revoke_key(key_id: str) -> Response:
    """Revoke a key."""
    identity = current_identity
    view = key_service.revoke_key(db.session(), organization_id=identity.organization_id, key_id=key_id,
                                  actor=identity.actor, reason=_body().get("reason"), request=request_info())
    db.session.commit()
    return jsonify(key=view.to_json())


@bp.post("/api-keys/<key_id>/rotate")
@require_permission("keys:write")
def rotate_key(key_id: str) -> Response:
    """Issue a replacement; the old key keeps working for the grace period (``grace_seconds``)."""
    identity = current_identity
    data = _body()
    grace = data.get("grace_seconds", runtime().rotation_grace)
    try:
        grace_seconds = int(grace)
    except (TypeError, ValueError) as exc:
        raise AppError("grace_seconds must be an integer.", status=422, code="invalid_grace") from exc
    created = key_service.rotate_key(db.session(), organization_id=identity.organization_id, key_id=key_id,
                                     actor=identity.actor, grace_seconds=grace_seconds, request=request_info())
    db.session.commit()
    response = jsonify(secret=created.secret, key=created.key.to_json())
    response.status_code = 201
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/api-keys/<key_id>/suspend")
@require_permission("keys:write")
def suspend_key(key_id: str) -> Response:
    """Suspend a key."""
    identity = current_identity
    view = key_service.suspend_key(db.session(), organization_id=identity.organization_id, key_id=key_id,
                                   actor=identity.actor, request=request_info())
    db.session.commit()
    return jsonify(key=view.to_json())


@bp.post("/api-keys/<key_id>/reinstate")
@require_permission("members:write")
def reinstate_key(key_id: str) -> Response:
    """Reinstate a suspended key (admins)."""
    identity = current_identity
    view = key_service.reinstate_key(db.session(), organization_id=identity.organization_id, key_id=key_id,
                                     actor=identity.actor, request=request_info())
    db.session.commit()
    return jsonify(key=view.to_json())
