"""Appending to an organization's audit chain is serialized on every backend, across PROCESSES.

Each writer is a separate process (spawned, with its own engine and connections, like a gunicorn worker)
appending to the same organizations at the same time; on SQLite (which ignores ``FOR UPDATE``) and on
PostgreSQL alike, every transaction commits and every chain stays gap-free and unforked.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine

from hatidata_auth.models import Organization
from hatidata_auth.services import audit
from hatidata_auth.unit_of_work import AppSession

WRITERS = 4


def append_events(url: str, organization_ids: list[str], writer: int, plan: list[int], start_at: float) -> int:
    """In a writer process: one transaction per entry of *plan*, each appending that many events to every
    organization of *organization_ids* (several chains per transaction, as a bulk change does)."""
    from hatidata_auth.causes import Actor, Cause
    from hatidata_auth.services import audit as audit_service

    engine = create_engine(url)
    written = 0
    try:
        time.sleep(max(0.0, start_at - time.time()))  # all writers start together
        with AppSession(engine) as session:
            for txn, size in enumerate(plan):
                for organization_id in organization_ids:
                    for event in range(size):
                        audit_service.record(session, action="test.concurrent",
                                             cause=Cause.by(Actor.system(f"w{writer}")),
                                             organization_id=organization_id,
                                             details={"writer": writer, "txn": txn, "event": event})
                        written += 1
                session.commit()
    finally:
        engine.dispose()
    return written


@pytest.fixture(scope="module")
def writers() -> Iterator[ProcessPoolExecutor]:
    """Writer processes, started once (spawned: nothing of this process's state is inherited)."""
    with ProcessPoolExecutor(WRITERS, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(abs, range(WRITERS)))  # warm: every worker is up before a test times anything
        yield pool


def _organizations(db_session: Any, count: int) -> list[str]:
    orgs = [Organization(name=f"Chain {i}", domains=[f"chain{i}-{time.monotonic_ns()}.example"])
            for i in range(count)]
    db_session.add_all(orgs)
    db_session.commit()
    return [org.id for org in orgs]


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plans=st.lists(st.lists(st.integers(1, 3), min_size=3, max_size=8), min_size=2, max_size=WRITERS),
       chains=st.integers(1, 2))
def test_appends_from_concurrent_processes_form_one_unbroken_chain(
    database_url: str, db_session: Any, writers: ProcessPoolExecutor, plans: list[list[int]], chains: int,
) -> None:
    organization_ids = _organizations(db_session, chains)
    db_session.remove()
    start_at = time.time() + 0.3
    futures = [writers.submit(append_events, database_url, organization_ids, n, plan, start_at)
               for n, plan in enumerate(plans)]
    written = sum(f.result(timeout=120) for f in futures)  # an IntegrityError on seq would surface here
    assert written == chains * sum(sum(plan) for plan in plans)
    for organization_id in organization_ids:
        report = audit.verify_organization(db_session, organization_id)
        assert report.ok, report
        assert report.checked == sum(sum(plan) for plan in plans)
