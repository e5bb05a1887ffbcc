"""A role an admin changes here against WorkOS's word in every order (helper-143's review of the role push job).

- WorkOS's word made before WorkOS took the change, delivered late and out of order (a deactivation and a
  reactivation carrying the old role, the later one delivered first): the earlier one went through the late-word
  rule, which read neither the push's mark nor the decision's time, and gave a demoted admin the role back, here and
  then at WorkOS (the job sets the role the row holds). With and without an outage.
- The job's retries spent: the mark no longer holds WorkOS's word (it kept every later role change made at WorkOS
  off the row for ever); a replay of the job still sets the role.
- WorkOS's word made after WorkOS took the role, applied while the job had not lifted the mark yet (it raced the
  job): given when the mark is lifted (it was held, then lost).
- A member promoted, then removed here before WorkOS answered: nothing is set at WorkOS.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from hatidata_auth.causes import Actor, Cause
from hatidata_auth.extensions import db
from hatidata_auth.models import Membership
from hatidata_auth.services import inbox_replay, inbox_worker, tenant_admin, workos_role_push
from tests.auth_support import add_fault
from tests.support.membership_word import WorkOS, membership_of, prepared_acme, sign_in
from tests.support.servers import EmulatorControl
from tests.test_membership_rows_race import _store_and_drain
from tests.test_role_change_at_workos import (
    _admin_during_outage,
    _at_workos,
    _jobs,
    _jobs_due,
    _outage,
    _patch,
    _set_at_workos,
    _workos_back,
)


@pytest.fixture
def acme(app: Flask, emulator_control: EmulatorControl) -> tuple[Flask, EmulatorControl]:
    return prepared_acme(app, emulator_control, with_admin=True)


def _retry(app: Flask, times: int) -> None:
    """The appliers' next *times* tries of the pending role jobs (as ``RETRY_DELAY`` later), WorkOS as it is."""
    for _ in range(times):
        _jobs_due(app)


def _role(app: Flask, person: WorkOS) -> tuple[str, str | None]:
    m = membership_of(app, person)
    assert m is not None
    return str(m.status), m.role


@pytest.mark.parametrize("outage", ["none", "during", "over_before_delivery"])
def test_workos_word_before_it_took_the_change_delivered_in_reverse_order(
        acme: tuple[Flask, EmulatorControl], emulator: object, outage: str) -> None:
    app, control, person, first, m = _admin_during_outage(acme, emulator)
    if outage == "none":
        control.ctl("DELETE", "/faults")
        person.set_status(first, "deactivate")  # made before the decision, delivered after it
        person.set_status(first, "reactivate")
        time.sleep(0.01)
    assert _patch(app, m, "viewer") == 200
    if outage != "none":
        time.sleep(0.01)
        person.set_status(first, "deactivate")  # made while WorkOS did not have the change
        person.set_status(first, "reactivate")
    deactivated, reactivated = person.events[-2], person.events[-1]
    assert reactivated["data"]["role"]["slug"] == "admin"
    if outage == "over_before_delivery":
        _workos_back(app, control)
    _store_and_drain(app, [reactivated])
    assert _role(app, person) == ("active", "viewer")
    _store_and_drain(app, [deactivated])  # old news: the late-word rule
    assert _role(app, person) == ("active", "viewer")
    _workos_back(app, control)
    assert _role(app, person) == ("active", "viewer")
    assert _at_workos(app, first) == "viewer"


