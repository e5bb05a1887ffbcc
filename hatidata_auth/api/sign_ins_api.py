"""``/api/v1/organization/sign-in-attempts``: the organization's SSO sign-in attempts, why each failed and the fix."""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from ..extensions import db
from ..identity import current_identity, request_cause
from ..idp import SIGN_IN_REASONS, get_registry
from ..services import sign_in_attempts
from .common import PageArgsSchema, guard, page_body, page_request, page_schema, timestamp

sign_ins_blp = Blueprint("sign_ins", __name__, description="SSO sign-in attempts and why they failed.")
BLUEPRINTS = (sign_ins_blp,)


class SignInAttemptSchema(Schema):
    id = fields.Integer(required=True)
    organization_id = fields.String(required=True)
    occurred_at = timestamp(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(sign_in_attempts.KINDS),
                         metadata={"description": "`sign_in`, or `test` (the SSO wizard's test sign-in)."})
    outcome = fields.String(required=True, validate=validate.OneOf(sign_in_attempts.OUTCOMES))
    reason = fields.String(allow_none=True, required=True, validate=validate.OneOf(SIGN_IN_REASONS),
                           metadata={"description": "Why it failed (`null` for a success); see docs/api.md."})
    fix = fields.String(allow_none=True, required=True,
                        metadata={"description": "How to fix it, in the identity provider's own words."})
    error_code = fields.String(allow_none=True, required=True,
                               metadata={"description": "WorkOS's error code, or our refusal's."})
    error_message = fields.String(allow_none=True, required=True)
    email = fields.String(allow_none=True, required=True)
    connection_id = fields.String(allow_none=True, required=True)
    idp_plugin = fields.String(allow_none=True, required=True)
    sources = fields.List(fields.String(validate=validate.OneOf(["callback", "event"])), required=True,
                          metadata={"description": "Who saw it: our `callback`, WorkOS's `event`, or both."})
    missing_attribute = fields.String(allow_none=True, required=True)
    attributes = fields.Dict(required=True, metadata={
        "description": "The attributes received; values are `[redacted]` unless `reveal_attributes=true`."})
    attributes_revealed = fields.Boolean(required=True)
    ip_address = fields.String(allow_none=True, required=True)


class SignInAttemptArgs(PageArgsSchema):
    reason = fields.String(load_default=None, validate=validate.OneOf(SIGN_IN_REASONS))
    outcome = fields.String(load_default=None, validate=validate.OneOf(sign_in_attempts.OUTCOMES))
    email = fields.String(load_default=None, validate=validate.Length(max=320))
    reveal_attributes = fields.Boolean(load_default=False, metadata={
        "description": "Show the attributes' values (audited `sign_in_attempts.attributes_revealed`)."})


SignInAttemptPage = page_schema(SignInAttemptSchema, "SignInAttemptPage")


@sign_ins_blp.route("/organization/sign-in-attempts", methods=["GET"])
@guard(sign_ins_blp, "sso:manage")
@sign_ins_blp.arguments(SignInAttemptArgs, location="query")
@sign_ins_blp.response(200, SignInAttemptPage)
def list_sign_in_attempts(args: dict[str, Any]) -> dict[str, Any]:
    """The organization's SSO sign-in attempts, newest first, kept 30 days.

    Answers 200 with a page; 401 without credentials; 403 without ``sso:manage``; 422 naming an invalid
    ``reason``, ``outcome``, ``email``, ``limit`` or ``cursor``. With ``reveal_attributes=true`` the values are
    shown and the reveal is audited (committed) naming the attempts of the page.
    """
    org_id = current_identity.organization_id
    page = sign_in_attempts.attempts_page(
        db.session(), org_id, page_request(args, sign_in_attempts.PAGE_KEY),
        sign_in_attempts.fixer(get_registry(current_app)), reason=args["reason"], outcome=args["outcome"],
        email=args["email"], reveal=bool(args["reveal_attributes"]))
    if args["reveal_attributes"]:
        sign_in_attempts.audit_reveal(db.session(), org_id, [a.id for a in page.items], request_cause())
        db.session.commit()
    return page_body(page)
