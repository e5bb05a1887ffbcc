"""``/api/v1/organization/audit-streams``: the organization's audit sinks (HTTPS webhook, Splunk HEC, Datadog,
syslog over TLS) that receive its audit chain with signed checkpoints (docs/audit.md, "Streaming to a SIEM").

Reading needs ``audit:read``; every change (create, change, delete, retry) needs ``audit:read`` and ``audit:manage``
(admins only): a key given to a SIEM to pull the log cannot re-point, pause or delete the sinks that copy it, and a
key that may not read the log cannot aim a sink at it. Every change is also sensitive (a recent sign-in,
:mod:`hatidata_auth.step_up`): a sink receives the whole audit log. Every route answers 401 without credentials
and 403 ``forbidden`` naming the missing permissions.
"""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from .. import audit_runtime
from ..extensions import db
from ..identity import current_identity, request_cause
from ..models import STREAM_KINDS, STREAM_STATES
from ..services import audit_stream_admin
from ..services.audit_stream_admin import StreamChange, StreamView
from .common import guard, timestamp

blp = Blueprint("audit-streams", __name__, description="Sinks that receive the organization's audit log.")
BLUEPRINTS = (blp,)

MANAGE = ("audit:read", "audit:manage")
"""What every change needs: reading the log it copies, and managing the sinks."""

NAME = validate.Length(min=1, max=100)
ENDPOINT = validate.Length(min=1, max=2048)
SECRET = validate.Length(min=16, max=512)


class StreamSchema(Schema):
    id = fields.String(required=True, metadata={"description": "`ast_…`."})
    name = fields.String(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(STREAM_KINDS))
    endpoint = fields.String(required=True, metadata={"description": "A URL (`https`, `splunk_hec`, `datadog`: "
                                                                     "the delivery URL) or `host:port` "
                                                                     "(`syslog_tls`)."})
    secret_hint = fields.String(allow_none=True, required=True,
                                metadata={"description": "The secret's last four characters; never the secret."})
    enabled = fields.Boolean(required=True)
    state = fields.String(required=True, validate=validate.OneOf(STREAM_STATES))
    cursor = fields.Integer(required=True, metadata={"description": "The last `seq` the sink confirmed."})
    attempts = fields.Integer(required=True, metadata={"description": "Failed attempts in a row."})
    next_attempt_at = timestamp(allow_none=True, required=True)
    last_error = fields.String(allow_none=True, required=True)
    last_delivered_at = timestamp(allow_none=True, required=True)
    delivered_events = fields.Integer(required=True, metadata={"description": "Lines confirmed (events and "
                                                                              "checkpoints, repeats included)."})
    created_at = timestamp(required=True)
    updated_at = timestamp(required=True)


class CreatedSchema(StreamSchema):
    secret = fields.String(allow_none=True, required=True,
                           metadata={"description": "The generated HMAC secret of an `https` sink created "
                                                    "without one, shown only in this answer; else null."})


class StreamListSchema(Schema):
    data = fields.List(fields.Nested(StreamSchema), required=True)


class StreamCreateSchema(Schema):
    name = fields.String(required=True, validate=NAME)
    kind = fields.String(required=True, validate=validate.OneOf(STREAM_KINDS))
    endpoint = fields.String(required=True, validate=ENDPOINT)
    secret = fields.String(validate=SECRET, metadata={
        "description": "`https`: the HMAC secret (generated when omitted); `splunk_hec`: the HEC token; `datadog`: "
                       "the API key; `syslog_tls`: none."})
    start = fields.String(load_default="beginning", validate=validate.OneOf(("beginning", "now")),
                          metadata={"description": "`beginning` (default): the whole chain; `now`: events after "
                                                   "the current head."})
    enabled = fields.Boolean(load_default=True)


class StreamPatchSchema(Schema):
    name = fields.String(validate=NAME)
    endpoint = fields.String(validate=ENDPOINT)
    secret = fields.String(validate=SECRET)
    enabled = fields.Boolean()


def _json(stream: StreamView) -> dict[str, Any]:
    return {name: getattr(stream, name) for name in StreamView.__slots__}


