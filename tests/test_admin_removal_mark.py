"""An admin's removal here against WorkOS's later word (``services.workos_memberships``, ``docs/directory-sync.md``).

An admin's removal was undone by WorkOS's next ``organization_membership.updated`` of the same membership (a role
change at WorkOS; a break-it review, by reading). It now holds against every membership WorkOS had made before it
(by WorkOS's ``created_at`` against the removal's time, within the clocks' tolerance, and the id the row knew), and
gives way to one WorkOS makes after it or to an admin here. A second review broke a first version that held only
the membership id it knew (helper-125's repros below); a third, the clocks and old data (helper-126's).

All through the real SDK against the emulator; each WorkOS change is made through WorkOS's API.
"""

from __future__ import annotations

import time

import pytest
from flask import Flask
from sqlalchemy import select

from hatidata_auth.causes import Actor
from hatidata_auth.extensions import db
from hatidata_auth.models import AuditEvent
from hatidata_auth.services import tenant_admin, workos_memberships
from hatidata_auth.services.login import LoginDenied
from tests.support.membership_word import (
    TOLERANCE,
    WorkOS,
    acme_org,
    membership_of,
    migration_0023,
    remove_here,
    removed_member,
    sign_in,
    strip_mark,
)
from tests.support.servers import EmulatorControl
from tests.test_inbox_batch_scope import _prepare
from tests.test_membership_rows_race import _store_and_drain


