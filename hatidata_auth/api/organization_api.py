"""``/api/v1``: the caller's organization: settings, SSO and directory, members, role mappings, webhook inbox."""

from __future__ import annotations

from typing import Any

from flask_smorest import Blueprint
from marshmallow import Schema, ValidationError, fields, validate, validates_schema
from sqlalchemy import select

from ..errors import AppError, ServiceUnavailable
from ..extensions import db
from ..identity import current_identity, runtime
from ..models import ROLES, SIGN_IN_METHODS, Organization, WebhookEvent
from ..requests import request_info
from ..services import admin, audit, inbox, reconcile
from ..services import role_mapping as mapping_service
from ..workos import WorkOSNotFound, WorkOSUnavailable, translate_errors
from .common import PageArgsSchema, guard, page_schema, paginate_list, paginate_query, timestamp

org_blp = Blueprint("organization", __name__, description="The caller's organization: settings, SSO, directory.")
mappings_blp = Blueprint("role-mappings", __name__, description="IdP group to role mappings.")
inbox_blp = Blueprint("webhook-inbox", __name__, description="WorkOS events that failed to apply.")
BLUEPRINTS = (org_blp, mappings_blp, inbox_blp)

ROLE_OR_NONE = validate.OneOf([*ROLES, None])
IDENTIFIER_KINDS = ("name", "object_id", "directory_group_id")


def _org_id() -> str:
    return current_identity.organization_id


def _client() -> Any:
    return runtime().gateway.client


# --- settings -------------------------------------------------------------------------------------------------


