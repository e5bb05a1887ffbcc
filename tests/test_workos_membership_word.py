"""WorkOS's present word on a membership at a sign-in (``services.workos_memberships``, ``docs/directory-sync.md``).

A person WorkOS removed and added again (a new membership id) who signed in before the re-add's ``created`` event
was applied was refused: the row held the deletion (a break-it review). A sign-in now asks WorkOS, before it takes
its locks, for the membership of a row WorkOS's events (or an admin's removal) left inactive, and applies it when it
is newer and nothing holds it (here: whatever subset of the history was applied, in any order). The rule: the
newest word on a membership decides, and nothing an event could not do. The admin's removal that holds against
WorkOS's word: tests/test_admin_removal_mark.py.

All through the real SDK against the emulator; each WorkOS change is made through WorkOS's API.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from hatidata_auth.causes import Actor, Cause
from hatidata_auth.extensions import db
from hatidata_auth.models import AuditEvent
from hatidata_auth.services import login, sign_in_membership, tenant_admin, workos_memberships
from hatidata_auth.services.login import LoginDenied
from tests.support.membership_word import (
    WorkOS,
    acme_org,
    membership_of,
    mirror,
    remove_here,
    sign_in,
)
from tests.support.servers import EmulatorControl, http_json
from tests.test_inbox_batch_scope import ACME, _prepare
from tests.test_membership_rows_race import _store_and_drain


@pytest.fixture
def acme(app: Flask, emulator_control: EmulatorControl) -> tuple[Flask, EmulatorControl]:
    _prepare(app)
    return app, emulator_control


# WorkOS's history: added (m1), removed, added again (m2, a new id), given another role. Event indexes below.
HISTORY_EVENTS = 4


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(applied=st.lists(st.sampled_from(range(HISTORY_EVENTS)), unique=True),
       late=st.permutations(range(HISTORY_EVENTS)))
@example(applied=[0, 1], late=[0, 1, 2, 3])  # the sequence: the deletion applied, the re-add not yet
@example(applied=[1], late=[3, 2, 1, 0])  # only the deletion (a tombstone), the rest late and backwards
@example(applied=[1, 3], late=[0, 1, 2, 3])  # the deletion and the re-add's update, not its created
def test_a_re_added_member_signs_in_whatever_events_were_applied(acme: tuple[Flask, EmulatorControl],
                                                                 applied: list[int], late: list[int]) -> None:
    """WorkOS removed the person and added them again. Whichever of its events were applied (in any order) when
    the person signs in, the sign-in is let in with WorkOS's present role, and the events delivered after it
    (again in any order, the applied ones repeated) leave the member active with that role."""
    app, control = acme
    person = WorkOS(control, app)
    first = person.add("viewer")
    person.remove(first)
    again = person.add("viewer")
    person.set_role(again, "developer")
    assert [e["event"].split(".")[1] for e in person.events] == ["created", "deleted", "created", "updated"]
    _store_and_drain(app, [person.events[i] for i in applied])

    m = sign_in(app, person, "developer")  # AuthKit's token carries the present role
    assert (m.status, m.role) == ("active", "developer"), applied

    _store_and_drain(app, [person.events[i] for i in late])
    m2 = membership_of(app, person)
    assert m2 is not None
    assert (m2.status, m2.role) == ("active", "developer"), (applied, late, m2.details)


def test_a_sign_in_after_a_removal_at_workos_stays_refused(acme: tuple[Flask, EmulatorControl]) -> None:
    """The deletion applied, WorkOS lists no active membership: refused (the catch-up asked, found nothing newer),
    and the refusal changed nothing."""
    app, control = acme
    person = WorkOS(control, app)
    first = person.add()
    person.remove(first)
    _store_and_drain(app, person.events)
    with pytest.raises(LoginDenied):
        sign_in(app, person, "viewer")
    m = membership_of(app, person)
    assert m is not None
    assert m.status == "deprovisioned"


def test_the_catch_up_is_audited_with_the_membership_workos_listed(acme: tuple[Flask, EmulatorControl]) -> None:
    """The reactivation a sign-in's catch-up makes is audited once (``membership.activated``), naming the WorkOS
    membership it applied."""
    app, control = acme
    person = WorkOS(control, app)
    person.remove(person.add())
    again = person.add("viewer")
    _store_and_drain(app, person.events[:2])
    m = sign_in(app, person, "viewer")
    with app.app_context():
        details = db.session.scalars(select(AuditEvent.details).where(
            AuditEvent.action == "membership.activated", AuditEvent.target_id == m.id)).all()
        db.session.remove()
    caught = [d for d in details if d["reason"] == "workos_membership_active"]
    assert [(d["workos_membership_id"], d["role"]) for d in caught] == [(again, "viewer")], details


def test_a_sign_in_elsewhere_catches_up_the_memberships_it_mirrors(acme: tuple[Flask, EmulatorControl]) -> None:
    """The sign-in's mirroring of the person's other memberships (``sign_in_membership.sync_user_memberships``)
    brings a row WorkOS's events left deprovisioned up to WorkOS's re-add, so the person can switch into it."""
    app, control = acme
    person = WorkOS(control, app)
    person.remove(person.add("viewer"))
    person.add("developer")
    _store_and_drain(app, person.events[:2])  # the deletion applied, the re-add not yet
    m = membership_of(app, person)
    assert m is not None
    assert m.status == "deprovisioned"
    mirror(app, person, m.user_id)
    m = membership_of(app, person)
    assert m is not None
    assert (m.status, m.role) == ("active", "developer")


def test_workos_failing_the_catch_up_refuses_the_sign_in(acme: tuple[Flask, EmulatorControl],
                                                         emulator: Any) -> None:
    """WorkOS failing the catch-up's listing: the sign-in is refused as before (``LoginDenied``: a 403, not an
    error), and the next sign-in, WorkOS answering, is let in."""
    from tests.auth_support import add_fault

    app, control = acme
    person = WorkOS(control, app)
    person.remove(person.add("viewer"))
    person.add("viewer")
    _store_and_drain(app, person.events[:2])
    add_fault(emulator, "GET", "/user_management/organization_memberships", 503, count=1)
    with pytest.raises(LoginDenied):
        sign_in(app, person, "viewer")
    m = sign_in(app, person, "viewer")
    assert m.status == "active"


def test_the_mirroring_gives_nothing_back_in_an_organization_no_longer_active(acme: tuple[Flask, EmulatorControl]
                                                                              ) -> None:
    """WorkOS lists the person's re-added membership, but the organization is deleted here: the mirroring changes
    nothing and audits nothing (it turned ``deprovisioned`` into ``inactive``, audited as a role change)."""
    app, control = acme
    person = WorkOS(control, app)
    person.remove(person.add("viewer"))
    person.add("viewer")
    _store_and_drain(app, person.events[:2])
    m = membership_of(app, person)
    assert m is not None
    with app.app_context():
        acme_org(db.session).status = "deleted"
        db.session.commit()
        before = db.session.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.target_id == m.id))
        sign_in_membership.sync_user_memberships(db.session(), app.extensions["hatidata_workos"].client,
                                                 user_id=m.user_id, workos_user_id=person.user_id)
        db.session.commit()
        after = db.session.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.target_id == m.id))
        db.session.remove()
    m = membership_of(app, person)
    assert m is not None
    assert (m.status, after) == ("deprovisioned", before)



# --- helper-126's repros: timestamps without a zone, drifting clocks, WorkOS slow under the sign-in's locks -------


@pytest.fixture
def zoneless(monkeypatch: pytest.MonkeyPatch) -> None:
    """WorkOS's listing answers timestamps without a zone (the SDK then gives naive datetimes)."""
    import dataclasses

    real = workos_memberships._active_memberships

    def naive(*args: Any, **kwargs: Any) -> list[Any]:
        return [dataclasses.replace(i, created_at=i.created_at.replace(tzinfo=None),
                                    updated_at=i.updated_at.replace(tzinfo=None)) for i in real(*args, **kwargs)]

    monkeypatch.setattr(workos_memberships, "_active_memberships", naive)


