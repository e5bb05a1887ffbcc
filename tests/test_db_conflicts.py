"""Transactions the database rolls back to break a conflict are run again (``services.db_conflicts``): the helper
itself, and a sign-in whose transaction loses a deadlock (the real crossing is in
``tests/test_person_email_race.py::test_a_sign_in_that_loses_a_deadlock_runs_again``)."""
from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.exc import OperationalError

from hatidata_auth.extensions import db
from hatidata_auth.models import AuditEvent, AuthSession
from hatidata_auth.services import db_conflicts, login
from tests.auth_support import login as sign_in
from tests.auth_support import sync_organizations


class _Orig(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


def _rolled_back(sqlstate: str = "40P01") -> OperationalError:
    return OperationalError("SELECT 1", {}, _Orig(sqlstate))


class _Session:
    rollbacks = 0

    def rollback(self) -> None:
        self.rollbacks += 1


def _failing(times: int, error: Exception) -> Any:
    calls = {"n": 0}

    def work() -> str:
        calls["n"] += 1
        if calls["n"] <= times:
            raise error
        return "done"

    return work, calls


@pytest.mark.parametrize("sqlstate", sorted(db_conflicts.CONFLICTS))
def test_a_conflict_runs_the_work_again_after_a_rollback(sqlstate: str) -> None:
    session = _Session()
    work, calls = _failing(2, _rolled_back(sqlstate))
    assert db_conflicts.retrying(session, work, what="test") == "done"  # type: ignore[arg-type]
    assert calls["n"] == 3
    assert session.rollbacks == 2


def test_the_last_conflict_is_raised() -> None:
    session = _Session()
    work, calls = _failing(5, _rolled_back())
    with pytest.raises(OperationalError):
        db_conflicts.retrying(session, work, what="test", attempts=3)  # type: ignore[arg-type]
    assert calls["n"] == 3


def test_a_conflict_the_check_before_a_rerun_meets_uses_an_attempt_and_the_check_is_asked_again() -> None:
    """*lasted* takes locks (``caller_grants``), so it may be rolled back too: that conflict counts as an attempt,
    and the work runs only after *lasted* answered (before, its conflict was raised at once: a 503)."""
    session = _Session()
    work, calls = _failing(1, _rolled_back())
    checked, check = {"n": 0}, _failing(1, _rolled_back())[0]

    def lasted() -> tuple[str, ...]:
        checked["n"] += 1
        check()
        return ()

    assert db_conflicts.retrying(session, work, what="test", lasted=lasted) == "done"  # type: ignore[arg-type]
    assert (calls["n"], checked["n"], session.rollbacks) == (2, 2, 2)


def test_a_check_that_names_a_reason_raises_the_conflict_without_running_again() -> None:
    session = _Session()
    work, calls = _failing(1, _rolled_back())
    with pytest.raises(OperationalError):
        db_conflicts.retrying(session, work, what="test", lasted=lambda: ("it committed first",))  # type: ignore[arg-type]
    assert (calls["n"], session.rollbacks) == (1, 1)


def test_conflicts_in_the_check_are_bounded_by_the_attempts() -> None:
    session = _Session()
    work, calls = _failing(1, _rolled_back())
    always = _failing(99, _rolled_back())[0]
    with pytest.raises(OperationalError):
        db_conflicts.retrying(session, work, what="test", lasted=lambda: (always(), ())[1])  # type: ignore[arg-type]
    assert (calls["n"], session.rollbacks) == (1, 3)


@pytest.mark.parametrize("error", [_rolled_back("08006"), ValueError("not the database")], ids=["lost", "other"])
def test_any_other_error_is_raised_at_once(error: Exception) -> None:
    session = _Session()
    work, calls = _failing(1, error)
    with pytest.raises(type(error)):
        db_conflicts.retrying(session, work, what="test")  # type: ignore[arg-type]
    assert calls["n"] == 1
    assert session.rollbacks == 0


def test_a_sign_in_rolled_back_by_a_deadlock_signs_in(app: Flask, client: FlaskClient,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The callback's transaction is run again whole: one session, the login audited once."""
    sync_organizations(app)
    real = login.complete_login
    calls = {"n": 0}

    def loses_once(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        result = real(*args, **kwargs)
        if calls["n"] == 1:
            raise _rolled_back()  # as PostgreSQL does to the deadlock's loser, after the work was done
        return result

    monkeypatch.setattr(login, "complete_login", loses_once)
    response = sign_in(client, "dev@acme.test")
    assert response.status_code == 302
    assert calls["n"] == 2
    me = client.get("/api/v1/me")
    assert me.status_code == 200
    assert me.get_json()["email"] == "dev@acme.test"
    with app.app_context():
        assert db.session.query(AuthSession).count() == 1
        assert db.session.query(AuditEvent).filter_by(action="auth.login.succeeded").count() == 1
