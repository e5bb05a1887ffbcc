"""``/api/v1/organization/sign-in-attempts``: the organization's SSO sign-in attempts, why each failed and the fix."""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from ..errors import AppError
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
        "description": "The attributes received; values are `[redacted]` except in the answer of "
                       "`POST /organization/sign-in-attempts/{attempt_id}/reveal`."})
    attributes_revealed = fields.Boolean(required=True)
    ip_address = fields.String(allow_none=True, required=True)


class SignInAttemptArgs(PageArgsSchema):
    reason = fields.String(load_default=None, validate=validate.OneOf(SIGN_IN_REASONS))
    outcome = fields.String(load_default=None, validate=validate.OneOf(sign_in_attempts.OUTCOMES))
    email = fields.String(load_default=None, validate=validate.Length(max=320))


SignInAttemptPage = page_schema(SignInAttemptSchema, "SignInAttemptPage")


@sign_ins_blp.route("/organization/sign-in-attempts", methods=["GET"])
@guard(sign_ins_blp, "sso:manage")
@sign_ins_blp.arguments(SignInAttemptArgs, location="query")
@sign_ins_blp.response(200, SignInAttemptPage)
def list_sign_in_attempts(args: dict[str, Any]) -> dict[str, Any]:
    """The organization's SSO sign-in attempts, newest first, kept 30 days, attribute values redacted.

    Answers 200 with a page; 401 without credentials; 403 without ``sso:manage``; 422 naming an invalid
    ``reason``, ``outcome``, ``email``, ``limit`` or ``cursor``. A read: it never
    reveals values nor writes anything (reveal one attempt with ``POST …/{attempt_id}/reveal``).
    """
    page = sign_in_attempts.attempts_page(
        db.session(), current_identity.organization_id, page_request(args, sign_in_attempts.PAGE_KEY),
        sign_in_attempts.fixer(get_registry(current_app)), reason=args["reason"], outcome=args["outcome"],
        email=args["email"])
    return page_body(page)


@sign_ins_blp.route("/organization/sign-in-attempts/<attempt_id>/reveal", methods=["POST"])
@guard(sign_ins_blp, "sso:manage")
@sign_ins_blp.response(200, SignInAttemptSchema)
def reveal_sign_in_attempt(attempt_id: str) -> Any:
    """One attempt with its attribute values shown, the reveal audited ``sign_in_attempts.attributes_revealed``.

    Answers 200 with the attempt; 400 for a cookie caller without a valid ``X-CSRFToken``; 401 without
    credentials; 403 without ``sso:manage``; 404 for an attempt of another organization (or none).
    """
    org_id = current_identity.organization_id
    # Any other id is answered like a missing one (never a routing 404 that tells the two apart).
    number = int(attempt_id) if attempt_id.isascii() and attempt_id.isdigit() and len(attempt_id) <= 19 else 0
    shown = sign_in_attempts.reveal(db.session(), org_id, number,
                                    sign_in_attempts.fixer(get_registry(current_app)), request_cause())
    if shown is None:
        raise AppError("No such sign-in attempt.", status=404, code="not_found")
    db.session.commit()
    return shown
