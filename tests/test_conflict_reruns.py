"""Write routes run again when the database rolls their transaction back to break a lock conflict
(``hatidata_auth.conflict_reruns``): an admin's change is never a 503 because it crossed an applier's batch.

Every write route is checked for the rerun, the rerun itself on both databases with a conflict raised by the view
(the error PostgreSQL's driver raises), and on PostgreSQL the real crossing of each admin write that holds the
organization and then a member's key (found by a break-it review of issue #14's work): an applier's batch holds the
member's key from its claim, then shares the organization's lock the admin holds. The admin waited for the key
until PostgreSQL rolled it back; now it never waits: it runs again after a pause (``db_conflicts.KeyHeld``), and is
answered 200 once the applier has committed, or 503 when the key stays held past its pauses. A mapping edit no
longer waits for a member's key there (it queues the recompute instead): ``tests/test_mapping_edit_member_keys.py``."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg.errors
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError, OperationalError

from hatidata_auth.conflict_reruns import rerun_on_conflict, reruns_on_conflict
from hatidata_auth.extensions import db
from hatidata_auth.models import DirectoryUser, Membership, Organization
from hatidata_auth.services import db_conflicts
from hatidata_auth.services.db_conflicts import ATTEMPTS
from tests.api_support import Tenant, headers_for, make_tenant

WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
NOT_RERUN = {
    "webhooks.workos_webhook": "acknowledges by storing the event first; the appliers run it again",
    "hatidata_auth.logout": "a sign-in route: it asks WorkOS to end the session",
    "hatidata_auth.switch_organization": "a sign-in route: it spends the session's refresh token at WorkOS",
}


def test_every_write_route_runs_again_on_a_conflict(app: Flask) -> None:
    writes = {rule.endpoint for rule in app.url_map.iter_rules() if rule.methods and rule.methods & WRITE_METHODS}
    assert writes >= set(NOT_RERUN)
    missing = sorted(e for e in writes - set(NOT_RERUN) if not reruns_on_conflict(app.view_functions[e]))
    assert not missing, f"write routes that answer 503 to a lock conflict: {missing}"
    assert not [e for e in NOT_RERUN if reruns_on_conflict(app.view_functions[e])]


def _conflict(sqlstate_error: type[Exception]) -> OperationalError:
    return OperationalError("UPDATE organizations ...", {}, sqlstate_error("the database broke a conflict"))


@pytest.fixture
def counted(app: Flask) -> tuple[FlaskClient, list[str], Callable[[list[Exception]], None]]:
    """A write route that raises the errors it is given, one per run, then answers; and the runs it saw."""
    runs: list[str] = []
    errors: list[Exception] = []

    def view() -> Any:
        runs.append("run")
        if errors:
            raise errors.pop(0)
        return {"ok": True}

    rerun = rerun_on_conflict(view)
    app.extensions["csrf"].exempt(rerun)  # a bare route: no browser session to forge
    app.add_url_rule("/test-only/conflicts", "test_only_conflicts", rerun, methods=["GET", "POST"])
    return app.test_client(), runs, errors.extend


@pytest.mark.parametrize("error", [psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure])
def test_a_write_that_loses_a_conflict_runs_again(counted: Any, error: type[Exception]) -> None:
    client, runs, fail = counted
    fail([_conflict(error)])
    response = client.post("/test-only/conflicts")
    assert (response.status_code, response.get_json(), len(runs)) == (200, {"ok": True}, 2)


def test_a_write_that_keeps_losing_answers_503_after_the_last_attempt(counted: Any,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    client, runs, fail = counted
    fail([_conflict(psycopg.errors.DeadlockDetected) for _ in range(ATTEMPTS + 1)])
    with caplog.at_level(logging.WARNING, "hatidata_auth.services.db_conflicts"):
        response = client.post("/test-only/conflicts")
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert len(runs) == ATTEMPTS
    assert sum("POST /test-only/conflicts rolled back by the database" in r.getMessage()
               for r in caplog.records) == ATTEMPTS - 1


def test_reads_and_other_errors_are_not_run_again(counted: Any) -> None:
    client, runs, fail = counted
    fail([_conflict(psycopg.errors.DeadlockDetected)])
    assert client.get("/test-only/conflicts").status_code == 503
    assert len(runs) == 1
    fail([IntegrityError("INSERT ...", {}, psycopg.errors.UniqueViolation("duplicate key"))])
    with pytest.raises(IntegrityError):  # TESTING propagates what no handler answers: the view ran once
        client.post("/test-only/conflicts")
    assert len(runs) == 2


KEY = "directory_user_RERUN"


def _linked(app: Flask, tenant: Tenant) -> None:
    """The tenant's manual member and its directory member hang on directory users (their keys are what an applier's
    claim holds); the directory member's is live, so a mapping edit recomputes it."""
    with app.app_context():
        victim = db.session.get(Membership, tenant.ids["member"])
        synced = db.session.get(Membership, tenant.ids["directory_member"])
        org = db.session.get(Organization, tenant.id)
        assert victim is not None
        assert synced is not None
        assert org is not None
        victim.directory_user_id = f"{KEY}_V"
        synced.directory_user_id = f"{KEY}_D"
        db.session.add(DirectoryUser(organization_id=org.id, workos_id=f"{KEY}_D", directory_id=org.directory_id,
                                     email=f"synced@{org.name.lower()}.test", state="active", attributes={},
                                     user_id=synced.user_id))
        db.session.commit()
        db.session.remove()


