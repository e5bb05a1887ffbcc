"""WorkOS's present word on a membership at a sign-in, and an admin's removal against WorkOS's later word.

Two faults of one rule, "the newest word on a membership decides, and nothing an event could not do"
(``services.workos_memberships``, ``docs/directory-sync.md``):

- A person WorkOS removed and added again (a new membership id) who signs in before the re-add's ``created`` event
  is applied was refused: the row held the deletion (a break-it review). A sign-in now asks WorkOS for the
  membership of a row WorkOS's events left inactive, and applies it when it is newer (here: whatever subset of the
  history was applied, in any order).
- An admin's removal here was undone by WorkOS's next ``organization_membership.updated`` of the same membership
  (a role change at WorkOS; a break-it review, by reading). It now holds against every membership WorkOS had made
  before it (by WorkOS's ``created_at`` against the removal's time; a second review broke a first version that
  held only the membership id it knew), and gives way to one WorkOS makes after it or to an admin here.

All through the real SDK against the emulator; each WorkOS change is made through WorkOS's API.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from hatidata_auth.causes import NO_REQUEST, Actor, Cause
from hatidata_auth.extensions import db
from hatidata_auth.models import AuditEvent, Membership, Organization, User, utcnow
from hatidata_auth.services import login, sign_in_person, tenant_admin, workos_memberships
from hatidata_auth.services.login import LoginDenied
from tests.support.people import Replay
from tests.support.servers import EmulatorControl, http_json
from tests.test_inbox_batch_scope import ACME, _prepare
from tests.test_membership_rows_race import _store_and_drain

_people = itertools.count(1)


class WorkOS:
    """One person at WorkOS (the emulator), changed through WorkOS's API; the events each change emitted."""

    def __init__(self, control: EmulatorControl, app: Flask) -> None:
        self.replay = Replay(control, app)
        self.api = f"{control.base_url}/user_management"
        self.headers = control.headers
        self.email = f"word{next(_people)}.{time.monotonic_ns() % 10**9}@partners.test"
        self.user_id = self._call("POST", "/users", {"email": self.email})["id"]
        self.events: list[dict[str, Any]] = []
        self.replay.new_events()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        time.sleep(0.002)  # WorkOS's updated_at has millisecond resolution: keep each change its own version
        status, data = http_json(method, self.api + path, body, self.headers)
        assert status < 300, (status, data)
        return data

    def _emitted(self) -> None:
        self.events += [e for e in self.replay.new_events() if e["event"].startswith("organization_membership.")
                        and e["data"].get("user_id") == self.user_id]

    def add(self, role: str = "viewer") -> str:
        m = self._call("POST", "/organization_memberships", {"user_id": self.user_id, "organization_id": ACME,
                                                            "role_slug": role})
        self._emitted()
        return str(m["id"])

    def set_role(self, membership_id: str, role: str) -> None:
        self._call("PUT", f"/organization_memberships/{membership_id}", {"role_slug": role})
        self._emitted()

    def remove(self, membership_id: str) -> None:
        self._call("DELETE", f"/organization_memberships/{membership_id}")
        self._emitted()

    def set_status(self, membership_id: str, what: str) -> None:
        """``deactivate`` or ``reactivate`` the membership."""
        self._call("PUT", f"/organization_memberships/{membership_id}/{what}")
        self._emitted()


def _acme(session: Any) -> Organization:
    org = session.scalar(select(Organization).where(Organization.workos_organization_id == ACME))
    assert org is not None
    return org


def _sign_in(app: Flask, person: WorkOS, role: str | None = None) -> Membership:
    """The membership part of a sign-in into Acme (``login._upsert_membership``), committed (the membership as
    it is then); raises :class:`LoginDenied` (rolled back) as the callback would refuse."""
    with app.app_context():
        s = db.session()
        try:
            org, client = _acme(s), app.extensions["hatidata_workos"].client
            listed = workos_memberships.listing_for_sign_in(s, client, org, person.user_id)  # as complete_login
            signed = sign_in_person.upsert(s, org, {"id": person.user_id, "email": person.email}, utcnow())
            m = login._upsert_membership(s, client, org, signed, role, NO_REQUEST, listed=listed)
            s.commit()
            s.refresh(m)
            s.expunge_all()
            return m
        finally:
            s.rollback()
            db.session.remove()


