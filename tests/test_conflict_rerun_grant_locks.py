"""A rerun's re-check of its caller (``caller_grants.grant_now``) adds no deadlock and refuses no caller whose grant
did not change, PostgreSQL only (SQLite never rolls a writer back). From a break-it review of its first locks: the
organization's row ``FOR SHARE`` made concurrent reruns in one organization deadlock upgrading it (2 of 3 answered
503), joined an applier's batch sharing it and then waited for it while it wrote the caller's membership, and a
deadlock met by the re-check's own locks was never run again.

Each test makes the first attempt of PATCH /api/v1/members/<id> fail with the deadlock PostgreSQL's driver raises
(as tests/test_conflict_rerun_caller.py does), while another transaction (a "winner", doing what an applier's batch
or another rerun does) runs for real. No grant changes in any test: every answer should be 200."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg.errors
import pytest
from flask import Flask, g, has_request_context
from sqlalchemy import event, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import ORMExecuteState, Session

from hatidata_auth import lasting_effects
from hatidata_auth.extensions import db
from hatidata_auth.models import Membership, Organization, utcnow
from tests.api_support import Tenant, headers_for, make_tenant

pytestmark = pytest.mark.postgres


@pytest.fixture
def first_attempt_loses(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Every rerun view's first ORM statement raises a (fake) deadlock, once per request; before raising it calls
    ``state["before_raise"]`` (if set) once, across all requests."""
    state: dict[str, Any] = {"lock": threading.Lock(), "before_raise": None}
    mark = lasting_effects.mark

    def marked() -> lasting_effects.Mark:
        g.review_started = True
        return mark()

    def first_statement(_s: ORMExecuteState) -> None:
        if has_request_context() and g.get("review_started") and not g.get("review_raised"):
            g.review_raised = True
            with state["lock"]:
                hook, state["before_raise"] = state["before_raise"], None
            if hook is not None:
                hook()
            raise OperationalError("SELECT", {}, psycopg.errors.DeadlockDetected("fake: first attempt"))

    monkeypatch.setattr(lasting_effects, "mark", marked)
    event.listen(Session, "do_orm_execute", first_statement)
    yield state
    event.remove(Session, "do_orm_execute", first_statement)


def _in_thread(app: Flask, work: Callable[[Session], None], errors: list[str]) -> threading.Thread:
    def run() -> None:
        with app.app_context():
            s = db.session()
            try:
                work(s)
                s.commit()
            except Exception as exc:  # noqa: BLE001 - recorded for the assertion
                errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
                s.rollback()
            finally:
                db.session.remove()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _org_share(s: Session, org_id: str) -> None:
    # what an applier's batch takes for every directory event but a deletion (event_source._organization_statement)
    s.execute(select(Organization).where(Organization.id == org_id).with_for_update(read=True))


def _touch_membership(s: Session, tenant: Tenant, role: str) -> None:
    # a directory event writing the caller's membership without changing its grant
    s.execute(update(Membership).where(Membership.id == tenant.members[role]).values(updated_at=utcnow()))


