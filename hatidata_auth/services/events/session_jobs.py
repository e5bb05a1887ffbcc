"""The internal handler of ``services.workos_revocations.JOB_TYPE``: end one session at WorkOS, after our side
ended it, and audit the outcome (``session.revoked_at_workos``, details ``workos``: ``revoked``, ``not_found``
or ``failed:<error>``). WorkOS unreachable raises, so the appliers retry it (then keep it ``failed``, replayable).

A batch holding several such jobs makes their calls side by side first (:func:`revoked_together`): the batch then
waits for WorkOS about once, as with one job, not once per job, with the entity keys of its other events held."""

from __future__ import annotations

import contextvars
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ...models import AuthSession
from ...trace_context import apply_span
from ...workos import WorkOSClient
from .. import workos_revocations
from ..sessions import revoke_at_workos
from .context import EventContext, PayloadError

_MADE = "hatidata_workos_revocations_made"
Job = tuple[dict[str, Any], dict[str, str] | None]
"""An internal event of a batch: its payload, and the trace context stored with it."""


def apply_revocation(ctx: EventContext, data: dict[str, Any]) -> None:
    """Revoke the job's session at WorkOS (no client: nothing to call, ``skipped``), or take the outcome of the call
    :func:`revoked_together` made for it in this batch."""
    try:
        job = workos_revocations.parse(data)
    except (KeyError, TypeError) as exc:
        raise PayloadError(f"not a WorkOS revocation job: {exc}") from exc
    record = ctx.session.get(AuthSession, job["session_id"])
    if record is None or record.organization_id != job["organization_id"]:
        outcome = "skipped"  # the session row is gone (or not the job's organization's): nothing to name
    else:
        made = ctx.session.info.get(_MADE, {}).get((record.id, record.workos_session_id))
        if isinstance(made, Exception):
            raise made  # this job's failure, as when it calls alone; not asked again in this batch
        outcome = made or revoke_at_workos(ctx.client, record.workos_session_id, raise_unavailable=True)
    ctx.record("session.revoked_at_workos", organization_id=job["organization_id"], target_type="session",
               target_id=job["session_id"],
               details={"user_id": job["user_id"], "session_id": job["session_id"], "workos": outcome})


@contextmanager
def revoked_together(session: Session, client: WorkOSClient | None, jobs: Iterable[Job],
                     tracer: Any = None, *, alone: bool = False) -> Iterator[None]:
    """While the block runs, the WorkOS revocation jobs among *jobs* (a batch's internal events: payload, stored
    trace context) take the outcome of calls made now, all at once (a batch takes at most
    ``workos_revocations.PER_BATCH``), instead of calling WorkOS one after the other (:func:`apply_revocation`).
    With a client, and for two or more, or one in a batch not *alone* (the batch may be applied twice, once
    together and again event by event when an event fails: a call made up front is made once); a job alone calls
    as it is applied. A job whose session row is gone, or not its organization's, calls nothing here either (it is
    ``skipped``). What a call raises (WorkOS unreachable: retried) is that job's failure, as when it calls itself.
    With *tracer*, each call is made in a span of the trace that queued its job."""
    sessions = _targets(session, client, jobs)
    if client is None or len(sessions) < (2 if alone else 1):
        yield
        return
    with ThreadPoolExecutor(max_workers=min(workos_revocations.PER_BATCH, len(sessions))) as pool:
        futures = {key: pool.submit(contextvars.copy_context().run, _revoke, client, key[1], stored, tracer)
                   for key, stored in sessions.items()}
    session.info[_MADE] = {key: future.result() for key, future in futures.items()}
    try:
        yield
    finally:
        session.info.pop(_MADE, None)


def _targets(session: Session, client: WorkOSClient | None, jobs: Iterable[Job]) -> dict[tuple[str, str], Any]:
    """(session id, WorkOS session id) of each job's session that is its organization's, with the job's stored
    trace context (one statement)."""
    wanted: dict[str, tuple[str, dict[str, str] | None]] = {}
    for payload, stored in jobs:
        if payload.get("event") != workos_revocations.JOB_TYPE:
            continue
        try:
            job = workos_revocations.parse(payload.get("data"))
        except (KeyError, TypeError):
            continue  # refused when applied, as alone
        wanted[job["session_id"]] = (job["organization_id"], stored)
    if client is None or not wanted:
        return {}
    rows = session.execute(select(AuthSession.id, AuthSession.workos_session_id, AuthSession.organization_id)
                           .where(AuthSession.id.in_(sorted(wanted))))
    return {(row.id, row.workos_session_id): wanted[row.id][1] for row in rows
            if wanted[row.id][0] == row.organization_id}


def _revoke(client: WorkOSClient, workos_session_id: str, stored: dict[str, str] | None,
            tracer: Any) -> str | Exception:
    """The call's outcome, or what it raised (WorkOS unreachable, or unforeseen): raised when its job is applied,
    that event's failure alone, not the batch's."""
    try:
        with apply_span(tracer, f"workos revoke {workos_revocations.JOB_TYPE}", stored, {}):
            return revoke_at_workos(client, workos_session_id, raise_unavailable=True)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        return exc
