"""The failed-event inbox as an organization's admins see it: its failed events and their replay (audited).

The inbox itself (storing, applying and replaying events) is :mod:`~hatidata_auth.services.inbox`.
"""

from __future__ import annotations

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from ..causes import Cause
from ..errors import AppError
from ..models import WebhookEvent
from ..workos import WorkOSClient
from . import audit, inbox, tenant_admin
from .inbox import InboxResult


def failed_query(session: Session, organization_id: str) -> Select[tuple[WebhookEvent]]:
    """The query of the organization's failed events (order and page it; filtered before either)."""
    return inbox.failed_of(tenant_admin.get_organization(session, organization_id))


def replay(session: Session, client: WorkOSClient, *, organization_id: str, event_id: str, cause: Cause) -> InboxResult:
    """Apply a stored event of the organization again and audit ``webhook_event.replayed`` (caller commits);
    404 ``not_found`` for an event that is not the organization's."""
    org = tenant_admin.get_organization(session, organization_id)
    row = session.scalar(select(WebhookEvent).where(WebhookEvent.event_id == event_id, inbox.concerning(org)))
    if row is None:
        raise AppError("No such event.", status=404, code="not_found")
    org_id = org.id
    result = inbox.replay(session, client, event_id, cause=Cause.by(cause.actor))
    audit.record(session, action="webhook_event.replayed", cause=cause, organization_id=org_id,
                 target_type="webhook_event", target_id=event_id[:64],
                 outcome="success" if result.status != "failed" else "failure",
                 details={"status": result.status, "error": result.error})
    return result