CROSSINGS = {
    "remove_member": ("DELETE", "/api/v1/members/{member}", None, f"{KEY}_V"),
    "change_member_role": ("PATCH", "/api/v1/members/{member}", {"role": "developer"}, f"{KEY}_V"),
}


def _met_a_held_key(caplog: pytest.LogCaptureFixture) -> bool:
    return any(db_conflicts.KEY_HELD in r.getMessage() for r in caplog.records)


def _until(done: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "not seen in time"
        time.sleep(0.01)


@pytest.mark.postgres
@pytest.mark.parametrize("name", sorted(CROSSINGS))
def test_an_admin_write_that_meets_a_key_an_applier_holds_runs_again_without_waiting(
        app: Flask, name: str, caplog: pytest.LogCaptureFixture) -> None:
    """The admin holds the organization's row and needs the member's key, which an applier's claim holds; the
    applier shares that row next. Before, the admin waited for the key and the two waited for each other until
    PostgreSQL rolled one back (a 503 after three tries under a storm). Now the admin gives up its transaction,
    pauses holding nothing, and runs again: the applier's share of the row is granted, and once it commits the admin
    is answered 200, with no deadlock at all."""
    method, path, body, key = CROSSINGS[name]
    tenant = make_tenant(app, "Rerun")
    _linked(app, tenant)
    answers: list[Any] = []
    with app.app_context():
        applier = db.engine.connect()
        applier.execute(text("SET LOCAL lock_timeout = '5s'"))  # waiting on the admin would fail, not hang
        applier.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": f"user:{key}"})

        def admin() -> None:
            answers.append(app.test_client().open(path.format(member=tenant.ids["member"]), method=method, json=body,
                                       headers=headers_for(tenant, "admin")))

        thread = threading.Thread(target=admin)
        with caplog.at_level(logging.INFO, "hatidata_auth.services.db_conflicts"):
            thread.start()
            try:
                _until(lambda: _met_a_held_key(caplog))  # the admin met the key, gave up, and pauses
                applier.execute(select(Organization.id).where(Organization.id == tenant.id).with_for_update(read=True))
            finally:
                applier.commit()
                applier.close()
                thread.join(30)
    assert answers
    assert answers[0].status_code == 200, answers[0].get_json()
    assert not [r for r in caplog.records if "rolled back by the database" in r.getMessage()]


@pytest.mark.postgres
def test_an_admin_write_whose_key_stays_held_answers_503_after_its_pauses(app: Flask) -> None:
    method, path, body, key = CROSSINGS["remove_member"]
    tenant = make_tenant(app, "Rerun Held")
    _linked(app, tenant)
    with app.app_context():
        applier = db.engine.connect()
        applier.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": f"user:{key}"})
        try:
            started = time.monotonic()
            response = app.test_client().open(path.format(member=tenant.ids["member"]), method=method, json=body,
                                              headers=headers_for(tenant, "admin"))
            took = time.monotonic() - started
        finally:
            applier.rollback()
            applier.close()
    assert response.status_code == 503, response.get_json()
    assert response.headers["Retry-After"]
    assert response.get_json()["error"]["code"] == "service_unavailable"
    assert sum(db_conflicts.KEY_HELD_PAUSES) / 2 <= took < 30
    with app.app_context():  # nothing of the attempts was kept: the member is still active
        assert db.session.get(Membership, tenant.ids["member"]).status == "active"  # type: ignore[union-attr]
        db.session.remove()