def _membership(app: Flask, person: WorkOS) -> Membership | None:
    with app.app_context():
        m = db.session.scalar(select(Membership).join(User, User.id == Membership.user_id)
                              .where(User.workos_user_id == person.user_id,
                                     Membership.organization_id == _acme(db.session).id))
        db.session.expunge_all()
        db.session.remove()
        return m


def _remove_here(app: Flask, person: WorkOS, *, skew: float = 0.0) -> None:
    """An admin of Acme removes the person (``DELETE /api/v1/members/<id>``'s service), now by our clock (*skew*
    seconds off WorkOS's)."""
    from datetime import timedelta

    m = _membership(app, person)
    assert m is not None
    with app.app_context(), pytest.MonkeyPatch.context() as patch:
        patch.setattr(tenant_admin, "utcnow", lambda: utcnow() + timedelta(seconds=skew))
        tenant_admin.remove_member(db.session(), app.extensions["hatidata_workos"].client,
                                   organization_id=m.organization_id, membership_id=m.id,
                                   cause=Cause.by(Actor("user", "usr_word_admin", "it@acme.test")))
        db.session.commit()
        db.session.remove()


TOLERANCE = workos_memberships.CLOCK_TOLERANCE


@pytest.fixture(autouse=True)
def exact_clocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The emulator's clock is ours: "after the removal" means after it, to the millisecond (the drifting-clock
    tests put the tolerance back)."""
    from datetime import timedelta

    monkeypatch.setattr(workos_memberships, "CLOCK_TOLERANCE", timedelta(0))


def _removed_member(app: Flask, control: EmulatorControl) -> tuple[WorkOS, str]:
    """A person added at WorkOS, signed in, the membership's ``created`` applied, then removed here by an admin; the
    person and the WorkOS membership id."""
    person = WorkOS(control, app)
    first = person.add("viewer")
    _sign_in(app, person, "viewer")
    _store_and_drain(app, person.events)
    _remove_here(app, person)
    return person, first


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

    m = _sign_in(app, person, "developer")  # AuthKit's token carries the present role
    assert (m.status, m.role) == ("active", "developer"), applied

    _store_and_drain(app, [person.events[i] for i in late])
    m2 = _membership(app, person)
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
        _sign_in(app, person, "viewer")
    m = _membership(app, person)
    assert m is not None
    assert m.status == "deprovisioned"


@pytest.mark.parametrize("known", [True, False], ids=["workos_id_known", "workos_id_unknown"])
def test_an_admins_removal_holds_against_workos_changes_of_that_membership(acme: tuple[Flask, EmulatorControl],
                                                                           known: bool) -> None:
    """Removed by an admin here; WorkOS then changes the same membership (a role change): the person stays
    removed, at a sign-in too. A new membership at WorkOS (removed there, added again) brings them back, by its
    ``created`` event or by their sign-in before it. *known*: whether the row had learnt its WorkOS id (its
    ``created`` event applied) before the removal."""
    app, control = acme
    person = WorkOS(control, app)
    first = person.add("viewer")
    _sign_in(app, person, "viewer")
    if known:
        _store_and_drain(app, person.events)
    _remove_here(app, person)

    person.set_role(first, "developer")
    _store_and_drain(app, person.events[-1:])
    m = _membership(app, person)
    assert m is not None
    assert m.status == "deprovisioned", m.details
    with pytest.raises(LoginDenied):
        _sign_in(app, person, "developer")  # WorkOS lists the membership, newer: the admin's removal still holds

    person.remove(first)
    again = person.add("admin")
    m = _sign_in(app, person, "admin")  # before the re-add's events are applied
    assert (m.status, m.role) == ("active", "admin")
    _store_and_drain(app, person.events[-2:])
    m = _membership(app, person)
    assert m is not None
    assert (m.status, m.role, m.workos_membership_id) == ("active", "admin", again)
    assert "removed_here" not in m.details


def test_an_admin_bringing_a_member_back_lifts_the_removal(acme: tuple[Flask, EmulatorControl]) -> None:
    """An admin's removal, then an admin here makes the person a member again: WorkOS's changes of the membership
    apply again (the removal's mark is gone)."""
    app, control = acme
    person, first = _removed_member(app, control)
    with app.app_context():
        tenant_admin.grant_admin(db.session(), organization_id=_acme(db.session).id, email=person.email,
                                 actor=Actor.system("test"))
        db.session.commit()
        db.session.remove()
    m = _membership(app, person)
    assert m is not None
    assert (m.status, m.role) == ("active", "admin")
    assert "removed_here" not in m.details
    person.set_role(first, "developer")
    _store_and_drain(app, person.events[-1:])
    m = _membership(app, person)
    assert m is not None
    assert (m.status, m.role) == ("active", "developer")


def test_the_catch_up_is_audited_with_the_membership_workos_listed(acme: tuple[Flask, EmulatorControl]) -> None:
    """The reactivation a sign-in's catch-up makes is audited once (``membership.activated``), naming the WorkOS
    membership it applied."""
    app, control = acme
    person = WorkOS(control, app)
    person.remove(person.add())
    again = person.add("viewer")
    _store_and_drain(app, person.events[:2])
    m = _sign_in(app, person, "viewer")
    with app.app_context():
        details = db.session.scalars(select(AuditEvent.details).where(
            AuditEvent.action == "membership.activated", AuditEvent.target_id == m.id)).all()
        db.session.remove()
    caught = [d for d in details if d["reason"] == "workos_membership_active"]
    assert [(d["workos_membership_id"], d["role"]) for d in caught] == [(again, "viewer")], details


def test_a_sign_in_elsewhere_catches_up_the_memberships_it_mirrors(acme: tuple[Flask, EmulatorControl]) -> None:
    """The sign-in's mirroring of the person's other memberships (``login.sync_user_memberships``) brings a row
    WorkOS's events left deprovisioned up to WorkOS's re-add, so the person can switch into it."""
    app, control = acme
    person = WorkOS(control, app)
    person.remove(person.add("viewer"))
    person.add("developer")
    _store_and_drain(app, person.events[:2])  # the deletion applied, the re-add not yet
    m = _membership(app, person)
    assert m is not None
    assert m.status == "deprovisioned"
    with app.app_context():
        login.sync_user_memberships(db.session(), app.extensions["hatidata_workos"].client, user_id=m.user_id,
                                    workos_user_id=person.user_id)
        db.session.commit()
        db.session.remove()
    m = _membership(app, person)
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
        _sign_in(app, person, "viewer")
    m = _sign_in(app, person, "viewer")
    assert m.status == "active"


# --- an admin's removal against WorkOS's words in every order (helper-125's repros) -------------------------------


def _removed_before_workos_deletion(app: Flask, person: WorkOS) -> str:
    """Added at WorkOS (X) and signed in, X's events not applied; WorkOS removes X; an admin here removes the
    person before WorkOS's deletion is applied (the row never learnt X's id)."""
    first = person.add("viewer")
    _sign_in(app, person, "viewer")
    person.remove(first)
    _remove_here(app, person)  # well before the re-add that follows
    m = _membership(app, person)
    assert m is not None
    assert m.status == "deprovisioned"
    assert m.details["removed_here"]["id"] is None
    return first


@pytest.mark.parametrize("change", ["deactivate", "downgrade"])
def test_a_newer_change_of_a_re_add_delivered_before_its_created_still_decides(
        acme: tuple[Flask, EmulatorControl], change: str) -> None:
    """Removed here, then re-added at WorkOS (Y, admin), then Y deactivated or made a viewer; Y's ``updated`` is
    applied before its ``created`` (a retried webhook). The newest word decides: inactive, or a viewer (the first
    version of the removal dropped the update and let the older ``created`` make an admin)."""
    app, control = acme
    person = WorkOS(control, app)
    _removed_before_workos_deletion(app, person)
    again = person.add("admin")
    if change == "deactivate":
        person.set_status(again, "deactivate")
    else:
        person.set_role(again, "viewer")
    created, updated = person.events[-2], person.events[-1]
    _store_and_drain(app, [updated])
    _store_and_drain(app, [created])
    m = _membership(app, person)
    assert m is not None
    expected = ("inactive", None) if change == "deactivate" else ("active", "viewer")
    assert (m.status, m.role if m.status == "active" else None) == expected, m.details


def test_a_re_add_by_invitation_after_a_removal_lets_the_person_in(acme: tuple[Flask, EmulatorControl]) -> None:
    """Removed here; WorkOS re-adds the person by invitation: ``created`` pending, then the acceptance's ``updated``
    (active). Both apply: active, and the sign-in is let in (the first version kept the person out for ever)."""
    import copy

    app, control = acme
    person = WorkOS(control, app)
    _removed_before_workos_deletion(app, person)
    again = person.add("viewer")
    invited = copy.deepcopy(person.events[-1])
    invited["data"]["status"] = "pending"  # the emulator has no invitations: WorkOS's created of one
    person.set_status(again, "deactivate")
    person.set_status(again, "reactivate")
    _store_and_drain(app, [invited])
    _store_and_drain(app, person.events[-1:])
    m = _membership(app, person)
    assert m is not None
    assert m.status == "active", m.details
    assert _sign_in(app, person, "viewer").status == "active"


def test_a_removal_after_workos_re_added_the_person_holds(acme: tuple[Flask, EmulatorControl]) -> None:
    """WorkOS removed X and re-added the person (Y) while the appliers were behind; an admin here removes them
    after that: the admin's decision is the newest. The sign-in (WorkOS lists Y) and Y's late events are refused
    (the first version trusted the row's stale id, X, and let Y through)."""
    app, control = acme
    person = WorkOS(control, app)
    first = person.add("viewer")
    _sign_in(app, person, "viewer")
    _store_and_drain(app, person.events)  # the row learns X
    person.remove(first)
    person.add("admin")
    time.sleep(0.005)
    _remove_here(app, person)
    with pytest.raises(LoginDenied):
        _sign_in(app, person, "admin")
    _store_and_drain(app, person.events[-2:])
    m = _membership(app, person)
    assert m is not None
    assert m.status == "deprovisioned", m.details


@pytest.mark.parametrize("skew", [0.0, -3.0, 3.0], ids=["same_clocks", "our_clock_behind", "our_clock_ahead"])
def test_a_late_created_of_the_removed_membership_is_held(acme: tuple[Flask, EmulatorControl],
                                                          monkeypatch: pytest.MonkeyPatch, skew: float) -> None:
    """Signed in before the membership's ``created`` was applied (the row never learnt its id), removed here; the
    late ``created`` (and any change of that membership) does not bring the person back, whichever way our clock
    drifts from WorkOS's by a few seconds (with ours behind, the membership's created_at fell after the mark and
    the person came back: helper-126)."""
    monkeypatch.setattr(workos_memberships, "CLOCK_TOLERANCE", TOLERANCE)
    app, control = acme
    person = WorkOS(control, app)
    first = person.add("developer")
    _sign_in(app, person, "developer")
    _remove_here(app, person, skew=skew)
    person.set_role(first, "admin")
    _store_and_drain(app, person.events)
    m = _membership(app, person)
    assert m is not None
    assert m.status == "deprovisioned", m.details
    with pytest.raises(LoginDenied):
        _sign_in(app, person, "admin")


def test_removing_a_member_workos_removed_records_the_decision(acme: tuple[Flask, EmulatorControl]) -> None:
    """WorkOS's deletion applied (deprovisioned), its re-add not yet; an admin here removes the person: no access
    to take, but the decision is recorded and audited (``membership.removal_recorded``), so the re-add WorkOS made
    before it does not let them in."""
    app, control = acme
    person = WorkOS(control, app)
    first = person.add("viewer")
    _sign_in(app, person, "viewer")
    person.remove(first)
    _store_and_drain(app, person.events)
    person.add("viewer")
    time.sleep(0.005)
    _remove_here(app, person)
    with pytest.raises(LoginDenied):
        _sign_in(app, person, "viewer")
    m = _membership(app, person)
    assert m is not None
    with app.app_context():
        actions = db.session.scalars(select(AuditEvent.action).where(AuditEvent.target_id == m.id)).all()
        db.session.remove()
    assert "membership.removal_recorded" in actions


def test_the_mirroring_gives_nothing_back_in_an_organization_no_longer_active(acme: tuple[Flask, EmulatorControl]
                                                                              ) -> None:
    """WorkOS lists the person's re-added membership, but the organization is deleted here: the mirroring changes
    nothing and audits nothing (it turned ``deprovisioned`` into ``inactive``, audited as a role change)."""
    app, control = acme
    person = WorkOS(control, app)
    person.remove(person.add("viewer"))
    person.add("viewer")
    _store_and_drain(app, person.events[:2])
    m = _membership(app, person)
    assert m is not None
    with app.app_context():
        _acme(db.session).status = "deleted"
        db.session.commit()
        before = db.session.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.target_id == m.id))
        login.sync_user_memberships(db.session(), app.extensions["hatidata_workos"].client, user_id=m.user_id,
                                    workos_user_id=person.user_id)
        db.session.commit()
        after = db.session.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.target_id == m.id))
        db.session.remove()
    m = _membership(app, person)
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
    assert _sign_in(app, person, "viewer").status == "active"
    _remove_here(app, person)
    with pytest.raises(LoginDenied):
        _sign_in(app, person, "viewer")