class SessionPolicySchema(Schema):
    active_ttl = fields.Integer(allow_none=True, validate=validate.Range(min=300, max=90 * 24 * 3600),
                                metadata={"description": "Seconds an idle session lasts (sliding); null: default."})
    remembered_ttl = fields.Integer(allow_none=True, validate=validate.Range(min=300, max=365 * 24 * 3600),
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
    session_cache_ttl = fields.Integer(allow_none=True, validate=validate.Range(min=0, max=3600),
                                       metadata={"description": "Seconds a session's status may be cached."})


@org_blp.route("/organization/settings", methods=["GET"])
@guard(org_blp)
@org_blp.response(200, SettingsSchema)
def get_settings() -> dict[str, Any]:
    """The organization's settings."""
    return admin.settings_view(admin.get_organization(db.session(), _org_id()))


@org_blp.route("/organization/settings", methods=["PATCH"])
@guard(org_blp, "sso:manage")
@org_blp.arguments(SettingsPatchSchema)
@org_blp.response(200, SettingsSchema)
def update_settings(body: dict[str, Any]) -> dict[str, Any]:
    """Change session policy, cache TTL, SSO enforcement, allowed sign-in methods or the default role (audited)."""
    identity = current_identity
    session = db.session()
    changes: dict[str, Any] = {}
    for key in ("sso_enforced", "auth_methods"):
        if key in body:
            changes[key] = body[key]
    if "session_cache_ttl" in body:
        changes["session_cache_ttl"] = body["session_cache_ttl"]
    policy = body.get("session_policy") or {}
    if "active_ttl" in policy:
        changes["session_active_ttl"] = policy["active_ttl"]
    if "remembered_ttl" in policy:
        changes["session_remembered_ttl"] = policy["remembered_ttl"]
    org = admin.update_settings(session, organization_id=identity.organization_id, changes=changes,
                                actor=identity.actor, request=request_info())
    if "default_role" in body and body["default_role"] != org.default_role:
        # Through the role-mapping service: members in no mapped group are recomputed in the same commit.
        mapping_service.set_default_role(session, _client(), organization_id=org.id,
                                         default_role=body["default_role"], actor=identity.actor,
                                         request=request_info())
    db.session.commit()
    return admin.settings_view(org)


# --- SSO connection and directory -------------------------------------------------------------------------------


class SsoStatusSchema(Schema):
    organization_id = fields.String(required=True)
    idp_plugin = fields.String(allow_none=True)
    sso_enforced = fields.Boolean(required=True)
    connection = fields.Dict(allow_none=True, required=True,
                             metadata={"description": "`{id, type, state}`, or null without a connection."})
    directory = fields.Dict(allow_none=True, required=True,
                            metadata={"description": "`{id, type, state, users, groups}`, or null."})


def _sso_view(org: Organization) -> dict[str, Any]:
    from sqlalchemy import func

    from ..models import DirectoryGroup, DirectoryUser

    directory = None
    if org.directory_id:
        users = db.session.scalar(select(func.count()).select_from(DirectoryUser).where(
            DirectoryUser.organization_id == org.id, DirectoryUser.deleted_at.is_(None)))
        groups = db.session.scalar(select(func.count()).select_from(DirectoryGroup).where(
            DirectoryGroup.organization_id == org.id, DirectoryGroup.deleted_at.is_(None)))
        directory = {"id": org.directory_id, "type": org.directory_type, "state": org.directory_state,
                     "users": int(users or 0), "groups": int(groups or 0)}
    connection = None
    if org.connection_id:
        connection = {"id": org.connection_id, "type": org.connection_type, "state": org.connection_state}
    return {"organization_id": org.id, "idp_plugin": org.idp_plugin, "sso_enforced": org.sso_enforced,
            "connection": connection, "directory": directory}


@org_blp.route("/organization/sso", methods=["GET"])
@guard(org_blp, "sso:manage")
@org_blp.response(200, SsoStatusSchema)
def sso_status() -> dict[str, Any]:
    """The SSO connection and the directory, as last mirrored from WorkOS."""
    return _sso_view(admin.get_organization(db.session(), _org_id()))


class ResyncSchema(Schema):
    organization_id = fields.String(required=True)
    directory_id = fields.String(allow_none=True, required=True)
    differences = fields.Integer(required=True)
    report = fields.Dict(required=True)


@org_blp.route("/organization/directory/resync", methods=["POST"])
@guard(org_blp, "sso:manage")
@org_blp.response(200, ResyncSchema)
def trigger_resync() -> dict[str, Any]:
    """Run a full directory resync from WorkOS now and report the differences it fixed."""
    identity = current_identity
    session = db.session()
    org = admin.get_organization(session, identity.organization_id)
    audit.record(session, action="directory.resync_requested", actor=identity.actor, organization_id=org.id,
                 target_type="directory", target_id=org.directory_id, request=request_info())
    session.commit()
    try:
        with translate_errors():
            report = reconcile.full_resync(session, _client(), organization_id=org.id, actor=identity.actor)
    except WorkOSNotFound as exc:
        session.rollback()
        raise AppError("WorkOS does not know this organization's directory.", status=409,
                       code="directory_not_found", details={"directory_id": org.directory_id}) from exc
    except WorkOSUnavailable as exc:
        session.rollback()
        raise ServiceUnavailable("WorkOS is unavailable; retry the resync shortly.",
                                 headers={"Retry-After": "30"}) from exc
    session.commit()
    return {"organization_id": org.id, "directory_id": report.directory_id, "differences": report.differences,
            "report": report.to_dict()}


# --- role mappings ---------------------------------------------------------------------------------------------------


class MappingSchema(Schema):
    id = fields.String(allow_none=True, required=True)
    identifier_kind = fields.String(required=True, validate=validate.OneOf(IDENTIFIER_KINDS))
    group_identifier = fields.String(required=True, validate=validate.Length(min=1, max=255))
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    priority = fields.Integer(load_default=0, validate=validate.Range(min=-1000, max=1000))


class MappingInputSchema(Schema):
    identifier_kind = fields.String(required=True, validate=validate.OneOf(IDENTIFIER_KINDS),
                                    metadata={"description": "How the group is named: display `name`, IdP "
                                                             "`object_id` or WorkOS `directory_group_id`."})
    group_identifier = fields.String(required=True, validate=validate.Length(min=1, max=255))
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    priority = fields.Integer(load_default=0, validate=validate.Range(min=-1000, max=1000))


class MappingPatchSchema(Schema):
    role = fields.String(validate=validate.OneOf(ROLES))
    priority = fields.Integer(validate=validate.Range(min=-1000, max=1000))


class MappingSetSchema(Schema):
    mappings = fields.List(fields.Nested(MappingInputSchema), required=True, validate=validate.Length(max=500))
    default_role = fields.String(allow_none=True, validate=ROLE_OR_NONE)

    @validates_schema
    def unique_keys(self, data: dict[str, Any], **kwargs: Any) -> None:
        keys = [(m["identifier_kind"], m["group_identifier"]) for m in data.get("mappings", [])]
        if len(keys) != len(set(keys)):
            raise ValidationError("A group appears twice.", field_name="mappings")


class RoleChangeSchema(Schema):
    user_id = fields.String(required=True)
    email = fields.String(allow_none=True)
    from_role = fields.String(allow_none=True, required=True)
    to_role = fields.String(allow_none=True, required=True)
    reason = fields.Dict(allow_none=True)


class MappingResultSchema(Schema):
    mapping = fields.Nested(MappingSchema, allow_none=True)
    members_checked = fields.Integer(required=True)
    role_changes = fields.List(fields.Nested(RoleChangeSchema), required=True)


class PreviewSchema(Schema):
    role_changes = fields.List(fields.Nested(RoleChangeSchema), required=True)


class ExplanationSchema(Schema):
    member_id = fields.String(required=True)
    user_id = fields.String(required=True)
    role = fields.String(allow_none=True, required=True,
                         metadata={"description": "The role held now; null unless `status` is `active`."})
    status = fields.String(allow_none=True)
    membership_source = fields.String(allow_none=True)
    decision = fields.Dict(allow_none=True, required=True)
    groups = fields.List(fields.Dict(), required=True)
    note = fields.String(allow_none=True)


MappingPage = page_schema(MappingSchema, "RoleMappingPage")


def _spec(data: dict[str, Any]) -> mapping_service.MappingSpec:
    return mapping_service.MappingSpec(data["identifier_kind"], data["group_identifier"], data["role"],
                                       int(data.get("priority") or 0))


def _find_mapping(mapping_id: str) -> mapping_service.MappingSpec:
    found = next((m for m in mapping_service.list_mappings(db.session(), _org_id()) if m.id == mapping_id), None)
    if found is None:
        raise AppError("No such role mapping.", status=404, code="not_found")
    return found


def _change_view(change: mapping_service.RoleChange) -> dict[str, Any]:
    return {"user_id": change.user_id, "email": change.email, "from_role": change.from_role,
            "to_role": change.to_role, "reason": None if change.reason is None else change.reason.to_dict()}


def _result(result: mapping_service.RecomputeResult, key: tuple[str, str] | None) -> dict[str, Any]:
    mapping = None
    if key is not None:
        mapping = next((m.to_dict() for m in mapping_service.list_mappings(db.session(), _org_id())
                        if m.key == key), None)
    return {"mapping": mapping, "members_checked": result.checked,
            "role_changes": [_change_view(c) for c in result.changes]}


@mappings_blp.route("/role-mappings", methods=["GET"])
@guard(mappings_blp, "members:read")
@mappings_blp.arguments(PageArgsSchema, location="query")
@mappings_blp.response(200, MappingPage)
def list_mappings(args: dict[str, Any]) -> dict[str, Any]:
    """Mappings, strongest role then highest priority first."""
    specs = mapping_service.list_mappings(db.session(), _org_id())
    page, cursor = paginate_list(specs, lambda s: s.id or "", args)
    return {"data": [s.to_dict() for s in page], "next_cursor": cursor}


@mappings_blp.route("/role-mappings", methods=["POST"])
@guard(mappings_blp, "members:write")
@mappings_blp.arguments(MappingInputSchema)
@mappings_blp.response(201, MappingResultSchema)
def create_mapping(body: dict[str, Any]) -> dict[str, Any]:
    """Add a mapping (or replace the one for the same group); members' roles are recomputed."""
    identity = current_identity
    spec = _spec(body)
    result = mapping_service.add_mapping(db.session(), _client(), organization_id=identity.organization_id,
                                         spec=spec, actor=identity.actor, request=request_info())
    db.session.commit()
    return _result(result, spec.key)


@mappings_blp.route("/role-mappings", methods=["PUT"])
@guard(mappings_blp, "members:write")
@mappings_blp.arguments(MappingSetSchema)
@mappings_blp.response(200, MappingResultSchema)
def replace_mappings(body: dict[str, Any]) -> dict[str, Any]:
    """Replace the whole mapping set (and optionally the default role); members' roles are recomputed."""
    identity = current_identity
    kwargs: dict[str, Any] = {}
    if "default_role" in body:
        kwargs["default_role"] = body["default_role"]
    result = mapping_service.replace_mappings(db.session(), _client(), organization_id=identity.organization_id,
                                              specs=[_spec(m) for m in body["mappings"]], actor=identity.actor,
                                              request=request_info(), **kwargs)
    db.session.commit()
    return _result(result, None)


@mappings_blp.route("/role-mappings/preview", methods=["POST"])
@guard(mappings_blp, "members:read")
@mappings_blp.arguments(MappingSetSchema)
@mappings_blp.response(200, PreviewSchema)
def preview_mappings(body: dict[str, Any]) -> dict[str, Any]:
    """Dry run of a mapping set: the members whose role would change (nothing is written)."""
    kwargs: dict[str, Any] = {}
    if "default_role" in body:
        kwargs["default_role"] = body["default_role"]
    changes = mapping_service.preview(db.session(), organization_id=_org_id(),
                                      specs=[_spec(m) for m in body["mappings"]], **kwargs)
    return {"role_changes": [_change_view(c) for c in changes]}


@mappings_blp.route("/role-mappings/<mapping_id>", methods=["GET"])
@guard(mappings_blp, "members:read")
@mappings_blp.response(200, MappingSchema)
def get_mapping(mapping_id: str) -> dict[str, Any]:
    """One mapping."""
    return _find_mapping(mapping_id).to_dict()


@mappings_blp.route("/role-mappings/<mapping_id>", methods=["PATCH"])
@guard(mappings_blp, "members:write")
@mappings_blp.arguments(MappingPatchSchema)
@mappings_blp.response(200, MappingResultSchema)
def update_mapping(body: dict[str, Any], mapping_id: str) -> dict[str, Any]:
    """Change a mapping's role or priority (it keeps its id); members' roles are recomputed."""
    identity = current_identity
    current = _find_mapping(mapping_id)
    spec = mapping_service.MappingSpec(current.identifier_kind, current.group_identifier,
                                       body.get("role", current.role), body.get("priority", current.priority))
    result = mapping_service.add_mapping(db.session(), _client(), organization_id=identity.organization_id,
                                         spec=spec, actor=identity.actor, request=request_info())
    db.session.commit()
    return _result(result, spec.key)


@mappings_blp.route("/role-mappings/<mapping_id>", methods=["DELETE"])
@guard(mappings_blp, "members:write")
@mappings_blp.response(200, MappingResultSchema)
def delete_mapping(mapping_id: str) -> dict[str, Any]:
    """Remove a mapping; members' roles are recomputed."""
    identity = current_identity
    current = _find_mapping(mapping_id)
    result = mapping_service.remove_mapping(db.session(), _client(), organization_id=identity.organization_id,
                                            identifier_kind=current.identifier_kind,
                                            group_identifier=current.group_identifier, actor=identity.actor,
                                            request=request_info())
    db.session.commit()
    return _result(result, None)


@mappings_blp.route("/members/<member_id>/role-explanation", methods=["GET"])
@guard(mappings_blp, "members:read")
@mappings_blp.response(200, ExplanationSchema)
def explain_role(member_id: str) -> dict[str, Any]:
    """Why a member has their role: the group and mapping that decided it, the default, or a manual role."""
    membership, _user = admin.get_member(db.session(), _org_id(), member_id)
    found = mapping_service.explain(db.session(), organization_id=_org_id(), user_id=membership.user_id)
    return {"member_id": membership.id, "user_id": found.user_id, "role": admin.effective_role(membership),
            "status": found.status,
            "membership_source": found.membership_source,
            "decision": None if found.decision is None else found.decision.to_dict(),
            "groups": [{"name": g.name, "idp_id": g.idp_id, "directory_group_id": g.workos_id}
                       for g in found.groups],
            "note": found.note}


# --- webhook inbox ---------------------------------------------------------------------------------------------------


class InboxEventSchema(Schema):
    event_id = fields.String(required=True)
    event_type = fields.String(required=True)
    status = fields.String(required=True)
    source = fields.String(required=True)
    attempts = fields.Integer(required=True)
    last_error = fields.String(allow_none=True)
    received_at = timestamp(required=True)
    event_created_at = timestamp(allow_none=True)


class ReplaySchema(Schema):
    event_id = fields.String(required=True)
    event_type = fields.String(required=True)
    status = fields.String(required=True)
    error = fields.String(allow_none=True)
    note = fields.String(allow_none=True)


InboxPage = page_schema(InboxEventSchema, "InboxEventPage")
def _inbox_view(row: WebhookEvent) -> dict[str, Any]:
    return {"event_id": row.event_id, "event_type": row.event_type, "status": row.status, "source": row.source,
            "attempts": row.attempts, "last_error": row.last_error, "received_at": row.received_at.isoformat(),
            "event_created_at": None if row.event_created_at is None else row.event_created_at.isoformat()}


@inbox_blp.route("/webhook-inbox/failed", methods=["GET"])
@guard(inbox_blp, "sso:manage")
@inbox_blp.arguments(PageArgsSchema, location="query")
@inbox_blp.response(200, InboxPage)
def list_failed(args: dict[str, Any]) -> dict[str, Any]:
    """The organization's WorkOS events that failed to apply, in the order they arrived."""
    session = db.session()
    org = admin.get_organization(session, _org_id())
    page, cursor = paginate_query(session, inbox.failed_of(org), WebhookEvent.id, args)
    return {"data": [_inbox_view(r) for r in page], "next_cursor": cursor}


@inbox_blp.route("/webhook-inbox/<event_id>/replay", methods=["POST"])
@guard(inbox_blp, "sso:manage")
@inbox_blp.response(200, ReplaySchema)
def replay_event(event_id: str) -> dict[str, Any]:
    """Apply a stored event of the organization again (audited ``webhook_event.replayed``)."""
    identity = current_identity
    session = db.session()
    org = admin.get_organization(session, identity.organization_id)
    row = session.scalar(select(WebhookEvent).where(WebhookEvent.event_id == event_id, inbox.concerning(org)))
    if row is None:
        raise AppError("No such event.", status=404, code="not_found")
    org_id = org.id
    result = inbox.replay(session, _client(), event_id, actor=identity.actor)
    audit.record(session, action="webhook_event.replayed", actor=identity.actor, organization_id=org_id,
                 target_type="webhook_event", target_id=event_id[:64], request=request_info(),
                 outcome="success" if result.status != "failed" else "failure",
                 details={"status": result.status, "error": result.error})
    session.commit()
    return {"event_id": result.event_id, "event_type": result.event_type, "status": result.status,
            "error": result.error, "note": result.note}