def test_a_rerun_beside_an_applier_sharing_the_organization_then_writing_the_callers_membership(
        app: Flask, client: Any, first_attempt_loses: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    """Rerun: org FOR SHARE (grant_now) ... org FOR UPDATE (lock_organization) waits for the applier's share; the
    applier then writes the caller's membership, which grant_now holds FOR SHARE: a new deadlock."""
    tenant = make_tenant(app, "Shareco")
    errors: list[str] = []
    threads: list[threading.Thread] = []
    started = threading.Event()

    def applier(s: Session) -> None:
        _org_share(s, tenant.id)
        started.set()
        time.sleep(0.5)  # the loser's rerun takes its FOR SHARE locks meanwhile
        _touch_membership(s, tenant, "admin")

    first_attempt_loses["before_raise"] = lambda: (threads.append(_in_thread(app, applier, errors)),
                                                   started.wait(5))
    caplog.set_level(logging.WARNING, logger="hatidata_auth.services.db_conflicts")
    answer = client.patch(f"/api/v1/members/{tenant.members['viewer']}", json={"role": "developer"},
                          headers=headers_for(tenant, "admin"))
    for t in threads:
        t.join(10)
    attempts = [r.getMessage() for r in caplog.records if "rolled back by the database" in r.getMessage()]
    assert answer.status_code == 200, answer.get_json()
    assert not errors, "the applier was the deadlock's victim"
    assert len(attempts) == 1, f"a real deadlock after the rerun: {attempts}"


def test_a_rerun_beside_a_batch_writing_the_callers_membership_then_the_organization(
        app: Flask, client: Any, first_attempt_loses: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    """An applier batch: a directory event writes the caller's membership (org shared), a later event of the same
    batch writes the organization's row (organization.updated / connection.*). With the organization's row shared,
    grant_now waited for the membership while the batch waited for the organization: a deadlock inside the
    re-check, which was not run again (503). Now the re-check waits for the batch on the organization's row."""
    tenant = make_tenant(app, "Insideco")
    errors: list[str] = []
    threads: list[threading.Thread] = []
    written = threading.Event()

    def applier(s: Session) -> None:
        _org_share(s, tenant.id)
        _touch_membership(s, tenant, "admin")
        written.set()
        time.sleep(0.5)  # grant_now: org FOR SHARE granted, membership FOR SHARE waits for us
        s.execute(update(Organization).where(Organization.id == tenant.id).values(workos_updated_at=utcnow()))

    first_attempt_loses["before_raise"] = lambda: (threads.append(_in_thread(app, applier, errors)),
                                                   written.wait(5))
    caplog.set_level(logging.WARNING)
    answer = client.patch(f"/api/v1/members/{tenant.members['viewer']}", json={"role": "developer"},
                          headers=headers_for(tenant, "admin"))
    for t in threads:
        t.join(10)
    assert answer.status_code == 200, answer.get_json()


@pytest.mark.parametrize("callers", [2, 3])
def test_concurrent_reruns_in_one_organization_all_go_through(
        app: Flask, first_attempt_loses: dict[str, Any], callers: int, caplog: pytest.LogCaptureFixture) -> None:
    """Reruns that took the org FOR SHARE together (they waited for the same winner holding it FOR UPDATE) then
    each upgrade it to FOR UPDATE (lock_organization): a lock-upgrade deadlock among them."""
    tenant = make_tenant(app, "Manyco")
    targets = [tenant.members["viewer"], tenant.ids["member"], tenant.members["developer"]][:callers]
    errors: list[str] = []
    threads: list[threading.Thread] = []
    release = threading.Event()

    def winner(s: Session) -> None:  # e.g. an admin's mapping change holding the organization
        s.execute(select(Organization.id).where(Organization.id == tenant.id).with_for_update())
        release.wait(10)

    threads.append(_in_thread(app, winner, errors))
    time.sleep(0.3)
    answers: dict[str, int] = {}

    def call(target: str) -> None:
        first_attempt_loses["before_raise"] = None
        answers[target] = app.test_client().patch(f"/api/v1/members/{target}", json={"role": "admin"},
                                                  headers=headers_for(tenant, "admin")).status_code

    callers_t = [threading.Thread(target=call, args=(t,)) for t in targets]
    caplog.set_level(logging.WARNING)
    for t in callers_t:
        t.start()
    time.sleep(1.0)  # every rerun now waits in grant_now for the org's FOR SHARE
    release.set()
    for t in [*callers_t, *threads]:
        t.join(30)
    logs = [r.getMessage() for r in caplog.records if "rolled back by the database" in r.getMessage()]
    assert set(answers.values()) == {200}, answers
    assert sum("attempt 2 of 3" in m for m in logs) == callers, logs
    assert not any("attempt 3" in m for m in logs), logs
