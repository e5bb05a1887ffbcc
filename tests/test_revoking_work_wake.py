"""Work taking access away queued by any writer wakes the deprovisioning thread at its commit (issue #14): on
SQLite no ``NOTIFY`` exists, and a job queued outside a webhook's request (an admin's mapping edit, an applier's
batch) waited for the thread's poll (``inbox_runtime._wake_for_work_taking_access_away``). On PostgreSQL the job's
``NOTIFY`` wakes every process (``tests/test_job_insert.py``) and the commit wakes nobody more."""

from __future__ import annotations

import time
from typing import Any

from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from hatidata_auth import create_app, inbox_runtime
from hatidata_auth.causes import Cause
from hatidata_auth.extensions import db
from hatidata_auth.models import Organization, WebhookEvent
from hatidata_auth.services import fanout_jobs
from tests.support.wakes import Wakes

# A transaction: per job queued, whether it may take access away; then whether it commits, and whether the jobs
# were queued inside a savepoint released before the end.
TRANSACTIONS = st.lists(st.tuples(st.lists(st.booleans(), max_size=3), st.booleans(), st.booleans()),
                        min_size=1, max_size=4)


def _organization_id() -> str:
    found = db.session.scalar(select(Organization.id).where(Organization.workos_organization_id == "org_wake"))
    if found is None:
        org = Organization(workos_organization_id="org_wake", name="Wake")
        db.session.add(org)
        db.session.commit()
        found = org.id
    return found


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(transactions=TRANSACTIONS)
def test_a_commit_that_queued_work_taking_access_away_wakes_the_thread_once(
        app: Flask, transactions: list[tuple[list[bool], bool, bool]]) -> None:
    wakes = Wakes(running=True)
    app.extensions[inbox_runtime.EXTENSION] = wakes
    expected: list[bool] = []
    try:
        with app.app_context():
            organization_id = _organization_id()
            postgres = db.engine.dialect.name == "postgresql"
            for jobs, commits, nested in transactions:
                savepoint = db.session.begin_nested() if nested else None
                for revokes in jobs:
                    fanout_jobs.insert_job(db.session(), "hatidata.test_job", organization_id=organization_id,
                                           data={}, entity_key="k", revokes=revokes)
                if savepoint is not None:
                    savepoint.commit()
                    assert wakes.calls == expected  # a savepoint's release commits nothing
                if commits:
                    db.session.commit()
                    expected += [True] if any(jobs) and not postgres else []
                else:
                    db.session.rollback()
                assert wakes.calls == expected, (transactions, postgres)
                fanout_jobs.queued_revoking_job(db.session())  # a rolled-back transaction's mark goes too
    finally:
        del app.extensions[inbox_runtime.EXTENSION]


def test_an_admins_fan_out_is_applied_without_waiting_for_the_poll(app: Flask, app_config: dict[str, Any]) -> None:
    """A real pool whose poll is 30 s: only the wake at the commit (SQLite) or the ``NOTIFY`` (PostgreSQL) gets the
    job applied within 10 s."""
    running = create_app({**app_config, "HATIDATA_INBOX_APPLIERS": 1, "HATIDATA_INBOX_POLL_INTERVAL": 30})
    inbox_runtime.start(running)
    try:
        with running.app_context():
            job = fanout_jobs.Job(_organization_id(), "organization", "mapping_edited", Cause.system("test"))
            time.sleep(0.5)  # the thread waits in its poll (and on PostgreSQL listens) before the job is queued
            event_id = fanout_jobs.enqueue(db.session(), job)
            db.session.commit()
            deadline = time.monotonic() + 10
            status = "received"
            while status == "received" and time.monotonic() < deadline:
                time.sleep(0.05)
                status = db.session.scalar(select(WebhookEvent.status).where(WebhookEvent.event_id == event_id))
                db.session.rollback()
        assert status == "applied"
    finally:
        inbox_runtime.stop(running)
