"""``connection.*`` events: the organization's SSO connection state and the alerts its admins see.

Ordering (WorkOS does not deliver in order): the connection state is versioned by the connection's
``updated_at`` (``connection.deleted`` is final); each alert is versioned by (event ``created_at``, event id)
per (connection, alert kind) in :mod:`services.alerts`. An alert's state depends only on its own
connection's events, so any delivery order gives the same alerts.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from ...models import Organization
from .. import alerts
from ..organizations import may_adopt, wizard_connection_ids
from .context import EventContext, parse_time, require, resolve_organization
from .registry import handles


def _organization(ctx: EventContext, connection_id: str, workos_organization_id: Any) -> Organization | None:
    org = resolve_organization(ctx, workos_organization_id)
    if org is None:
        org = ctx.session.scalar(select(Organization).where(Organization.connection_id == connection_id))
        ctx.organization = org
    return org


def _apply_alerts(ctx: EventContext, org: Organization, connection_id: str, message: str = "",
                  details: dict[str, Any] | None = None) -> None:
    if alerts.apply_event(ctx, org, connection_id, message=message, details=details) and ctx.outcome == "ignored":
        ctx.outcome = "applied"  # the connection's state was not ours to mirror, but its alerts changed


@handles("connection.activated", "connection.deactivated", "connection.deleted",
         revokes=lambda t, d: t != "connection.activated")
def on_connection(ctx: EventContext, data: dict[str, Any]) -> None:
    """``connection.activated|deactivated|deleted``: mirror the SSO connection's state; open or resolve alerts."""
    require(data, "id")
    org = _organization(ctx, data["id"], data.get("organization_id"))
    if org is None:
        ctx.ignore("unknown organization")
        return
    message = (f"The SSO connection {data['id']} is inactive: members cannot sign in with single sign-on "
               "until it is activated again.")
    _mirror_state(ctx, org, data, parse_time(data.get("updated_at")) or ctx.event_time)
    _apply_alerts(ctx, org, data["id"], message, {"connection_type": data.get("connection_type")})


def _mirror_state(ctx: EventContext, org: Organization, data: dict[str, Any], version: Any) -> None:
    state = "deleted" if ctx.event_type == "connection.deleted" else str(data.get("state") or "")
    if org.connection_id != data["id"]:
        # Only a wizard activation after a passed test sign-in switches the sign-in connection; an event adopts
        # one only for an organization with none, and never one a wizard of ours created (docs/plugins.md).
        if ctx.event_type != "connection.activated" or org.connection_id is not None:
            ctx.ignore("not the organization's sign-in connection")
            return
        if not may_adopt(org.connection_id, data["id"], state, wizard_connection_ids(ctx.session, org.id)):
            ctx.ignore("not active, or a wizard of ours created it (used once tested and activated there)")
            return
    if org.connection_id == data["id"] and org.connection_state == "deleted":
        ctx.ignore("connection deleted")
        return
    # Version guard, as for the other objects: an event older than the connection state we hold is stale
    # (equal re-applies the same state). A deletion is final whatever its time.
    if (org.connection_id == data["id"] and org.connection_version_at is not None
            and version < org.connection_version_at and state != "deleted"):
        return
    before = (org.connection_id, org.connection_state, org.connection_type)
    org.connection_id = data["id"]
    org.connection_state = state
    if data.get("connection_type"):
        org.connection_type = str(data["connection_type"])
    if org.connection_version_at is None or version > org.connection_version_at or before[0] != data["id"]:
        org.connection_version_at = version
    if before != (org.connection_id, org.connection_state, org.connection_type):
        ctx.record(ctx.event_type, organization_id=org.id, target_type="connection", target_id=data["id"],
                   details={"state": state, "connection_type": data.get("connection_type")})


@handles("connection.saml_certificate_renewal_required", "connection.saml_certificate_renewed", revokes=False)
def on_certificate(ctx: EventContext, data: dict[str, Any]) -> None:
    """SAML certificate renewal required (opens an alert for admins) or renewed (resolves it)."""
    conn = require(require(data, "connection")["connection"], "id")
    org = _organization(ctx, conn["id"], conn.get("organization_id"))
    if org is None:
        ctx.ignore("unknown organization")
        return
    certificate: dict[str, Any] = data["certificate"] if isinstance(data.get("certificate"), dict) else {}
    expiry, days = certificate.get("expiry_date"), data.get("days_until_expiry")
    details = {"certificate_type": certificate.get("certificate_type"), "expiry_date": expiry,
               "days_until_expiry": days}
    if ctx.event_type.endswith("renewal_required"):
        verb = "expired" if certificate.get("is_expired") else "expires"
        message = (f"The SAML certificate of connection {conn['id']} {verb} on {expiry} ({days} days). "
                   "Upload the renewed certificate to keep SSO working.")
        _apply_alerts(ctx, org, conn["id"], message, details)
        ctx.record(ctx.event_type, organization_id=org.id, target_type="connection", target_id=conn["id"],
                   details=details)
    else:
        _apply_alerts(ctx, org, conn["id"])
        ctx.record(ctx.event_type, organization_id=org.id, target_type="connection", target_id=conn["id"],
                   details={**details, "renewed_at": data.get("renewed_at")})

