"""WorkOS's side of a session revocation, done after the applier's transaction instead of inside it.

A session is ended here first (``services.sessions.revoke_records``: the row, its audit event, the cache
eviction after commit): that is what rejects it in every worker. Ending it at WorkOS as well is one HTTP call per
session. In a request (an admin's revocation, a policy refusal) the call is made at once and its outcome kept in the
``session.revoked`` audit event. In an inbox applier's transaction (a directory deactivation, a removed member, a
fan-out chunk deprovisioning many) it is queued instead: one internal inbox row per session (:data:`JOB_TYPE`,
written in the same transaction, so it exists exactly when the revocation committed), applied later by the
appliers with retries, and audited as ``session.revoked_at_workos``. The applier never holds a person's locks, or
makes the deprovisioning webhook wait, across WorkOS's latency.

This module is low in the layers (models and causes only): ``services.sessions`` queues, the internal handler in
``services.events.session_jobs`` applies.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.orm import Session

from ..causes import Cause
from .fanout_jobs import insert_job

JOB_TYPE = "hatidata.revoke_workos_session"
PER_BATCH = 8
"""How many of these jobs one batch takes at most (``inbox_claim``), their calls all in flight at once
(``services.events.session_jobs.revoked_together``): the batch waits for WorkOS about once, as with one job, with
the keys of its other events held (a break-it review: 16 calls, 8 at a time, doubled a deprovisioning's wait)."""
_DEFER = "hatidata_defer_workos_revocations"


@contextmanager
def deferred_in(session: Session) -> Iterator[None]:
    """While the block runs, sessions revoked in *session* are ended at WorkOS later (:func:`queue`), not at once."""
    before = session.info.get(_DEFER, False)
    session.info[_DEFER] = True
    try:
        yield
    finally:
        session.info[_DEFER] = before


def is_deferred(session: Session) -> bool:
    """Whether WorkOS revocations made in *session* now are queued (inside :func:`deferred_in`)."""
    return bool(session.info.get(_DEFER, False))


def queue(session: Session, *, organization_id: str, session_id: str, user_id: str, cause: Cause) -> str:
    """Queue the WorkOS revocation of our session *session_id* in *session*'s transaction; returns the job's
    event id. The job names our session only (its WorkOS id is read from the session row when it runs, so no
    WorkOS session id is copied anywhere); two revocations of one session never run at once (entity key)."""
    data = {"organization_id": organization_id, "session_id": session_id, "user_id": user_id,
            "cause": cause.to_dict()}
    return insert_job(session, JOB_TYPE, organization_id=organization_id, data=data,
                      entity_key=f"workos_revocation:{session_id}", revokes=False)


def parse(data: Any) -> dict[str, str]:
    """The stored job's fields (:func:`queue` wrote them); raises ``KeyError``/``TypeError`` on another shape."""
    return {name: str(data[name]) for name in ("organization_id", "session_id", "user_id")}
