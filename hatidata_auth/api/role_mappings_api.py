"""``/api/v1/role-mappings``: IdP group to role mappings, their preview, and why a member has their role."""

from __future__ import annotations

from typing import Any

from flask_smorest import Blueprint
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from ..extensions import db
from ..identity import current_identity, request_cause, runtime
from ..models import ROLES
from ..services import mapping_admin
from ..services import role_mapping as mapping_service
from .common import PageArgsSchema, fanout_chunk, guard, page_body, page_request, page_schema

mappings_blp = Blueprint("role-mappings", __name__, description="IdP group to role mappings.")
BLUEPRINTS = (mappings_blp,)

ROLE_OR_NONE = validate.OneOf([*ROLES, None])
IDENTIFIER_KINDS = ("name", "object_id", "directory_group_id")


class MappingSchema(Schema):
    id = fields.String(allow_none=True, required=True)
    identifier_kind = fields.String(required=True, validate=validate.OneOf(IDENTIFIER_KINDS))
    group_identifier = fields.String(required=True, validate=validate.Length(min=1, max=255))
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    priority = fields.Integer(strict=True, load_default=0, validate=validate.Range(min=-1000, max=1000))


class MappingInputSchema(Schema):
    identifier_kind = fields.String(required=True, validate=validate.OneOf(IDENTIFIER_KINDS),
                                    metadata={"description": "How the group is named: display `name`, IdP "
                                                             "`object_id` or WorkOS `directory_group_id`."})
    group_identifier = fields.String(required=True, validate=[
        validate.Length(min=1, max=255), validate.Regexp(r"\S", error="Must hold a character other than a space.")])
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    priority = fields.Integer(strict=True, load_default=0, validate=validate.Range(min=-1000, max=1000))


class MappingPatchSchema(Schema):
    role = fields.String(validate=validate.OneOf(ROLES))
    priority = fields.Integer(strict=True, validate=validate.Range(min=-1000, max=1000))

    @validates_schema
    def something_to_change(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not data:  # an edit of nothing was answered 200 and audited as a change of the set
            raise ValidationError("Give role, priority or both.", field_name="_schema")


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


class RecomputeSchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(("done", "queued")),
                           metadata={"description": "`done`: every member was recomputed by this request "
                                                    "(`members_checked`, `role_changes`); `queued`: the members "
                                                    "are more than one chunk (`HATIDATA_FANOUT_CHUNK`), the "
                                                    "appliers recompute them a chunk at a time, each change "
                                                    "audited (`members_checked` 0, `role_changes` empty)."})
    job_id = fields.String(allow_none=True, required=True,
                           metadata={"description": "The recompute job (an inbox event id) when `queued`."})


class MappingResultSchema(Schema):
    mapping = fields.Nested(MappingSchema, allow_none=True)
    members_checked = fields.Integer(required=True)
    role_changes = fields.List(fields.Nested(RoleChangeSchema), required=True)
    recompute = fields.Nested(RecomputeSchema, required=True)


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


def _change_view(change: mapping_service.RoleChange) -> dict[str, Any]:
    return {"user_id": change.user_id, "email": change.email, "from_role": change.from_role,
            "to_role": change.to_role, "reason": None if change.reason is None else change.reason.to_dict()}


def _result(result: mapping_service.RecomputeResult, key: tuple[str, str] | None = None) -> dict[str, Any]:
    done = mapping_admin.outcome(db.session(), current_identity.organization_id, result, key)
    return {"mapping": None if done.mapping is None else done.mapping.to_dict(),
            "members_checked": done.members_checked, "role_changes": [_change_view(c) for c in done.role_changes],
            "recompute": {"status": "queued" if done.queued_job else "done", "job_id": done.queued_job}}


def _default_role(body: dict[str, Any]) -> dict[str, Any]:
    return {"default_role": body["default_role"]} if "default_role" in body else {}


@mappings_blp.route("/role-mappings", methods=["GET"])
@guard(mappings_blp, "members:read")
@mappings_blp.arguments(PageArgsSchema, location="query")
@mappings_blp.response(200, MappingPage)
def list_mappings(args: dict[str, Any]) -> dict[str, Any]:
    """Mappings, in id order (they apply strongest role then highest priority first)."""
    page = mapping_service.mappings_page(db.session(), current_identity.organization_id,
                                         page_request(args, mapping_service.PAGE_KEY))
    return page_body(page, mapping_service.MappingSpec.to_dict)


