"""The failed-event inbox as an organization's admins see it: its failed events and their replay (audited).

The inbox itself (storing, applying and replaying events) is :mod:`~hatidata_auth.services.inbox`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from ..causes import Cause
from ..errors import AppError
from ..models import WebhookEvent
from ..workos import WorkOSClient
from . import audit, inbox, inbox_replay, paging, tenant_admin
from .inbox import InboxResult


def failed_query(session: Session, organization_id: str) -> Select[tuple[WebhookEvent]]:
    """The query of the organization's failed events (order and page it; filtered before either)."""
    return inbox.failed_of(tenant_admin.get_organization(session, organization_id))


@dataclass(frozen=True, slots=True)
class FailedEvent:
    """A stored event that failed to apply, as the organization's admins see it."""

    event_id: str
    event_type: str
    status: str
    source: str
    attempts: int
    last_error: str | None
    received_at: datetime
    event_created_at: datetime | None


PAGE_KEY = paging.key_kind(WebhookEvent.id)


def _failed(row: WebhookEvent) -> FailedEvent:
    return FailedEvent(event_id=row.event_id, event_type=row.event_type, status=row.status, source=row.source,
                       attempts=row.attempts, last_error=row.last_error, received_at=row.received_at,
                       event_created_at=row.event_created_at)


def failed_page(session: Session, organization_id: str, page: paging.PageRequest) -> paging.Page[FailedEvent]:
    """One page of the organization's failed events, in the order they arrived."""
    return paging.paginate(session, failed_query(session, organization_id), WebhookEvent.id, page, _failed)


def replay(session: Session, client: WorkOSClient, *, organization_id: str, event_id: str, cause: Cause) -> InboxResult:
    """Apply a stored event of the organization again and audit ``webhook_event.replayed`` in the transaction that
    records its outcome (committed here, but for a duplicate: the caller commits); 404 ``not_found`` for an event
    that is not the organization's."""
    org = tenant_admin.get_organization(session, organization_id)
    row = session.scalar(select(WebhookEvent).where(WebhookEvent.event_id == event_id, inbox.concerning(org)))
    if row is None:
        raise AppError("No such event.", status=404, code="not_found")
    org_id = org.id

    def audited(result: InboxResult) -> None:  # in the transaction that records the replay's outcome
        audit.record(session, action="webhook_event.replayed", cause=cause, organization_id=org_id,
                     target_type="webhook_event", target_id=event_id[:64],
                     outcome="success" if result.status != "failed" else "failure",
                     details={"status": result.status, "error": result.error})

    return inbox_replay.replay(session, client, event_id, cause=cause, on_result=audited)
