"""Work taking access away queued by any writer wakes the deprovisioning thread at its commit (issue #14): on
SQLite no ``NOTIFY`` exists, and a job queued outside a webhook's request (an admin's mapping edit, an applier's
batch) waited for the thread's poll (``inbox_runtime._wake_for_work_taking_access_away``). On PostgreSQL the job's
``NOTIFY`` wakes every process (``tests/test_job_insert.py``) and the commit wakes nobody more."""

from __future__ import annotations

import time
from typing import Any
from unittest import mock

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

# A transaction: its steps, each a savepoint (released or rolled back) or the transaction itself queueing jobs (per
# job, whether it may take access away); then whether it commits.
STEPS = st.lists(st.tuples(st.sampled_from(["here", "released", "rolled_back"]), st.lists(st.booleans(), max_size=2)),
                 max_size=3)
TRANSACTIONS = st.lists(st.tuples(STEPS, st.booleans()), min_size=1, max_size=4)


def _organization_id() -> str:
    found = db.session.scalar(select(Organization.id).where(Organization.workos_organization_id == "org_wake"))
    if found is None:
        org = Organization(workos_organization_id="org_wake", name="Wake")
        db.session.add(org)
        db.session.commit()
        found = org.id
    return found


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(transactions=TRANSACTIONS)
def test_a_commit_that_queued_work_taking_access_away_wakes_the_thread_once(
        app: Flask, transactions: list[tuple[list[tuple[str, list[bool]]], bool]]) -> None:
    """One wake per commit of a transaction that queued such work, in it or in a savepoint (one rolled back since
    counts: a needless wake, an empty claim); none for a transaction rolled back, whose mark goes with it (the next
    commit does not wake for it); none on PostgreSQL."""
    wakes = Wakes(running=True)
    app.extensions[inbox_runtime.EXTENSION] = wakes
    expected: list[bool] = []
    try:
        with app.app_context():
            organization_id = _organization_id()
            postgres = db.engine.dialect.name == "postgresql"
            for steps, commits in transactions:
                for where, jobs in steps:
                    savepoint = None if where == "here" else db.session.begin_nested()
                    for revokes in jobs:
                        fanout_jobs.insert_job(db.session(), "hatidata.test_job", organization_id=organization_id,
                                               data={}, entity_key="k", revokes=revokes)
                    if savepoint is not None and where == "released":
                        savepoint.commit()
                    elif savepoint is not None:
                        savepoint.rollback()
                    assert wakes.calls == expected  # a savepoint's end commits nothing
                if commits:
                    db.session.commit()
                    queued = any(revokes for _where, jobs in steps for revokes in jobs)
                    expected += [True] if queued and not postgres else []
                else:
                    db.session.rollback()
                assert wakes.calls == expected, (transactions, postgres)
            db.session.commit()  # nothing queued since: no wake, whatever came before
            assert wakes.calls == expected
    finally:
        del app.extensions[inbox_runtime.EXTENSION]


def test_an_admins_fan_out_is_applied_without_waiting_for_the_poll(app: Flask, app_config: dict[str, Any]) -> None:
    """A real pool whose poll is 30 s: once each of its threads has found the inbox empty, only the wake at the
    commit (SQLite) or the ``NOTIFY`` (PostgreSQL) gets the job applied within 10 s."""
    running = create_app({**app_config, "HATIDATA_INBOX_APPLIERS": 1, "HATIDATA_INBOX_POLL_INTERVAL": 30})
    empty_claims: list[bool] = []
    claim = inbox_runtime.run_batch

    def counted(app: Flask, revoking_only: bool = False) -> int:
        claimed = claim(app, revoking_only)
        if not claimed:
            empty_claims.append(revoking_only)
        return claimed

    with mock.patch.object(inbox_runtime, "run_batch", counted):
        inbox_runtime.start(running)
        try:
            assert _applied_after_the_threads_went_idle(running, empty_claims) == "applied"
        finally:
            inbox_runtime.stop(running)


def _applied_after_the_threads_went_idle(running: Flask, empty_claims: list[bool]) -> str | None:
    with running.app_context():
        job = fanout_jobs.Job(_organization_id(), "organization", "mapping_edited", Cause.system("test"))
        deadline = time.monotonic() + 10
        while not (True in empty_claims and False in empty_claims) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert True in empty_claims
        assert False in empty_claims
        event_id = fanout_jobs.enqueue(db.session(), job)
        db.session.commit()
        deadline = time.monotonic() + 10
        status: str | None = "received"
        while status == "received" and time.monotonic() < deadline:
            time.sleep(0.05)
            status = db.session.scalar(select(WebhookEvent.status).where(WebhookEvent.event_id == event_id))
            db.session.rollback()
    return status