@mappings_blp.route("/role-mappings", methods=["POST"])
@guard(mappings_blp, "members:write")
@mappings_blp.arguments(MappingInputSchema)
@mappings_blp.response(201, MappingResultSchema)
def create_mapping(body: dict[str, Any]) -> dict[str, Any]:
    """Add a mapping (or replace the one for the same group); members' roles are recomputed (in the request up to one
    chunk of members, ``recompute.status`` ``done``; above it by a queued job, ``queued``)."""
    identity = current_identity
    spec = _spec(body)
    result = mapping_admin.add_mapping(db.session(), runtime().gateway.client,
                                       organization_id=identity.organization_id, spec=spec, cause=request_cause(),
                                       chunk=fanout_chunk())
    db.session.commit()
    return _result(result, spec.key)


@mappings_blp.route("/role-mappings", methods=["PUT"])
@guard(mappings_blp, "members:write")
@mappings_blp.arguments(MappingSetSchema)
@mappings_blp.response(200, MappingResultSchema)
def replace_mappings(body: dict[str, Any]) -> dict[str, Any]:
    """Replace the whole mapping set (and optionally the default role); members' roles are recomputed (in the
    request up to one chunk of members, ``recompute.status`` ``done``; above it by a queued job, ``queued``)."""
    identity = current_identity
    result = mapping_service.replace_mappings(db.session(), runtime().gateway.client,
                                              organization_id=identity.organization_id,
                                              specs=[_spec(m) for m in body["mappings"]], cause=request_cause(),
                                              chunk=fanout_chunk(), **_default_role(body))
    db.session.commit()
    return _result(result)


@mappings_blp.route("/role-mappings/preview", methods=["POST"])
@guard(mappings_blp, "members:read")
@mappings_blp.arguments(MappingSetSchema)
@mappings_blp.response(200, PreviewSchema)
def preview_mappings(body: dict[str, Any]) -> dict[str, Any]:
    """Dry run of a mapping set: the members whose role would change (nothing is written)."""
    changes = mapping_service.preview(db.session(), organization_id=current_identity.organization_id,
                                      specs=[_spec(m) for m in body["mappings"]], **_default_role(body))
    return {"role_changes": [_change_view(c) for c in changes]}


@mappings_blp.route("/role-mappings/<mapping_id>", methods=["GET"])
@guard(mappings_blp, "members:read")
@mappings_blp.response(200, MappingSchema)
def get_mapping(mapping_id: str) -> dict[str, Any]:
    """One mapping."""
    return mapping_admin.get_mapping(db.session(), current_identity.organization_id, mapping_id).to_dict()


@mappings_blp.route("/role-mappings/<mapping_id>", methods=["PATCH"])
@guard(mappings_blp, "members:write")
@mappings_blp.arguments(MappingPatchSchema)
@mappings_blp.response(200, MappingResultSchema)
def update_mapping(body: dict[str, Any], mapping_id: str) -> dict[str, Any]:
    """Change a mapping's role or priority (it keeps its id); members' roles are recomputed (in the request up to one
    chunk of members, ``recompute.status`` ``done``; above it by a queued job, ``queued``)."""
    spec, result = mapping_admin.update_mapping(db.session(), runtime().gateway.client,
                                                organization_id=current_identity.organization_id,
                                                mapping_id=mapping_id, role=body.get("role"),
                                                priority=body.get("priority"), cause=request_cause(),
                                                chunk=fanout_chunk())
    db.session.commit()
    return _result(result, spec.key)


@mappings_blp.route("/role-mappings/<mapping_id>", methods=["DELETE"])
@guard(mappings_blp, "members:write")
@mappings_blp.response(200, MappingResultSchema)
def delete_mapping(mapping_id: str) -> dict[str, Any]:
    """Remove a mapping; members' roles are recomputed (in the request up to one
    chunk of members, ``recompute.status`` ``done``; above it by a queued job, ``queued``)."""
    result = mapping_admin.delete_mapping(db.session(), runtime().gateway.client,
                                          organization_id=current_identity.organization_id, mapping_id=mapping_id,
                                          cause=request_cause(), chunk=fanout_chunk())
    db.session.commit()
    return _result(result)


@mappings_blp.route("/members/<member_id>/role-explanation", methods=["GET"])
@guard(mappings_blp, "members:read")
@mappings_blp.response(200, ExplanationSchema)
def explain_role(member_id: str) -> dict[str, Any]:
    """Why a member has their role: the group and mapping that decided it, the default, or a manual role."""
    found = mapping_admin.explain_member(db.session(), organization_id=current_identity.organization_id,
                                         member_id=member_id)
    why = found.explanation
    return {"member_id": found.member_id, "user_id": why.user_id, "role": found.role, "status": why.status,
            "membership_source": why.membership_source,
            "decision": None if why.decision is None else why.decision.to_dict(),
            "groups": [{"name": g.name, "idp_id": g.idp_id, "directory_group_id": g.workos_id} for g in why.groups],
            "note": why.note}
