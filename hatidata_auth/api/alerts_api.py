"""``/api/v1/organization/alerts``: what the organization's admins must act on (e.g. an expiring SAML certificate)."""

from __future__ import annotations

from typing import Any

from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from ..extensions import db
from ..identity import current_identity, request_cause
from ..services import alerts
from .common import PageArgsSchema, guard, page_body, page_request, page_schema, timestamp

alerts_blp = Blueprint("alerts", __name__, description="Alerts about the organization's SSO connection.")
BLUEPRINTS = (alerts_blp,)


class AlertSchema(Schema):
    id = fields.String(required=True)
    organization_id = fields.String(required=True)
    kind = fields.String(required=True, metadata={"description": "`saml_certificate_renewal`, "
                                                                 "`saml_certificate_expiry` (a held certificate "
                                                                 "within 90, 30 or 7 days of expiry), "
                                                                 "`connection_inactive`, `break_glass_used`, "
                                                                 "`no_active_admin` or `audit_stream_dead_letter` "
                                                                 "(a SIEM sink stopped after too many failed "
                                                                 "deliveries)."})
    target_type = fields.String(allow_none=True, required=True, metadata={"description": "e.g. `connection`."})
    target_id = fields.String(allow_none=True, required=True,
                              metadata={"description": "The WorkOS id of the object, e.g. `conn_01…`."})
    message = fields.String(required=True)
    details = fields.Dict(required=True, metadata={"description": "Kind-specific facts, e.g. `expiry_date`, "
                                                                  "`days_until_expiry`, `certificate_type`."})
    status = fields.String(required=True, validate=validate.OneOf(["open", "resolved"]))
    # When WorkOS created the last event applied to the alert.
    occurred_at = timestamp(allow_none=True, required=True)
    resolved_at = timestamp(allow_none=True, required=True)
    resolution = fields.String(allow_none=True, required=True,
                               metadata={"description": "The event type that ended its cause, e.g. "
                                                        "`connection.saml_certificate_renewed`, or "
                                                        "`certificate_rotated` / `certificate_retired`."})
    source_event_id = fields.String(allow_none=True, required=True)
    created_at = timestamp(required=True)
    updated_at = timestamp(required=True)


class AlertListArgs(PageArgsSchema):
    status = fields.String(load_default="open", validate=validate.OneOf(alerts.STATUSES),
                           metadata={"description": "`open` (default), `resolved` or `all`."})


AlertPage = page_schema(AlertSchema, "AlertPage")


@alerts_blp.route("/organization/alerts", methods=["GET"])
@guard(alerts_blp, "sso:manage")
@alerts_blp.arguments(AlertListArgs, location="query")
@alerts_blp.response(200, AlertPage)
def list_alerts(args: dict[str, Any]) -> dict[str, Any]:
    """The organization's alerts (open ones by default), in id order."""
    page = alerts.alerts_page(db.session(), current_identity.organization_id, args["status"],
                              page_request(args, alerts.PAGE_KEY))
    return page_body(page, alerts.AlertView.to_dict)


@alerts_blp.route("/organization/alerts/<alert_id>/resolve", methods=["POST"])
@guard(alerts_blp, "sso:manage")
@alerts_blp.response(200, AlertSchema)
def resolve_alert(alert_id: str) -> dict[str, Any]:
    """Mark a ``break_glass_used`` alert reviewed (audited ``organization_alert.resolved``); 404 for an alert not
    of this organization, 409 ``alert_not_resolvable`` for a kind that resolves when its cause ends."""
    resolved = alerts.resolve_by_admin(db.session(), organization_id=current_identity.organization_id,
                                       alert_id=alert_id, cause=request_cause())
    db.session.commit()
    return resolved.to_dict()
