"""Directory users waiting for a freed email are linked by jobs of their own, never by the transaction that freed it.

Rule: **on the email path an event's transaction holds only its own entity key; work on another directory user is
queued under that user's key.** When a directory user's email change takes an email off its person
(``directory_people.PersonLink.freed_email``), each live directory user of the organization refused for that email
(``directory_people.waiting_for``) gets one internal inbox row, :data:`JOB_TYPE`, written in the freeing
transaction (so it exists exactly when the freeing committed) with the waiting user's entity key
(``fanout_jobs.member_key``: ``user:<directory user id>``). An applier claims it as any event of that user: holding
that user's key, in order after the user's events already pending (its event time is never before theirs), and
syncs the user then
(``events.freed_email``). Syncing it may free another email in turn, which queues the next job: a chain of jobs,
each its own transaction. Before, the freeing transaction took the waiting users' keys itself (a blocking lock) and
synced them inline: a cascade of freed emails around a ring of users (a rotation of emails) made each transaction
hold its own key and wait for the next user's, PostgreSQL aborted one of the ring, the aborted applier claimed its
key again at once, and the survivor's cascade met it again: a livelock of deadlocks
(``tests/test_breakswap_email_cycle.py``).

This module is low in the layers (models and causes only): ``events.directory_state.sync_member`` queues, the
internal handler in ``services.events.freed_email`` applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, type_coerce
from sqlalchemy.orm import Session

from ..causes import Cause
from ..models import WebhookEvent
from ..models.base import UTCDateTime
from ..models.inbox import claim_time, entity, status_is
from .fanout_jobs import insert_job, member_key

JOB_TYPE = "hatidata.link_freed_email"
REASON = "email_freed"


@dataclass(frozen=True, slots=True)
class FreedEmailJob:
    """Link the directory user *directory_user_id* (WorkOS id) of our organization *organization_id*, waiting for
    *email* (lower case), which the transaction that queued the job freed; *cause*, that transaction's."""

    organization_id: str
    directory_user_id: str
    email: str
    cause: Cause


def queue(session: Session, job: FreedEmailJob) -> str:
    """Queue *job* in *session*'s transaction (the freeing one, which commits it); returns its event id. It grants
    (``revokes`` false): the deprovisioning thread leaves it to the other appliers."""
    key = member_key(job.directory_user_id)
    data = {"organization_id": job.organization_id, "directory_user_id": job.directory_user_id,
            "email": job.email, "cause": job.cause.to_dict()}
    return insert_job(session, JOB_TYPE, organization_id=job.organization_id, data=data, entity_key=key,
                      revokes=False, not_before=_last_pending(session, key))


def _last_pending(session: Session, key: str) -> datetime | None:
    """The latest claim time of the events pending on *key*: the job comes after them in claim order even when
    their event times (WorkOS's clock) are ahead of ours, so it syncs the user as its own events left it (one probe
    of ``ix_webhook_events_pending_key``)."""
    when = type_coerce(claim_time(), UTCDateTime())
    return session.scalar(select(when).where(status_is("received"), entity() == key)
                          .order_by(claim_time().desc(), WebhookEvent.id.desc()).limit(1))


def parse(data: Any) -> FreedEmailJob:
    """The stored job (:func:`queue` wrote it); raises ``KeyError``, ``TypeError`` or ``ValueError`` on another
    shape."""
    return FreedEmailJob(str(data["organization_id"]), str(data["directory_user_id"]), str(data["email"]),
                         Cause.from_dict(data["cause"]))
