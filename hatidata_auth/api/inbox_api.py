"""``/api/v1/webhook-inbox``: the organization's WorkOS events that failed to apply, and their replay."""

from __future__ import annotations

from typing import Any

from flask_smorest import Blueprint
from marshmallow import Schema, fields

from ..extensions import db
from ..identity import current_identity, request_cause, runtime
from ..services import inbox_admin
from .common import PageArgsSchema, guard, page_body, page_request, page_schema, timestamp

inbox_blp = Blueprint("webhook-inbox", __name__, description="WorkOS events that failed to apply.")
BLUEPRINTS = (inbox_blp,)


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


def _inbox_view(row: inbox_admin.FailedEvent) -> dict[str, Any]:
    return {"event_id": row.event_id, "event_type": row.event_type, "status": row.status, "source": row.source,
            "attempts": row.attempts, "last_error": row.last_error, "received_at": row.received_at.isoformat(),
            "event_created_at": None if row.event_created_at is None else row.event_created_at.isoformat()}


@inbox_blp.route("/webhook-inbox/failed", methods=["GET"])
@guard(inbox_blp, "sso:manage")
@inbox_blp.arguments(PageArgsSchema, location="query")
@inbox_blp.response(200, InboxPage)
def list_failed(args: dict[str, Any]) -> dict[str, Any]:
    """The organization's WorkOS events that failed to apply, in the order they arrived."""
    page = inbox_admin.failed_page(db.session(), current_identity.organization_id,
                                   page_request(args, inbox_admin.PAGE_KEY))
    return page_body(page, _inbox_view)


@inbox_blp.route("/webhook-inbox/<event_id>/replay", methods=["POST"])
@guard(inbox_blp, "sso:manage")
@inbox_blp.response(200, ReplaySchema)
def replay_event(event_id: str) -> dict[str, Any]:
    """Apply a stored event of the organization again (audited ``webhook_event.replayed``); 404 for an event
    that is not the organization's."""
    identity = current_identity
    result = inbox_admin.replay(db.session(), runtime().gateway.client, organization_id=identity.organization_id,
                                event_id=event_id, cause=request_cause())
    db.session.commit()
    return {"event_id": result.event_id, "event_type": result.event_type, "status": result.status,
            "error": result.error, "note": result.note}