def test_a_re_add_past_the_clocks_tolerance_is_applied(acme: tuple[Flask, EmulatorControl],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the clocks' tolerance, a membership WorkOS creates after the removal is a new decision."""
    monkeypatch.setattr(workos_memberships, "CLOCK_TOLERANCE", TOLERANCE)
    app, control = acme
    person = WorkOS(control, app)
    first = person.add("viewer")
    _sign_in(app, person, "viewer")
    _store_and_drain(app, person.events)
    _remove_here(app, person, skew=-(TOLERANCE.total_seconds() + 2))  # as if made that long before what follows
    person.remove(first)
    person.add("developer")
    _store_and_drain(app, person.events[-2:])
    m = _membership(app, person)
    assert m is not None
    assert (m.status, m.role) == ("active", "developer"), m.details


def test_a_re_add_within_the_clocks_tolerance_is_held(acme: tuple[Flask, EmulatorControl],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Within the tolerance, a re-add is held: the documented cost of erring towards keeping a removed person out
    when the clocks drift (an admin here lets them in)."""
    monkeypatch.setattr(workos_memberships, "CLOCK_TOLERANCE", TOLERANCE)
    app, control = acme
    person, first = _removed_member(app, control)
    person.remove(first)
    person.add("developer")
    _store_and_drain(app, person.events[-2:])
    m = _membership(app, person)
    assert m is not None
    assert m.status == "deprovisioned", m.details


def test_an_event_an_admins_removal_holds_is_noted_in_the_inbox(acme: tuple[Flask, EmulatorControl]) -> None:
    """WorkOS's change of a membership the admin removed changes nothing, and the inbox says why (it looked
    applied)."""
    from hatidata_auth.models import WebhookEvent

    app, control = acme
    person, first = _removed_member(app, control)
    person.set_role(first, "admin")
    _store_and_drain(app, person.events[-1:])
    with app.app_context():
        row = db.session.scalar(select(WebhookEvent).where(WebhookEvent.event_id == person.events[-1]["id"]))
        assert row is not None
        assert (row.status, row.last_error) == ("ignored", "held by an admin's removal here")
        db.session.remove()


@pytest.mark.postgres
def test_no_admin_change_waits_for_workos_behind_a_sign_in(acme: tuple[Flask, EmulatorControl], emulator: Any) -> None:
    """A removed person's sign-in asks WorkOS (slow here: 3 s) before it takes its locks: an admin's change of
    another member of the organization meanwhile does not wait for WorkOS (it waited for the sign-in's call)."""
    import threading

    import httpx2

    app, control = acme
    removed = WorkOS(control, app)
    removed.add("viewer")
    _sign_in(app, removed, "viewer")
    _store_and_drain(app, removed.events)
    _remove_here(app, removed)
    other = WorkOS(control, app)
    other.add("viewer")
    target = _sign_in(app, other, "viewer")
    answer = httpx2.post(f"{emulator.url}/_emulator/faults", json={
        "method": "GET", "path": "/user_management/organization_memberships", "delay_ms": 3000, "count": 1},
        headers={"Authorization": "Bearer sk_test_emulator"}, timeout=10)
    assert answer.status_code == 201, answer.text
    refused: list[Exception] = []

    def sign_in() -> None:
        try:
            _sign_in(app, removed, "viewer")
        except LoginDenied as exc:
            refused.append(exc)

    thread = threading.Thread(target=sign_in)
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


def _strip_mark(app: Flask, person: WorkOS) -> None:
    """The row as a removal made before the mark existed left it."""
    from hatidata_auth.models import Membership as Row

    m = _membership(app, person)
    assert m is not None
    with app.app_context():
        row = db.session.get(Row, m.id)
        assert row is not None
        row.details = {k: v for k, v in row.details.items() if k != "removed_here"}
        db.session.commit()
        db.session.remove()


def _migration() -> Any:
    """Migration 0023's module (its ``mark_removals``)."""
    import importlib.util

    from hatidata_auth.app import MIGRATIONS_DIR

    spec = importlib.util.spec_from_file_location("m0023", MIGRATIONS_DIR / "versions" / "0023_admin_removal_marks.py")
    assert spec is not None
    assert spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    return migration


def test_the_migration_marks_the_removals_made_before_the_mark(acme: tuple[Flask, EmulatorControl]) -> None:
    """Migration 0023 marks a member an admin removed last (the time of its audit event), and no other: a member
    WorkOS removed, one an admin removed and made a member again. WorkOS's later change of the marked one is then
    held (helper-126: a removal made before this version was undone by WorkOS's next role change)."""
    migration = _migration()
    app, control = acme
    removed, by_workos, back = WorkOS(control, app), WorkOS(control, app), WorkOS(control, app)
    first = removed.add("viewer")
    for person in (removed, by_workos, back):
        if person is not removed:
            person.add("viewer")
        _sign_in(app, person, "viewer")
        _store_and_drain(app, person.events)
    _remove_here(app, removed)
    _remove_here(app, back)
    with app.app_context():
        tenant_admin.grant_admin(db.session(), organization_id=_acme(db.session).id, email=back.email,
                                 actor=Actor.system("test"))
        db.session.commit()
        db.session.remove()
    by_workos.remove(by_workos.events[0]["data"]["id"])
    _store_and_drain(app, by_workos.events[-1:])
    for person in (removed, by_workos, back):
        _strip_mark(app, person)
    with app.app_context(), db.engine.begin() as conn:
        assert migration.mark_removals(conn) == 1
    marks = {}
    for name, person in (("removed", removed), ("by_workos", by_workos), ("back", back)):
        m = _membership(app, person)
        assert m is not None
        marks[name] = m.details.get("removed_here")
    assert marks["by_workos"] is None
    assert marks["back"] is None
    assert marks["removed"] is not None
    assert marks["removed"]["id"] == first, (marks, first, [e["event"] for e in removed.events])
    removed.set_role(first, "admin")
    _store_and_drain(app, removed.events[-1:])
    m = _membership(app, removed)
    assert m is not None
    assert m.status == "deprovisioned", m.details


def test_the_migration_marks_a_removal_workos_deactivated_since(acme: tuple[Flask, EmulatorControl]) -> None:
    """Before the mark, WorkOS's deactivation of a removed member's membership moved the row from ``deprovisioned``
    to ``inactive``: still the admin's removal, marked (helper-127: it was left unmarked, and WorkOS's reactivation
    brought the person back)."""
    app, control = acme
    person, first = _removed_member(app, control)
    _strip_mark(app, person)  # a removal made before the mark
    person.set_status(first, "deactivate")
    _store_and_drain(app, person.events[-1:])
    m = _membership(app, person)
    assert m is not None
    assert m.status == "inactive"
    with app.app_context(), db.engine.begin() as conn:
        assert _migration().mark_removals(conn) == 1
    person.set_status(first, "reactivate")
    _store_and_drain(app, person.events[-1:])
    m = _membership(app, person)
    assert m is not None
    assert m.status == "inactive", m.details