def test_spent_retries_stop_holding_workos_word_and_a_replay_sets_the_role(
        acme: tuple[Flask, EmulatorControl], emulator: object) -> None:
    app, control, person, first, m = _admin_during_outage(acme, emulator)
    assert _patch(app, m, "developer") == 200
    _retry(app, workos_role_push.ATTEMPTS - 1)  # the request's try was the first
    [job] = _jobs(app)
    assert job.status == "failed"
    assert [o.split(":")[0] for o in _set_at_workos(app)] == ["gave_up"]
    control.ctl("DELETE", "/faults")
    person.set_role(first, "viewer")  # WorkOS's later word, once it is back: it applies
    _store_and_drain(app, person.events[-1:])
    assert _role(app, person) == ("active", "viewer")
    person.set_role(first, "admin")
    _store_and_drain(app, person.events[-1:])
    with app.app_context():
        replayed = inbox_replay.replay(db.session(), app.extensions["hatidata_workos"].client, job.event_id)
        db.session.remove()
    assert replayed.status == "received"
    assert [j.attempts for j in _jobs(app)] == [0]  # a replay's tries start over (it had one only: helper-144)
    _store_and_drain(app, [])
    after = membership_of(app, person)
    assert after is not None
    assert workos_role_push.pending(after) is None
    assert (after.role, _at_workos(app, first)) == ("admin", "admin")  # the role the row holds when it runs


def _decided_while_workos_down(acme: tuple[Flask, EmulatorControl], emulator: object, row_knows: bool, held: str,
                               decided: str) -> tuple[Flask, EmulatorControl, WorkOS, str]:
    """A person WorkOS made *held*, signed in (the row knowing its WorkOS membership or, WorkOS not answering the
    sign-in's listing, none), then given *decided* here while WorkOS does not answer the job."""
    app, control = acme
    person = WorkOS(control, app)
    first = person.add(held)
    if not row_knows:
        add_fault(emulator, "GET", "/user_management/organization_memberships", 503, count=1)
    m = sign_in(app, person, held)
    assert (m.workos_membership_id is not None) == row_knows
    if row_knows:
        _outage(emulator, first)
    else:
        add_fault(emulator, "GET", "/user_management/organization_memberships", 503)
    assert _patch(app, m, decided) == 200
    return app, control, person, first


def apply_now(app: Flask, holder: Session, payload: dict[str, Any]) -> None:
    """Apply WorkOS's event *payload* in *holder*'s transaction."""
    inbox_worker.apply_event(holder, app.extensions["hatidata_workos"].client, payload, Cause.by(Actor.workos()))


def while_the_lift_waits(app: Flask, control: EmulatorControl, first: str, m: Membership,
                         during: Callable[[Session], None]) -> None:
    """WorkOS answers again; the job sets the role (``admin``) at WorkOS and waits for the row's lock, which
    *during* runs under (its session holds it), then commits; the job then lifts the mark. PostgreSQL only: on
    SQLite the holder's locking read takes the database's write turn, and the job's writes wait it out."""
    control.ctl("DELETE", "/faults")
    with app.app_context():
        holder = db.session()
        holder.execute(select(Membership.id).where(Membership.id == m.id).with_for_update())
        job = threading.Thread(target=_retry, args=(app, 1))
        job.start()
        deadline = time.monotonic() + 20
        while _at_workos(app, first) != "admin" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _at_workos(app, first) == "admin"  # set at WorkOS; the lift waits for the row
        during(holder)
        holder.commit()
        db.session.remove()
    job.join(30)


@pytest.mark.postgres  # the race needs the row lock that holds the lift; SQLite's writers take turns instead
def test_workos_word_racing_the_job_is_given_when_the_mark_is_lifted(acme: tuple[Flask, EmulatorControl],
                                                                      emulator: object) -> None:
    """The job has set the role at WorkOS and waits for the row's lock to lift the mark; meanwhile WorkOS's
    dashboard demotes the person and that word is applied (held by the mark): the lift gives it."""
    app, control, person, first, m = _admin_during_outage(acme, emulator)
    control.ctl("DELETE", "/faults")
    person.set_role(first, "viewer")
    _store_and_drain(app, person.events[-1:])
    _outage(emulator, first)
    assert _patch(app, m, "admin") == 200  # the job waits out the outage
    def dashboard(holder: Session) -> None:
        person.set_role(first, "viewer")  # WorkOS's dashboard, after WorkOS took the role
        apply_now(app, holder, person.events[-1])

    while_the_lift_waits(app, control, first, m, dashboard)
    after = membership_of(app, person)
    assert after is not None
    assert workos_role_push.pending(after) is None
    assert (after.role, _at_workos(app, first)) == ("viewer", "viewer")


