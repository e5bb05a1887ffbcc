"""Write routes run again when the database rolls their transaction back to break a lock conflict
(``hatidata_auth.conflict_reruns``): an admin's change is never a 503 because it crossed an applier's batch.

Every write route is checked for the rerun, the rerun itself on both databases with a conflict raised by the view
(the error PostgreSQL's driver raises), and on PostgreSQL the real crossing of each admin write that holds the
organization and then a member's key (found by a break-it review of issue #14's work): an applier's batch holds the
member's key from its claim, then shares the organization's lock the admin holds. PostgreSQL rolls back the admin's
transaction, which waited first; it runs again and is answered 200. A mapping edit no longer waits for a member's
key there (it queues the recompute instead): ``tests/test_mapping_edit_member_keys.py``."""

from __future__ import annotations

import logging
import threading
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
from hatidata_auth.services.db_conflicts import ATTEMPTS
from tests.api_support import Tenant, headers_for, make_tenant
from tests.test_inserted_user_race import _wait_for_lock_wait

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


@pytest.mark.postgres
@pytest.mark.parametrize("name", sorted(CROSSINGS))
def test_an_admin_write_that_crosses_an_applier_runs_again(app: Flask, name: str,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    method, path, body, key = CROSSINGS[name]
    tenant = make_tenant(app, "Rerun")
    _linked(app, tenant)
    answers: list[Any] = []
    with app.app_context():
        applier = db.engine.connect()
        # The admin, who waits first, is the one PostgreSQL rolls back (its deadlock check runs first).
        applier.execute(text("SET LOCAL deadlock_timeout = '10s'"))
        applier.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": f"user:{key}"})

        def admin() -> None:
            answers.append(app.test_client().open(path.format(member=tenant.ids["member"]), method=method, json=body,
                                       headers=headers_for(tenant, "admin")))

        thread = threading.Thread(target=admin)
        with caplog.at_level(logging.WARNING, "hatidata_auth.services.db_conflicts"):
            thread.start()
            try:
                _wait_for_lock_wait("%", event="advisory")  # the admin holds the organization, waits for the key
                applier.execute(select(Organization.id).where(Organization.id == tenant.id).with_for_update(read=True))
            finally:
                applier.commit()
                applier.close()
                thread.join(30)
    assert answers
    assert answers[0].status_code == 200, answers[0].get_json()
    assert any("rolled back by the database (deadlock detected)" in r.getMessage() for r in caplog.records)