def _loopback() -> bool:
    return bool(audit_runtime.setting(current_app, "HATIDATA_AUDIT_STREAM_ALLOW_LOOPBACK_HTTP"))


@blp.route("/organization/audit-streams", methods=["GET"])
@guard(blp, "audit:read")
@blp.response(200, StreamListSchema)
def list_streams() -> dict[str, Any]:
    """The organization's sinks, oldest first (at most `HATIDATA_AUDIT_STREAMS_MAX`)."""
    return {"data": [_json(s) for s in audit_stream_admin.list_streams(db.session(),
                                                                        current_identity.organization_id)]}


@blp.route("/organization/audit-streams", methods=["POST"])
@guard(blp, *MANAGE)
@blp.arguments(StreamCreateSchema)
@blp.response(201, CreatedSchema)
@blp.alt_response(409, description="`too_many_audit_streams`: the organization has `HATIDATA_AUDIT_STREAMS_MAX`.")
def create_stream(body: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """Add a sink (201, audited `audit_stream.created`); 422 `validation_error` naming `endpoint` (not https, a
    credential in the URL, a forbidden address…), `secret` or `kind`; 409 `too_many_audit_streams` (creates of one
    organization are serialized, so concurrent ones never pass the limit)."""
    created = audit_stream_admin.create_stream(
        db.session(), current_identity.organization_id, name=body["name"], kind=body["kind"],
        endpoint=body["endpoint"], secret=body.get("secret"), start=body["start"], enabled=body["enabled"],
        reveal_session_ids=current_identity.has_permission("sessions:write"),
        seal_key=audit_runtime.seal_key(current_app),
        limit=int(audit_runtime.setting(current_app, "HATIDATA_AUDIT_STREAMS_MAX")),
        allow_loopback=_loopback(), cause=request_cause())
    db.session.commit()
    audit_runtime.wake(current_app)
    return {**_json(created.stream), "secret": created.secret}, 201


@blp.route("/organization/audit-streams/<stream_id>", methods=["GET"])
@guard(blp, "audit:read")
@blp.response(200, StreamSchema)
def get_stream(stream_id: str) -> dict[str, Any]:
    """One sink with its cursor and delivery state; 404 for an unknown id or another organization's."""
    return _json(audit_stream_admin.get_stream(db.session(), current_identity.organization_id, stream_id))


@blp.route("/organization/audit-streams/<stream_id>", methods=["PATCH"])
@guard(blp, *MANAGE)
@blp.arguments(StreamPatchSchema)
@blp.response(200, StreamSchema)
def update_stream(body: dict[str, Any], stream_id: str) -> dict[str, Any]:
    """Change name, endpoint, secret or `enabled` (false pauses; true resumes a paused sink) (audited
    `audit_stream.updated`); 404 unknown; 422 as for creation."""
    stream = audit_stream_admin.update_stream(
        db.session(), current_identity.organization_id, stream_id, StreamChange(**body),
        seal_key=audit_runtime.seal_key(current_app), allow_loopback=_loopback(), cause=request_cause())
    db.session.commit()
    audit_runtime.wake(current_app)
    return _json(stream)


@blp.route("/organization/audit-streams/<stream_id>", methods=["DELETE"])
@guard(blp, *MANAGE)
@blp.response(204)
def delete_stream(stream_id: str) -> None:
    """Remove a sink (204, audited `audit_stream.deleted`); 404 unknown."""
    audit_stream_admin.delete_stream(db.session(), current_identity.organization_id, stream_id,
                                     cause=request_cause())
    db.session.commit()


@blp.route("/organization/audit-streams/<stream_id>/retry", methods=["POST"])
@guard(blp, *MANAGE)
@blp.response(200, StreamSchema)
def retry_stream(stream_id: str) -> dict[str, Any]:
    """Resume a `dead_letter` (or `retrying`) sink now from its cursor (audited `audit_stream.retried`); 404
    unknown; 409 `conflict` for a sink that is not failing or is disabled."""
    stream = audit_stream_admin.retry_stream(db.session(), current_identity.organization_id, stream_id,
                                             cause=request_cause())
    db.session.commit()
    audit_runtime.wake(current_app)
    return _json(stream)