def test_a_member_removed_before_workos_answered_is_not_given_the_role_there(
        acme: tuple[Flask, EmulatorControl], emulator: object) -> None:
    app, control, person, first = _decided_while_workos_down(acme, emulator, True, "viewer", "admin")
    m = membership_of(app, person)
    assert m is not None
    with app.app_context():
        tenant_admin.remove_member(db.session(), app.extensions["hatidata_workos"].client,
                                   organization_id=m.organization_id, membership_id=m.id,
                                   cause=Cause.by(Actor("user", "usr_it", "it@acme.test")))
        db.session.commit()
        db.session.remove()
    _workos_back(app, control)
    assert _role(app, person)[0] == "deprovisioned"
    assert _at_workos(app, first) == "viewer"
    assert [j.status for j in _jobs(app)] == ["ignored"]
    assert _set_at_workos(app) == []


def test_an_outage_longer_than_the_default_retries_still_holds(acme: tuple[Flask, EmulatorControl],
                                                              emulator: object) -> None:
    """Five tries (about 20 s of outage), then WorkOS's next word gave a demoted admin the role back (helper-144):
    the job is tried for about two minutes (``workos_role_push.ATTEMPTS``) and holds meanwhile."""
    app, control, person, first, m = _admin_during_outage(acme, emulator)
    assert _patch(app, m, "viewer") == 200
    _retry(app, inbox_worker.MAX_TRANSIENT_ATTEMPTS)
    assert [j.status for j in _jobs(app)] == ["received"]
    person.set_status(first, "deactivate")
    person.set_status(first, "reactivate")
    _store_and_drain(app, person.events[-2:])
    assert _role(app, person) == ("active", "viewer")
    _workos_back(app, control)
    assert (_role(app, person), _at_workos(app, first)) == (("active", "viewer"), "viewer")


@pytest.mark.parametrize("how", ["patch", "grant_admin"])
def test_our_clock_ahead_does_not_hold_workos_later_change(acme: tuple[Flask, EmulatorControl],
                                                          monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """Once WorkOS has the role, the decision's time is WorkOS's version: with our clock a minute ahead, WorkOS's
    demotion made after it was held (helper-144: the decision kept our later time)."""
    from hatidata_auth.models import utcnow
    from tests.support.membership_word import ACME
    from tests.test_audit_cli import _cli

    app, control = acme
    person = WorkOS(control, app)
    first = person.add("viewer")
    m = sign_in(app, person, "viewer")
    _store_and_drain(app, person.events)
    monkeypatch.setattr(tenant_admin, "utcnow", lambda: utcnow() + timedelta(seconds=60))
    if how == "patch":
        assert _patch(app, m, "admin") == 200
    else:
        assert _cli(app, "grant-admin", ACME, person.email).exit_code == 0
    assert _at_workos(app, first) == "admin"
    person.set_role(first, "viewer")  # WorkOS's later word
    _store_and_drain(app, person.events[-1:])
    assert _role(app, person) == ("active", "viewer")


def test_a_row_that_knows_no_workos_membership_is_set_at_workos_too(acme: tuple[Flask, EmulatorControl],
                                                                   emulator: object) -> None:
    """WorkOS did not answer the sign-in's listing, so the row knows no WorkOS membership: the demotion was
    changed here only, and WorkOS's next word gave the admin back (helper-144). The job finds the person's
    membership at WorkOS."""
    from tests.auth_support import add_fault

    app, control = acme
    person = WorkOS(control, app)
    first = person.add("admin")
    add_fault(emulator, "GET", "/user_management/organization_memberships", 503, count=1)
    m = sign_in(app, person, "admin")
    assert (m.role, m.workos_membership_id) == ("admin", None)
    assert _patch(app, m, "viewer") == 200
    assert _at_workos(app, first) == "viewer"
    person.set_status(first, "deactivate")
    person.set_status(first, "reactivate")
    _store_and_drain(app, person.events)
    assert _role(app, person) == ("active", "viewer")
