"""``/api/v1/members``: the organization's members, their status and the role each holds now."""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from .. import inbox_runtime
from ..extensions import db
from ..identity import current_identity, request_cause, runtime
from ..roles import ROLES
from ..services import tenant_admin, workos_role_push
from .common import PageArgsSchema, guard, page_body, page_request, page_schema, timestamp

members_blp = Blueprint("members", __name__, description="Members of the organization.")
BLUEPRINTS = (members_blp,)

MEMBER_STATUSES = ("active", "inactive", "pending", "deprovisioned")


def _org_id() -> str:
    return current_identity.organization_id


def _client() -> Any:
    return runtime().gateway.client


class MemberSchema(Schema):
    id = fields.String(required=True)
    organization_id = fields.String(required=True)
    user_id = fields.String(required=True)
    email = fields.String(required=True)
    first_name = fields.String(allow_none=True)
    last_name = fields.String(allow_none=True)
    role = fields.String(allow_none=True, required=True,
                         metadata={"description": "The role held now; null unless `status` is `active`."})
    last_role = fields.String(allow_none=True, required=True,
                              metadata={"description": "The last role assigned, kept while the membership is "
                                                       "not active (restored on reactivation)."})
    role_source = fields.String(required=True)
    source = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(MEMBER_STATUSES),
                           metadata={"description": "`active` grants `role`; `inactive`, `pending` and "
                                                    "`deprovisioned` grant nothing."})
    managed_by_directory = fields.Boolean(required=True)
    created_at = timestamp(required=True)
    updated_at = timestamp(required=True)


class MemberListArgs(PageArgsSchema):
    role = fields.String(validate=validate.OneOf(ROLES), metadata={"description": "Members holding this role "
                                                                                  "now (active members only)."})
    status = fields.String(validate=validate.OneOf(MEMBER_STATUSES))
    source = fields.String(validate=validate.OneOf(["sso", "directory", "manual"]))
    email = fields.String(validate=validate.Length(min=1, max=320), metadata={"description": "Substring match."})


class MemberPatchSchema(Schema):
    role = fields.String(required=True, validate=validate.OneOf(ROLES))


MemberPage = page_schema(MemberSchema, "MemberPage")


@members_blp.route("/members", methods=["GET"])
@guard(members_blp, "members:read")
@members_blp.arguments(MemberListArgs, location="query")
@members_blp.response(200, MemberPage)
def list_members(args: dict[str, Any]) -> dict[str, Any]:
    """Members, filtered by role, status, source or email."""
    flt = tenant_admin.MemberFilter(role=args.get("role"), status=args.get("status"), source=args.get("source"),
                                    email=args.get("email"))
    page = tenant_admin.members_page(db.session(), _org_id(), flt, page_request(args, tenant_admin.MEMBER_PAGE_KEY))
    return page_body(page)


@members_blp.route("/members/<member_id>", methods=["GET"])
@guard(members_blp, "members:read")
@members_blp.response(200, MemberSchema)
def get_member(member_id: str) -> tenant_admin.Member:
    """One member."""
    return tenant_admin.get_member(db.session(), _org_id(), member_id)


@members_blp.route("/members/<member_id>", methods=["PATCH"])
@guard(members_blp, "members:write")
@members_blp.arguments(MemberPatchSchema)
@members_blp.response(200, MemberSchema)
def change_member_role(body: dict[str, Any], member_id: str) -> tenant_admin.Member:
    """Change the role of a member the directory does not manage (409 for directory-managed members)."""
    identity, cause = current_identity, request_cause()
    member = tenant_admin.change_member_role(db.session(), _client(), organization_id=identity.organization_id,
                                             membership_id=member_id, role=body["role"], cause=cause)
    push = workos_role_push.queue(db.session(), organization_id=identity.organization_id, membership_id=member_id,
                                  cause=cause)
    db.session.commit()
    if push is not None:  # made at WorkOS now; if WorkOS does not answer, the appliers retry
        inbox_runtime.apply_now(current_app, push.event_id, push.entity_key, cause)
    return member


@members_blp.route("/members/<member_id>", methods=["DELETE"])
@guard(members_blp, "members:write")
@members_blp.response(200, MemberSchema)
def remove_member(member_id: str) -> tenant_admin.Member:
    """Remove a member's access: the membership is deprovisioned, their sessions revoked, their keys suspended (409
    ``managed_by_directory`` for a member the directory provides: remove them in the identity provider)."""
    identity = current_identity
    member = tenant_admin.remove_member(db.session(), _client(), organization_id=identity.organization_id,
                                        membership_id=member_id, cause=request_cause())
    db.session.commit()
    return member