def test_a_listing_without_time_zones_is_read_as_utc(acme: tuple[Flask, EmulatorControl], zoneless: None) -> None:
    """A re-added member is let in and a removed one refused, whether or not WorkOS's timestamps carry a zone
    (they crashed the sign-in: naive against aware)."""
    app, control = acme
    person = WorkOS(control, app)
    person.remove(person.add("viewer"))
    person.add("viewer")
    _store_and_drain(app, person.events[:2])
    assert sign_in(app, person, "viewer").status == "active"
    remove_here(app, person)
    with pytest.raises(LoginDenied):
        sign_in(app, person, "viewer")


def _slow_listing(emulator: Any) -> None:
    """WorkOS's next answer to a list of memberships takes 3 s."""
    import httpx2

    answer = httpx2.post(f"{emulator.url}/_emulator/faults", json={
        "method": "GET", "path": "/user_management/organization_memberships", "delay_ms": 3000, "count": 1},
        headers={"Authorization": "Bearer sk_test_emulator"}, timeout=10)
    assert answer.status_code == 201, answer.text


@pytest.mark.postgres
def test_no_admin_change_waits_for_workos_behind_a_sign_in(acme: tuple[Flask, EmulatorControl], emulator: Any) -> None:
    """A removed person's sign-in asks WorkOS (slow here: 3 s) before it takes its locks: an admin's change of
    another member of the organization meanwhile does not wait for WorkOS (it waited for the sign-in's call)."""
    import threading


    app, control = acme
    removed = WorkOS(control, app)
    removed.add("viewer")
    sign_in(app, removed, "viewer")
    _store_and_drain(app, removed.events)
    remove_here(app, removed)
    other = WorkOS(control, app)
    other.add("viewer")
    target = sign_in(app, other, "viewer")
    _slow_listing(emulator)
    refused: list[Exception] = []

    def signing_in() -> None:
        try:
            sign_in(app, removed, "viewer")
        except LoginDenied as exc:
            refused.append(exc)

    thread = threading.Thread(target=signing_in)
    thread.start()
    time.sleep(1.0)  # the sign-in is waiting for WorkOS
    started = time.monotonic()
    with app.app_context():
        tenant_admin.change_member_role(db.session(), app.extensions["hatidata_workos"].client,
                                        organization_id=target.organization_id, membership_id=target.id,
                                        role="developer", cause=Cause.by(Actor("user", "usr_word_admin",
                                                                                "it@acme.test")))
        db.session.commit()
        db.session.remove()
    waited = time.monotonic() - started
    thread.join(30)
    assert len(refused) == 1
    assert waited < 1.0, waited


