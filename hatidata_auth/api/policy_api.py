"""``/api/v1/organization/policy``: the caller's organization's access policy; an API key's own IP allowlist."""

from __future__ import annotations

import dataclasses
from typing import Any

from flask import request
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from ..extensions import db
from ..identity import current_identity, request_cause, runtime
from ..models import SIGN_IN_METHODS
from ..services import access_policy, break_glass, tenant_admin
from .common import guard

policy_blp = Blueprint("access-policy", __name__,
                       description="The organization's access policy: session limits, sign-in methods, IP allowlist.")
BLUEPRINTS = (policy_blp,)


def _seconds(name: str, description: str, **kwargs: Any) -> fields.Integer:
    low, high = access_policy.BOUNDS[name]
    return fields.Integer(strict=True, validate=validate.Range(min=low, max=high), metadata={
        "description": f"{description} Seconds, {low} to {high}."}, **kwargs)


CIDRS = fields.List(fields.String(validate=validate.Length(min=1, max=64)), allow_none=True,
                    validate=validate.Length(max=access_policy.MAX_ALLOWLIST),
                    metadata={"description": "IPv4 and IPv6 CIDR networks (a bare address is its /32 or /128); "
                                             "null or []: any address."})


class PolicySchema(Schema):
    organization_id = fields.String(required=True)
    idle_timeout = _seconds("idle_timeout", "A session unused this long has ended.", required=True)
    absolute_lifetime = _seconds("absolute_lifetime", "A session ends this long after sign-in, whatever its "
                                 "refreshes; null: no such limit.", required=True, allow_none=True)
    remembered_lifetime = _seconds("remembered_lifetime", "Fixed lifetime of a remembered session.", required=True)
    allowed_methods = fields.List(fields.String(), required=True,
                                  metadata={"description": "Sign-in methods accepted (SSO only while enforced)."})
    sso_enforced = fields.Boolean(required=True)
    ip_allowlist = fields.List(fields.String(), required=True,
                               metadata={"description": "Normalised CIDR networks; []: any address."})
    ip_allowlist_applies_to_api_keys = fields.Boolean(required=True)
    step_up_window = _seconds("step_up_window", "How recent a sign-in sensitive operations need.", required=True)


class PolicyPatchSchema(Schema):
    idle_timeout = _seconds("idle_timeout", "Null: the deployment's default.", allow_none=True)
    absolute_lifetime = _seconds("absolute_lifetime", "Null: no absolute limit.", allow_none=True)
    remembered_lifetime = _seconds("remembered_lifetime", "Null: the deployment's default.", allow_none=True)
    allowed_methods = fields.List(fields.String(validate=validate.OneOf(SIGN_IN_METHODS)), allow_none=True,
                                  validate=validate.Length(min=1),
                                  metadata={"description": "Allowed sign-in methods; null: every method."})
    ip_allowlist = CIDRS
    ip_allowlist_applies_to_api_keys = fields.Boolean(truthy={True}, falsy={False})
    step_up_window = _seconds("step_up_window", "Null: 600.", allow_none=True)


def _caller() -> access_policy.Caller:
    identity = current_identity
    return access_policy.Caller(address=request.remote_addr, session_id=identity.session_id,
                                api_key_id=identity.api_key_id)


def _defaults() -> dict[str, int]:
    rt = runtime()
    return {"default_idle": rt.policy.active_ttl, "default_remembered": rt.policy.remembered_ttl}


@policy_blp.route("/organization/policy", methods=["GET"])
@guard(policy_blp, "sso:manage")
@policy_blp.response(200, PolicySchema)
def get_policy() -> dict[str, Any]:
    """The organization's access policy (defaults resolved); 404 for a deleted organization."""
    return access_policy.get_policy(db.session(), current_identity.organization_id, **_defaults()).to_json()


@policy_blp.route("/organization/policy", methods=["PATCH"])
@guard(policy_blp, "sso:manage")
@policy_blp.arguments(PolicyPatchSchema)
@policy_blp.response(200, PolicySchema)
def update_policy(body: dict[str, Any]) -> dict[str, Any]:
    """Change the access policy (audited ``organization.policy_updated``; in force in every worker within a
    second); 422 naming the field at fault; 409 ``policy_lockout`` when the change would end the caller's own
    access (an allowlist without their address, a method their session relies on); 404 for a deleted
    organization."""
    policy = access_policy.update_policy(db.session(), organization_id=current_identity.organization_id,
                                         changes=body,
                                         caller=_caller(), cause=request_cause(), **_defaults())
    db.session.commit()
    return policy.to_json()