@pytest.fixture(autouse=True)
def exact_clocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The emulator's clock is ours: "after the removal" means after it, to the millisecond (the drifting-clock
    tests put the tolerance back)."""
    from datetime import timedelta

    monkeypatch.setattr(workos_memberships, "CLOCK_TOLERANCE", timedelta(0))


@pytest.fixture
def acme(app: Flask, emulator_control: EmulatorControl) -> tuple[Flask, EmulatorControl]:
    _prepare(app)
    return app, emulator_control


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
    sign_in(app, person, "viewer")
    if known:
        _store_and_drain(app, person.events)
    remove_here(app, person)

    person.set_role(first, "developer")
    _store_and_drain(app, person.events[-1:])
    m = membership_of(app, person)
    assert m is not None
    assert m.status == "deprovisioned", m.details
    with pytest.raises(LoginDenied):
        sign_in(app, person, "developer")  # WorkOS lists the membership, newer: the admin's removal still holds

    person.remove(first)
    again = person.add("admin")
    m = sign_in(app, person, "admin")  # before the re-add's events are applied
    assert (m.status, m.role) == ("active", "admin")
    _store_and_drain(app, person.events[-2:])
    m = membership_of(app, person)
    assert m is not None
    assert (m.status, m.role, m.workos_membership_id) == ("active", "admin", again)
    assert "removed_here" not in m.details


def test_an_admin_bringing_a_member_back_lifts_the_removal(acme: tuple[Flask, EmulatorControl]) -> None:
    """An admin's removal, then an admin here makes the person a member again: WorkOS's changes of the membership
    apply again (the removal's mark is gone)."""
    app, control = acme
    person, first = removed_member(app, control)
    with app.app_context():
        tenant_admin.grant_admin(db.session(), organization_id=acme_org(db.session).id, email=person.email,
                                 actor=Actor.system("test"))
        db.session.commit()
        db.session.remove()
    m = membership_of(app, person)
    assert m is not None
    assert (m.status, m.role) == ("active", "admin")
    assert "removed_here" not in m.details
    person.set_role(first, "developer")
    _store_and_drain(app, person.events[-1:])
    m = membership_of(app, person)
    assert m is not None
    assert (m.status, m.role) == ("active", "developer")


# --- an admin's removal against WorkOS's words in every order (helper-125's repros) -------------------------------


def _removed_before_workos_deletion(app: Flask, person: WorkOS) -> str:
    """Added at WorkOS (X) and signed in, X's events not applied (the row knows X's id from the sign-in alone);
    WorkOS removes X; an admin here removes the person before WorkOS's deletion is applied."""
    first = person.add("viewer")
    sign_in(app, person, "viewer")
    person.remove(first)
    remove_here(app, person)  # well before the re-add that follows
    m = membership_of(app, person)
    assert m is not None
    assert m.status == "deprovisioned"
    assert m.details["removed_here"]["id"] == first
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
    m = membership_of(app, person)
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
    m = membership_of(app, person)
    assert m is not None
    assert m.status == "active", m.details
    assert sign_in(app, person, "viewer").status == "active"


def test_a_removal_after_workos_re_added_the_person_holds(acme: tuple[Flask, EmulatorControl]) -> None:
    """WorkOS removed X and re-added the person (Y) while the appliers were behind; an admin here removes them
    after that: the admin's decision is the newest. The sign-in (WorkOS lists Y) and Y's late events are refused
    (the first version trusted the row's stale id, X, and let Y through)."""
    app, control = acme
    person = WorkOS(control, app)
    first = person.add("viewer")
    sign_in(app, person, "viewer")
    _store_and_drain(app, person.events)  # the row learns X
    person.remove(first)
    person.add("admin")
    time.sleep(0.005)
    remove_here(app, person)
    with pytest.raises(LoginDenied):
        sign_in(app, person, "admin")
    _store_and_drain(app, person.events[-2:])
    m = membership_of(app, person)
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
    sign_in(app, person, "developer")
    remove_here(app, person, skew=skew)
    person.set_role(first, "admin")
    _store_and_drain(app, person.events)
    m = membership_of(app, person)
    assert m is not None
    assert m.status == "deprovisioned", m.details
    with pytest.raises(LoginDenied):
        sign_in(app, person, "admin")


def test_removing_a_member_workos_removed_records_the_decision(acme: tuple[Flask, EmulatorControl]) -> None:
    """WorkOS's deletion applied (deprovisioned), its re-add not yet; an admin here removes the person: no access
    to take, but the decision is recorded and audited (``membership.removal_recorded``), so the re-add WorkOS made
    before it does not let them in."""
    app, control = acme
    person = WorkOS(control, app)
    first = person.add("viewer")
    sign_in(app, person, "viewer")
    person.remove(first)
    _store_and_drain(app, person.events)
    person.add("viewer")
    time.sleep(0.005)
    remove_here(app, person)
    with pytest.raises(LoginDenied):
        sign_in(app, person, "viewer")
    m = membership_of(app, person)
    assert m is not None
    with app.app_context():
        actions = db.session.scalars(select(AuditEvent.action).where(AuditEvent.target_id == m.id)).all()
        db.session.remove()
    assert "membership.removal_recorded" in actions


def test_a_re_add_past_the_clocks_tolerance_is_applied(acme: tuple[Flask, EmulatorControl],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the clocks' tolerance, a membership WorkOS creates after the removal is a new decision."""
    monkeypatch.setattr(workos_memberships, "CLOCK_TOLERANCE", TOLERANCE)
    app, control = acme
    person = WorkOS(control, app)
    first = person.add("viewer")
    sign_in(app, person, "viewer")
    _store_and_drain(app, person.events)
    remove_here(app, person, skew=-(TOLERANCE.total_seconds() + 2))  # as if made that long before what follows
    person.remove(first)
    person.add("developer")
    _store_and_drain(app, person.events[-2:])
    m = membership_of(app, person)
    assert m is not None
    assert (m.status, m.role) == ("active", "developer"), m.details


def test_a_re_add_within_the_clocks_tolerance_is_held(acme: tuple[Flask, EmulatorControl],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Within the tolerance, a re-add is held: the documented cost of erring towards keeping a removed person out
    when the clocks drift (an admin here lets them in)."""
    monkeypatch.setattr(workos_memberships, "CLOCK_TOLERANCE", TOLERANCE)
    app, control = acme
    person, first = removed_member(app, control)
    person.remove(first)
    person.add("developer")
    _store_and_drain(app, person.events[-2:])
    m = membership_of(app, person)
    assert m is not None
    assert m.status == "deprovisioned", m.details


def test_an_event_an_admins_removal_holds_is_noted_in_the_inbox(acme: tuple[Flask, EmulatorControl]) -> None:
    """WorkOS's change of a membership the admin removed changes nothing, and the inbox says why (it looked
    applied)."""
    from hatidata_auth.models import WebhookEvent

    app, control = acme
    person, first = removed_member(app, control)
    person.set_role(first, "admin")
    _store_and_drain(app, person.events[-1:])
    with app.app_context():
        row = db.session.scalar(select(WebhookEvent).where(WebhookEvent.event_id == person.events[-1]["id"]))
        assert row is not None
        assert (row.status, row.last_error) == ("ignored", "held by an admin's removal here")
        db.session.remove()


def test_the_migration_marks_the_removals_made_before_the_mark(acme: tuple[Flask, EmulatorControl]) -> None:
    """Migration 0023 marks a member an admin removed last (the time of its audit event), and no other: a member
    WorkOS removed, one an admin removed and made a member again. WorkOS's later change of the marked one is then
    held (helper-126: a removal made before this version was undone by WorkOS's next role change)."""
    migration = migration_0023()
    app, control = acme
    removed, by_workos, back = WorkOS(control, app), WorkOS(control, app), WorkOS(control, app)
    first = removed.add("viewer")
    for person in (removed, by_workos, back):
        if person is not removed:
            person.add("viewer")
        sign_in(app, person, "viewer")
        _store_and_drain(app, person.events)
    remove_here(app, removed)
    remove_here(app, back)
    with app.app_context():
        tenant_admin.grant_admin(db.session(), organization_id=acme_org(db.session).id, email=back.email,
                                 actor=Actor.system("test"))
        db.session.commit()
        db.session.remove()
    by_workos.remove(by_workos.events[0]["data"]["id"])
    _store_and_drain(app, by_workos.events[-1:])
    for person in (removed, by_workos, back):
        strip_mark(app, person)
    with app.app_context(), db.engine.begin() as conn:
        assert migration.mark_removals(conn) == 1
    marks = {}
    for name, person in (("removed", removed), ("by_workos", by_workos), ("back", back)):
        m = membership_of(app, person)
        assert m is not None
        marks[name] = m.details.get("removed_here")
    assert marks["by_workos"] is None
    assert marks["back"] is None
    assert marks["removed"] is not None
    assert marks["removed"]["id"] == first, (marks, first, [e["event"] for e in removed.events])
    removed.set_role(first, "admin")
    _store_and_drain(app, removed.events[-1:])
    m = membership_of(app, removed)
    assert m is not None
    assert m.status == "deprovisioned", m.details


def test_the_migration_marks_a_removal_workos_deactivated_since(acme: tuple[Flask, EmulatorControl]) -> None:
    """Before the mark, WorkOS's deactivation of a removed member's membership moved the row from ``deprovisioned``
    to ``inactive``: still the admin's removal, marked (helper-127: it was left unmarked, and WorkOS's reactivation
    brought the person back)."""
    app, control = acme
    person, first = removed_member(app, control)
    strip_mark(app, person)  # a removal made before the mark
    person.set_status(first, "deactivate")
    _store_and_drain(app, person.events[-1:])
    m = membership_of(app, person)
    assert m is not None
    assert m.status == "inactive"
    with app.app_context(), db.engine.begin() as conn:
        assert migration_0023().mark_removals(conn) == 1
    person.set_status(first, "reactivate")
    _store_and_drain(app, person.events[-1:])
    m = membership_of(app, person)
    assert m is not None
    assert m.status == "inactive", m.details
