"""``authentication.*``: every sign-in attempt WorkOS reports, recorded in the audit log."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from ...models import AuthSession, Membership, Organization, User
from .. import sign_in_attempts
from .context import EventContext, PayloadError, find_organization
from .registry import handles

AUTHENTICATION_EVENT_TYPES: tuple[str, ...] = (
    "authentication.email_verification_failed", "authentication.email_verification_succeeded",
    "authentication.magic_auth_failed", "authentication.magic_auth_succeeded",
    "authentication.mfa_failed", "authentication.mfa_succeeded",
    "authentication.oauth_failed", "authentication.oauth_succeeded",
    "authentication.passkey_failed", "authentication.passkey_succeeded",
    "authentication.password_failed", "authentication.password_succeeded",
    "authentication.radar_risk_detected", "authentication.reauthentication_succeeded",
    "authentication.sso_failed", "authentication.sso_started", "authentication.sso_succeeded",
    "authentication.sso_timed_out",
)


@handles(*AUTHENTICATION_EVENT_TYPES, revokes=False)
def on_authentication(ctx: EventContext, data: dict[str, Any]) -> None:
    """``authentication.*``: record in the audit log with the source details."""
    if not isinstance(data, dict):
        raise PayloadError("data must be an object")
    org_id: str | None = None
    org: Organization | None = None
    sso: dict[str, Any] = data["sso"] if isinstance(data.get("sso"), dict) else {}
    workos_org_id = data.get("organization_id") or sso.get("organization_id")
    if workos_org_id:
        org = find_organization(ctx.session, str(workos_org_id))
        org_id = org.id if org else None
    user_id = None
    if data.get("user_id"):
        user = ctx.session.scalar(select(User).where(User.workos_user_id == data["user_id"]))
        user_id = user.id if user else None
        if org_id is None and user is not None:
            orgs = list(ctx.session.scalars(select(Membership.organization_id).where(
                Membership.user_id == user.id, Membership.status == "active").limit(2)))
            org_id = orgs[0] if len(orgs) == 1 else None
    failed = ctx.event_type.endswith(("_failed", "_timed_out", "radar_risk_detected")) or \
        data.get("status") == "failed"
    error = data.get("error") if isinstance(data.get("error"), dict) else None
    # Our own session id, never WorkOS's: knowing a WorkOS session id is enough to end that session.
    session_id = None if org_id is None or not isinstance(sso.get("session_id"), str) else ctx.session.scalar(
        select(AuthSession.id).where(AuthSession.organization_id == org_id,
                                     AuthSession.workos_session_id == sso["session_id"]))
    ctx.record(ctx.event_type, organization_id=org_id, target_type="user" if user_id else None, target_id=user_id,
               outcome="failure" if failed else "success",
               details={"type": data.get("type"), "status": data.get("status"), "email": data.get("email"),
                        "ip_address": data.get("ip_address"), "user_agent": data.get("user_agent"),
                        "workos_user_id": data.get("user_id"), "error": error,
                        "connection_id": sso.get("connection_id"), "session_id": session_id})
    if org is not None:  # an SSO attempt belongs to the organization whose connection WorkOS names
        sign_in_attempts.record_event(ctx.session, organization_id=org.id, event_id=ctx.event_id,
                                      event_type=ctx.event_type, data=data, occurred_at=ctx.event_time,
                                      idp_plugin=org.idp_plugin)


# Every authentication event type WorkOS documents (spec 0.61.0, SDK 10.6 ``EventSchema``), named one by one:
# the Events API filters by exact type, so a type missing here is neither polled nor applied.