class KeyAllowlistSchema(Schema):
    ip_allowlist = fields.List(fields.String(validate=validate.Length(min=1, max=64)), required=True,
                               allow_none=True, validate=validate.Length(max=access_policy.MAX_ALLOWLIST),
                               metadata={"description": "The key's own CIDR networks, used instead of the "
                                                        "organization's; null or []: the organization's policy."})


class KeyAllowlistBodySchema(Schema):
    key_id = fields.String(required=True)
    ip_allowlist = fields.List(fields.String(), required=True, allow_none=True)


@policy_blp.route("/api-keys/<key_id>/ip-allowlist", methods=["PUT"])
@guard(policy_blp, "keys:manage")
@policy_blp.arguments(KeyAllowlistSchema)
@policy_blp.response(200, KeyAllowlistBodySchema)
def set_key_allowlist(body: dict[str, Any], key_id: str) -> dict[str, Any]:
    """Set or clear an API key's own IP allowlist (audited ``api_key.ip_allowlist_updated``; in force at
    once everywhere); 404 for a key of another organization; 422 naming ``ip_allowlist``; 409
    ``policy_lockout`` when a key would shut itself out."""
    value = access_policy.set_key_allowlist(db.session(), organization_id=current_identity.organization_id,
                                            key_id=key_id, allowlist=body["ip_allowlist"], caller=_caller(),
                                            cause=request_cause())
    db.session.commit()
    return {"key_id": key_id, "ip_allowlist": value}


# --- break-glass accounts ---------------------------------------------------------------------------------------


class BreakGlassMemberSchema(Schema):
    id = fields.String(required=True, metadata={"description": "The membership id (as in /api/v1/members)."})
    user_id = fields.String(required=True)
    email = fields.String(required=True)
    status = fields.String(required=True)
    active = fields.Boolean(required=True, metadata={"description": "Whether the exemption applies now."})


class BreakGlassSchema(Schema):
    organization_id = fields.String(required=True)
    max_members = fields.Integer(required=True)
    members = fields.List(fields.Nested(BreakGlassMemberSchema), required=True)


class BreakGlassPutSchema(Schema):
    members = fields.List(fields.String(validate=validate.Length(min=1, max=320)), required=True,
                          validate=validate.Length(max=break_glass.MAX_MEMBERS),
                          metadata={"description": "Membership ids or emails of active members; [] for none."})


def _break_glass_body(organization_id: str, found: list[break_glass.BreakGlassMember]) -> dict[str, Any]:
    return {"organization_id": organization_id, "max_members": break_glass.MAX_MEMBERS,
            "members": [dataclasses.asdict(m) for m in found]}


@policy_blp.route("/organization/break-glass", methods=["GET"])
@guard(policy_blp, "sso:manage")
@policy_blp.response(200, BreakGlassSchema)
def get_break_glass() -> dict[str, Any]:
    """The members who may sign in without SSO while it is enforced."""
    org = tenant_admin.get_organization(db.session(), current_identity.organization_id)
    return _break_glass_body(org.id, break_glass.members(db.session(), org))


@policy_blp.route("/organization/break-glass", methods=["PUT"])
@guard(policy_blp, "sso:manage")
@policy_blp.arguments(BreakGlassPutSchema)
@policy_blp.response(200, BreakGlassSchema)
def put_break_glass(body: dict[str, Any]) -> dict[str, Any]:
    """Replace the break-glass members (audited ``organization.break_glass_updated``); members taken off lose their
    non-SSO sessions at once; 422 ``validation_error`` naming ``members`` for an unknown or inactive member or
    more than the maximum."""
    session = db.session()
    org = tenant_admin.get_organization(session, current_identity.organization_id)
    found = break_glass.set_members(session, runtime().gateway.client, org, body["members"], cause=request_cause())
    db.session.commit()
    return _break_glass_body(org.id, found)
