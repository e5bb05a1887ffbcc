"""A role an admin changes here (``PATCH /api/v1/members/{id}``) is changed at WorkOS too, once committed, so
WorkOS's later word carries it. Break-it reviews: a demoted admin stayed an admin at WorkOS, and WorkOS's next,
unrelated word on the membership (a deactivation and reactivation, newer than the demotion) gave the admin role
back here; and with the WorkOS write inside the transaction, a change rolled back after it (a lock conflict) landed
later through WorkOS's echo, past the last-admin guard. WorkOS refusing, not holding the membership or
unavailable leaves the change here as it is (logged)."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy import select, update

from hatidata_auth.causes import Actor, Cause
from hatidata_auth.extensions import db
from hatidata_auth.models import AuditEvent, Membership, WebhookEvent, utcnow
from hatidata_auth.roles import permissions_for
from hatidata_auth.services import api_keys as key_service
from hatidata_auth.services import inbox_worker, workos_role_push
from tests.auth_support import add_fault
from tests.support.membership_word import WorkOS, acme_org, membership_of, prepared_acme, sign_in
from tests.support.servers import EmulatorControl
from tests.test_membership_rows_race import _store_and_drain


@pytest.fixture
def acme(app: Flask, emulator_control: EmulatorControl) -> tuple[Flask, EmulatorControl]:
    return prepared_acme(app, emulator_control, with_admin=True)


def _admin_key(app: Flask, *, other_than: str | None = None) -> dict[str, str]:
    """A bearer key of an admin of Acme, not of membership *other_than* (a key of a member being demoted is
    rightly refused once the demotion lands)."""
    with app.app_context():
        org = acme_org(db.session)
        admins = select(Membership).where(Membership.organization_id == org.id, Membership.role == "admin")
        if other_than is not None:
            admins = admins.where(Membership.id != other_than)
        admin = db.session.scalars(admins.order_by(Membership.created_at)).first()
        assert admin is not None
        created = key_service.create_key(db.session(), organization_id=org.id, owner_user_id=admin.user_id,
                                         name="it", scopes=sorted(permissions_for("admin")),
                                         cause=Cause.by(Actor("user", admin.user_id)))
        db.session.commit()
        db.session.remove()
    return {"Authorization": f"Bearer {created.secret}"}


def _patch(app: Flask, m: Membership, role: str) -> int:
    response = app.test_client().patch(f"/api/v1/members/{m.id}", json={"role": role}, headers=_admin_key(app))
    db.session.remove()
    return response.status_code


@pytest.mark.parametrize("to", ["developer", "viewer"])
def test_a_demotion_here_is_the_role_workos_carries_next(acme: tuple[Flask, EmulatorControl], to: str) -> None:
    app, control = acme
    person = WorkOS(control, app)
    first = person.add("admin")
    m = sign_in(app, person, "admin")
    assert (m.role, m.workos_membership_id) == ("admin", first)
    assert _patch(app, m, to) == 200
    person.set_status(first, "deactivate")
    person.set_status(first, "reactivate")
    assert person.events[-1]["data"]["role"]["slug"] == to  # WorkOS carries the role set here
    _store_and_drain(app, person.events)
    after = membership_of(app, person)
    assert after is not None
    assert (after.status, after.role) == ("active", to), after.details


def _at_workos(app: Flask, workos_membership_id: str) -> str:
    client = app.extensions["hatidata_workos"].client
    return str(client.organization_membership.get_organization_membership(workos_membership_id).role.slug)


def _jobs(app: Flask) -> list[WebhookEvent]:
    with app.app_context():
        jobs = list(db.session.scalars(select(WebhookEvent).where(WebhookEvent.event_type == workos_role_push.JOB_TYPE)
                                       .order_by(WebhookEvent.id)))
        db.session.expunge_all()
        db.session.remove()
    return jobs


def _workos_back(app: Flask, control: EmulatorControl) -> None:
    """WorkOS answers again, and the jobs that waited out the outage are due (as ``RETRY_DELAY`` later)."""
    control.ctl("DELETE", "/faults")
    _jobs_due(app)


def _jobs_due(app: Flask) -> None:
    """The role jobs waiting to be tried again are applied (as ``RETRY_DELAY`` later)."""
    with app.app_context():
        db.session.execute(update(WebhookEvent.__table__).where(
            WebhookEvent.event_type == workos_role_push.JOB_TYPE, WebhookEvent.status == "received").values(
            updated_at=utcnow() - inbox_worker.RETRY_DELAY - timedelta(seconds=1)))
        db.session.commit()
        db.session.remove()
    _store_and_drain(app, [])


def _set_at_workos(app: Flask) -> list[str]:
    with app.app_context():
        rows = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "membership.role_set_at_workos")
                                  .order_by(AuditEvent.created_at))
        outcomes = [str(e.details["workos"]) for e in rows]
        db.session.remove()
    return outcomes


def _outage(emulator: object, workos_membership_id: str) -> None:
    add_fault(emulator, "PUT", f"/user_management/organization_memberships/{workos_membership_id}", 503)


def _admin_during_outage(acme: tuple[Flask, EmulatorControl],
                         emulator: object) -> tuple[Flask, EmulatorControl, WorkOS, str, Membership]:
    """A person WorkOS made an admin, signed in; then WorkOS stops answering changes of that membership."""
    app, control = acme
    person = WorkOS(control, app)
    first = person.add("admin")
    m = sign_in(app, person, "admin")
    _outage(emulator, first)
    return app, control, person, first, m


def test_workos_unavailable_the_change_is_made_once_it_answers(acme: tuple[Flask, EmulatorControl],
                                                               emulator: object) -> None:
    app, control, person, first, m = _admin_during_outage(acme, emulator)
    assert _patch(app, m, "viewer") == 200
    assert _at_workos(app, first) == "admin"
    [job] = _jobs(app)
    assert (job.status, job.attempts) == ("received", 1)
    assert job.last_error
    held = membership_of(app, person)
    assert held is not None
    assert (held.status, held.role) == ("active", "viewer")
    assert workos_role_push.pending(held) is not None
    _workos_back(app, control)
    assert _at_workos(app, first) == "viewer"
    assert [j.status for j in _jobs(app)] == ["applied"]
    after = membership_of(app, person)
    assert after is not None
    assert workos_role_push.pending(after) is None
    assert _set_at_workos(app) == ["set"]


@pytest.mark.parametrize("delivered", ["during_the_outage", "after_the_change_at_workos"])
@pytest.mark.parametrize("word", ["deactivated_and_reactivated", "sign_in_with_a_new_token"])
def test_workos_word_before_it_took_the_change_keeps_the_role_decided(
        acme: tuple[Flask, EmulatorControl], emulator: object, word: str, delivered: str) -> None:
    """WorkOS's word made while it did not hold the change yet carries the old role, with a version (or a token's
    ``iat``) newer than the decision here: delivered before or after WorkOS took the change, it keeps the role
    decided here (it gave a demoted admin the role back). Its status still applies. (A sign-in keeps a role an admin
    set here whatever its token claims: ``sign_in_membership._kept``.)"""
    app, control, person, first, m = _admin_during_outage(acme, emulator)
    assert _patch(app, m, "viewer") == 200
    time.sleep(0.01)  # WorkOS's word below is newer than the decision by any clock
    issued = time.time() + 1
    if word == "deactivated_and_reactivated":
        person.set_status(first, "deactivate")
        person.set_status(first, "reactivate")
        assert person.events[-1]["data"]["role"]["slug"] == "admin"
    if delivered == "after_the_change_at_workos":
        _workos_back(app, control)
    if word == "deactivated_and_reactivated":
        _store_and_drain(app, person.events)
    else:
        sign_in(app, person, "admin", issued_at=issued)
    held = membership_of(app, person)
    assert held is not None
    assert (held.status, held.role) == ("active", "viewer"), held.details
    if delivered == "during_the_outage":
        _workos_back(app, control)
    assert _at_workos(app, first) == "viewer"
    person.set_status(first, "deactivate")  # WorkOS's next word carries the role decided here
    person.set_status(first, "reactivate")
    _store_and_drain(app, person.events[-2:])
    after = membership_of(app, person)
    assert after is not None
    assert (after.status, after.role) == ("active", "viewer")


def test_a_deletion_at_workos_applies_while_the_change_waits(acme: tuple[Flask, EmulatorControl],
                                                             emulator: object) -> None:
    """Taking access away is never held back: WorkOS deleting the membership deprovisions it, and the job then has
    nothing to set (the mark is lifted, nothing is written at WorkOS)."""
    app, control, person, first, m = _admin_during_outage(acme, emulator)
    assert _patch(app, m, "developer") == 200
    person.remove(first)
    _store_and_drain(app, person.events)
    gone = membership_of(app, person)
    assert gone is not None
    assert gone.status == "deprovisioned"
    _workos_back(app, control)
    assert [j.status for j in _jobs(app)] == ["ignored"]
    after = membership_of(app, person)
    assert after is not None
    assert workos_role_push.pending(after) is None
    assert after.status == "deprovisioned"
    assert _set_at_workos(app) == []


def test_the_latest_change_here_is_the_one_made_at_workos(acme: tuple[Flask, EmulatorControl],
                                                          emulator: object) -> None:
    app, control, _person, first, m = _admin_during_outage(acme, emulator)
    assert _patch(app, m, "viewer") == 200
    assert _patch(app, m, "developer") == 200
    _workos_back(app, control)
    assert _at_workos(app, first) == "developer"
    assert [j.status for j in _jobs(app)] == ["ignored", "applied"]
    assert _set_at_workos(app) == ["set"]


def test_workos_refusing_lifts_the_mark(acme: tuple[Flask, EmulatorControl], emulator: object) -> None:
    """WorkOS refusing (not a transient failure) is audited as failed; the mark is lifted, so WorkOS's newer word
    decides as before."""
    app, control = acme
    person = WorkOS(control, app)
    first = person.add("admin")
    m = sign_in(app, person, "admin")
    add_fault(emulator, "PUT", f"/user_management/organization_memberships/{first}", 422, count=1)
    assert _patch(app, m, "viewer") == 200
    assert _at_workos(app, first) == "admin"
    assert [j.status for j in _jobs(app)] == ["applied"]
    after = membership_of(app, person)
    assert after is not None
    assert workos_role_push.pending(after) is None
    assert after.role == "viewer"
    assert [o.split(":")[0] for o in _set_at_workos(app)] == ["failed"]


def test_a_change_rolled_back_is_not_made_at_workos(acme: tuple[Flask, EmulatorControl], emulator: object) -> None:
    """The service writes nothing at WorkOS: a change rolled back (a lock conflict, a failed commit) leaves WorkOS
    as it was, so no echo of it lands here later."""
    from hatidata_auth.services import tenant_admin

    app, control = acme
    person = WorkOS(control, app)
    first = person.add("admin")
    m = sign_in(app, person, "admin")
    with app.app_context():
        tenant_admin.change_member_role(db.session(), app.extensions["hatidata_workos"].client,
                                        organization_id=m.organization_id, membership_id=m.id, role="viewer",
                                        cause=Cause.by(Actor("user", "usr_it", "it@acme.test")))
        db.session.rollback()
        db.session.remove()
    at_workos = app.extensions["hatidata_workos"].client.organization_membership.get_organization_membership(first)
    assert at_workos.role.slug == "admin"
