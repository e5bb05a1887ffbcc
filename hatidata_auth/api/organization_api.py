"""``/api/v1/organization``: the caller's organization: its settings, SSO connection and directory, a resync.

Role mappings are ``role_mappings_api``, members ``members_api``, the failed-event inbox ``inbox_api``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from ..extensions import db
from ..identity import current_identity, request_cause, runtime
from ..models import ROLES, SIGN_IN_METHODS
from ..services import organization_admin as org_service
from ..services import tenant_admin
from .common import fanout_chunk, guard, timestamp

org_blp = Blueprint("organization", __name__, description="The caller's organization: settings, SSO, directory.")
BLUEPRINTS = (org_blp,)

ROLE_OR_NONE = validate.OneOf([*ROLES, None])


# --- settings -------------------------------------------------------------------------------------------------


class SessionPolicySchema(Schema):
    active_ttl = fields.Integer(strict=True, allow_none=True, validate=validate.Range(min=300, max=90 * 24 * 3600),
                                metadata={"description": "Seconds an idle session lasts (sliding); null: default."})
    remembered_ttl = fields.Integer(strict=True, allow_none=True, validate=validate.Range(min=300, max=365 * 24 * 3600),
                                    metadata={"description": "Seconds a remembered session lasts; null: default."})


class SettingsSchema(Schema):
    organization_id = fields.String(required=True)
    name = fields.String(required=True)
    domains = fields.List(fields.String(), required=True)
    status = fields.String(required=True)
    sso_enforced = fields.Boolean(required=True)
    auth_methods = fields.List(fields.String(), required=True,
                               metadata={"description": "Sign-in methods allowed here (SSO only while enforced)."})
    default_role = fields.String(allow_none=True, required=True)
    session_policy = fields.Nested(SessionPolicySchema, required=True)
    session_cache_ttl = fields.Integer(allow_none=True, required=True)
    updated_at = timestamp(required=True)


class SettingsPatchSchema(Schema):
    sso_enforced = fields.Boolean()
    auth_methods = fields.List(fields.String(validate=validate.OneOf(SIGN_IN_METHODS)), allow_none=True,
                               validate=validate.Length(min=1),
                               metadata={"description": "Allowed sign-in methods; null: every method."})
    default_role = fields.String(allow_none=True, validate=ROLE_OR_NONE,
                                 metadata={"description": "Role of members in no mapped group; null: no access."})
    session_policy = fields.Nested(SessionPolicySchema)
    session_cache_ttl = fields.Integer(strict=True, allow_none=True, validate=validate.Range(min=0, max=3600),
                                       metadata={"description": "Seconds a session's status may be cached."})


@org_blp.route("/organization/settings", methods=["GET"])
@guard(org_blp)
@org_blp.response(200, SettingsSchema)
def get_settings() -> tenant_admin.OrganizationSettings:
    """The organization's settings."""
    return tenant_admin.get_settings(db.session(), current_identity.organization_id)


@org_blp.route("/organization/settings", methods=["PATCH"])
@guard(org_blp, "sso:manage")
@org_blp.arguments(SettingsPatchSchema)
@org_blp.response(200, SettingsSchema)
def update_settings(body: dict[str, Any]) -> tenant_admin.OrganizationSettings:
    """Change session policy, cache TTL, SSO enforcement, allowed sign-in methods or the default role
    (audited); 404 for a deleted organization, 422 naming the fields at fault. A new default role recomputes the
    members in the request when they fit in one chunk (``HATIDATA_FANOUT_CHUNK``), else a recompute job does."""
    identity = current_identity
    policy = body.get("session_policy") or {}
    changes: dict[str, Any] = {name: body[name] for name in ("sso_enforced", "auth_methods", "session_cache_ttl",
                                                                     "default_role")
                               if name in body}
    changes.update({f"session_{name}": policy[name] for name in ("active_ttl", "remembered_ttl") if name in policy})
    settings = org_service.change_settings(db.session(), runtime().gateway.client,
                                           organization_id=identity.organization_id, changes=changes,
                                           cause=request_cause(), chunk=fanout_chunk())
    db.session.commit()
    return settings


# --- SSO connection and directory -------------------------------------------------------------------------------


class SsoStatusSchema(Schema):
    organization_id = fields.String(required=True)
    idp_plugin = fields.String(allow_none=True)
    sso_enforced = fields.Boolean(required=True)
    connection = fields.Dict(allow_none=True, required=True,
                             metadata={"description": "`{id, type, state}`, or null without a connection."})
    directory = fields.Dict(allow_none=True, required=True,
                            metadata={"description": "`{id, type, state, users, groups}`, or null."})


@org_blp.route("/organization/sso", methods=["GET"])
@guard(org_blp, "sso:manage")
@org_blp.response(200, SsoStatusSchema)
def sso_status() -> dict[str, Any]:
    """The SSO connection and the directory, as last mirrored from WorkOS."""
    return dataclasses.asdict(org_service.sso_status(db.session(), current_identity.organization_id))


class ResyncSchema(Schema):
    organization_id = fields.String(required=True)
    directory_id = fields.String(allow_none=True, required=True)
    differences = fields.Integer(required=True)
    report = fields.Dict(required=True)


@org_blp.route("/organization/directory/resync", methods=["POST"])
@guard(org_blp, "sso:manage")
@org_blp.response(200, ResyncSchema)
def trigger_resync() -> dict[str, Any]:
    """Run a full directory resync from WorkOS now and report the differences it fixed (audited
    ``directory.resync_requested``); 409 ``directory_not_found`` when WorkOS does not know the directory,
    503 with ``Retry-After`` when WorkOS is unavailable."""
    identity = current_identity
    done = org_service.resync_directory(db.session(), runtime().gateway.client,
                                        organization_id=identity.organization_id, cause=request_cause())
    report = done.report
    return {"organization_id": done.organization_id, "directory_id": report.directory_id,
            "differences": report.differences, "report": report.to_dict()}