@pytest.mark.postgres
def test_a_first_sign_ins_listing_holds_no_write_of_its_organization(acme: tuple[Flask, EmulatorControl],
                                                                      emulator: Any) -> None:
    """A person's first sign-in into an organization not mirrored yet asks WorkOS (slow here: 3 s) before it
    writes the organization's mirror: another transaction mirroring it meanwhile (a second person's sign-in, the
    ``organization.created`` webhook) does not wait for WorkOS (it waited behind the uncommitted insert; a
    break-it review)."""
    import threading

    from hatidata_auth.services.organizations import ensure_organization
    from hatidata_auth.services.session_refresh import Tokens
    from hatidata_auth.services.sessions import SessionPolicy

    app, control = acme
    client = app.extensions["hatidata_workos"].client
    newco = client.organizations.create_organization(name="Newco Listing").id
    person = WorkOS(control, app)
    status, body = http_json("POST", f"{control.base_url}/user_management/organization_memberships",
                             {"user_id": person.user_id, "organization_id": newco, "role_slug": "developer"},
                             control.headers)
    assert status == 201, body
    _slow_listing(emulator)
    signed: list[str] = []

    def signing_in() -> None:
        tokens = Tokens(access_token="x", refresh_token="y", user={"id": person.user_id, "email": person.email},
                        organization_id=newco, authentication_method="Password")
        with app.app_context():
            result = login.complete_login(db.session(), client, tokens=tokens, claims={
                "sid": f"session_first_{person.user_id}", "org_id": newco, "role": "developer"},
                remember=False, policy=SessionPolicy())
            db.session.commit()
            signed.append(str(result.role))
            db.session.remove()

    thread = threading.Thread(target=signing_in)
    thread.start()
    time.sleep(1.0)  # the sign-in is waiting for WorkOS
    started = time.monotonic()
    with app.app_context():
        ensure_organization(db.session(), client, newco)
        db.session.commit()
        db.session.remove()
    waited = time.monotonic() - started
    thread.join(30)
    assert signed == ["developer"]
    assert waited < 1.0, waited


@pytest.mark.postgres
def test_an_sso_first_sign_ins_listing_holds_no_write_of_its_organization(app: Flask, emulator: Any) -> None:
    """The same through a whole SSO sign-in into an organization not mirrored yet, whose exchange mirrors the
    organization that vouched for the authentication: the listing is asked before that (it was asked after, and
    the other transaction waited for WorkOS and then broke the organization's unique key)."""
    import threading

    from hatidata_auth.services.organizations import ensure_organization
    from tests.auth_support import login

    _slow_listing(emulator)
    answers: list[int] = []
    thread = threading.Thread(target=lambda: answers.append(login(app.test_client(), "dev@acme.test").status_code))
    thread.start()
    time.sleep(1.5)  # the sign-in is waiting for WorkOS
    started = time.monotonic()
    with app.app_context():
        ensure_organization(db.session(), app.extensions["hatidata_workos"].client, ACME)
        db.session.commit()
        db.session.remove()
    waited = time.monotonic() - started
    thread.join(30)
    assert answers == [302]
    assert waited < 1.0, waited
