"""``fanout_jobs.insert_job``, the one writer of internal work items (issue #14): the row it stores on every
database, and on PostgreSQL the ``NOTIFY`` that goes with it, heard only once its transaction commits, and carrying
the revoking note exactly when the job may take access away. Its statement is built once and reused (a job's
insert cost 0.36-0.50 ms of CPU when built per call, 0.15-0.19 ms reused: ``docs/directory-sync.md``), so this also
checks that nothing of one job's values leaks into the next."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from hatidata_auth.extensions import db
from hatidata_auth.models import Organization, WebhookEvent, utcnow
from hatidata_auth.models.inbox import INTERNAL_SOURCE, REVOKING_NOTE
from hatidata_auth.services import fanout_jobs
from hatidata_auth.services.fanout_jobs import JOB_ID_PREFIX, insert_job
from tests.support.wakes import inbox_listener

JOBS = st.lists(st.fixed_dictionaries({
    "revokes": st.booleans(),
    "key": st.text(alphabet="abc:/0123456789", min_size=1, max_size=20)
    | st.text(alphabet="ab", min_size=150, max_size=200),  # around the 160 characters kept
    "later_by": st.none() | st.integers(min_value=-3600, max_value=0) | st.integers(min_value=60, max_value=3600),
    "tenant": st.sampled_from(["org_job_insert_a", "org_job_insert_b"]),
    "traced": st.booleans(),
    "data": st.dictionaries(st.sampled_from(["session_id", "user_id", "n"]), st.integers() | st.text(max_size=8)),
}), min_size=1, max_size=4)


def _organization(db_session: Any, workos_id: str = "org_job_insert") -> str:
    found = db_session.scalar(select(Organization.id).where(Organization.workos_organization_id == workos_id))
    if found is None:
        org = Organization(workos_organization_id=workos_id, name="Jobs")
        db_session.add(org)
        db_session.commit()
        found = org.id
    return str(found)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(jobs=JOBS)
def test_each_job_is_stored_with_its_own_values(db_session: Any, jobs: list[dict[str, Any]]) -> None:
    """Each job's values, the trace it continues included (traces are off in tests: each job here is given a trace
    context of its own, or none), and no other job's."""
    tenants = {job["tenant"]: _organization(db_session, job["tenant"]) for job in jobs}
    before = utcnow()
    ids, traces = [], []
    for n, job in enumerate(jobs):
        not_before = None if job["later_by"] is None else before + timedelta(seconds=job["later_by"])
        trace = {"traceparent": f"00-{n + 1:032x}-{n + 1:016x}-01"} if job["traced"] else None
        traces.append(trace)
        with mock.patch.object(fanout_jobs, "carrier", lambda trace=trace: trace):
            ids.append(insert_job(db_session, f"hatidata.test_job_{n}", organization_id=tenants[job["tenant"]],
                                  data=job["data"], entity_key=job["key"], revokes=job["revokes"],
                                  not_before=not_before))
    db_session.commit()
    assert len(set(ids)) == len(ids)
    assert all(i.startswith(JOB_ID_PREFIX) for i in ids)
    stored = db_session.scalars(select(WebhookEvent).where(WebhookEvent.event_id.in_(ids)))
    rows = {row.event_id: row for row in stored}
    for n, (event_id, job) in enumerate(zip(ids, jobs, strict=True)):
        row = rows[event_id]
        assert (row.event_type, row.organization_id, row.entity_key, row.revokes, row.trace_context) == (
            f"hatidata.test_job_{n}", tenants[job["tenant"]], job["key"][:160], job["revokes"], traces[n])
        assert (row.source, row.status, row.attempts, row.last_error) == (INTERNAL_SOURCE, "received", 0, None)
        assert row.payload == {"id": event_id, "event": f"hatidata.test_job_{n}",
                               "created_at": row.payload["created_at"], "data": job["data"]}
        assert row.received_at >= before
        later = job["later_by"] is not None and job["later_by"] > 0
        assert (row.event_created_at > row.received_at) == later, (job, row.event_created_at, row.received_at)
        assert row.event_created_at.isoformat() == row.payload["created_at"]


@pytest.mark.postgres
@pytest.mark.parametrize("revokes", [True, False])
def test_a_job_is_announced_once_at_its_commit_with_the_note_of_its_kind(app: Flask, db_session: Any,
                                                                         revokes: bool) -> None:
    organization_id = _organization(db_session)
    with inbox_listener(app) as listener:
        insert_job(db_session, "hatidata.test_job", organization_id=organization_id, data={}, entity_key="k",
                   revokes=revokes)
        db_session.flush()
        assert [n.payload for n in listener.notifies(timeout=0.3)] == []  # not before the commit
        db_session.commit()
        heard = [n.payload for n in listener.notifies(timeout=0.5)]
        insert_job(db.session(), "hatidata.test_job", organization_id=organization_id, data={}, entity_key="k",
                   revokes=revokes)
        db.session.rollback()
        heard_after_rollback = [n.payload for n in listener.notifies(timeout=0.3)]
    assert heard == [REVOKING_NOTE if revokes else ""]
    assert heard_after_rollback == []
