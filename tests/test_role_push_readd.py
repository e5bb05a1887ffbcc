"""A role decided here against a re-add, a slug we do not know and a removal while the job is pending
(helper-145's review of the role push job).

- A mark naming no WorkOS membership (the row knew none) held any membership's word, a re-add's included, and
  the job set the role decided for the removed membership on the re-add: a re-add starts as WorkOS says, whether
  the row knew the id or not (the job takes only a membership made by the time of the decision).
- WorkOS's word naming a slug we do not know replaced the held word it followed, so WorkOS's demotion made after it
  took the role was lost (in order, the unknown slug keeps the role the demotion gave); also delivered in reverse
  order (the late word is kept while the mark holds).
- A held word was given at the lift to a member an admin removed meanwhile.
"""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from hatidata_auth.causes import Actor, Cause
from hatidata_auth.models import Membership
from hatidata_auth.services import tenant_admin, workos_role_push
from tests.support.membership_word import WorkOS, membership_of, prepared_acme, sign_in
from tests.support.servers import EmulatorControl
from tests.test_membership_rows_race import _store_and_drain
from tests.test_role_change_at_workos import _at_workos, _jobs, _patch, _workos_back
from tests.test_role_push_order import _decided_while_workos_down, _role, apply_now, while_the_lift_waits


@pytest.fixture
def acme(app: Flask, emulator_control: EmulatorControl) -> tuple[Flask, EmulatorControl]:
    return prepared_acme(app, emulator_control, with_admin=True)


@pytest.mark.parametrize("delivered", ["before_the_job", "after_it"])
@pytest.mark.parametrize("row_knows", [True, False], ids=["row_knows_id", "row_knows_none"])
@pytest.mark.parametrize(("held", "decided"), [("admin", "viewer"), ("viewer", "admin")])
def test_a_re_add_before_the_job_starts_as_workos_says(acme: tuple[Flask, EmulatorControl], emulator: object,
                                                       row_knows: bool, held: str, decided: str,
                                                       delivered: str) -> None:
    """Decided here while WorkOS does not answer; WorkOS then removes the person and re-adds them with their role
    before the decision (a new membership, WorkOS's new decision): here and at WorkOS the re-add holds that role,
    whether the row knew the first membership or not, its events delivered before or after the job."""
    app, control, person, first = _decided_while_workos_down(acme, emulator, row_knows, held, decided)
    assert [j.status for j in _jobs(app)] == ["received"]
    person.remove(first)
    second = person.add(held)
    if delivered == "before_the_job":
        _store_and_drain(app, person.events)
    _workos_back(app, control)
    _store_and_drain(app, person.events)
    assert (_role(app, person), _at_workos(app, second)) == (("active", held), held)


def _race(app: Flask, control: EmulatorControl, person: WorkOS, first: str, m: Membership, changes: list[str],
          order: str) -> None:
    """While the job's lift waits, WorkOS's *changes* happen and their events are applied (in *order*)."""

    def dashboard(holder: Session) -> None:
        n = len(person.events)
        for role in changes:
            person.set_role(first, role)
        events = person.events[n:]
        for payload in events[::-1] if order == "reverse" else events:
            apply_now(app, holder, payload)

    while_the_lift_waits(app, control, first, m, dashboard)


@pytest.mark.postgres  # the race needs the row lock that holds the lift; SQLite's writers take turns instead
@pytest.mark.parametrize("order", ["in_order", "reverse"])
def test_a_held_slug_we_do_not_know_keeps_the_demotion_it_follows(acme: tuple[Flask, EmulatorControl],
                                                                  emulator: object, order: str) -> None:
    app, control, person, first = _decided_while_workos_down(acme, emulator, True, "viewer", "admin")
    m = membership_of(app, person)
    assert m is not None
    _race(app, control, person, first, m, ["developer", "contractor"], order)
    after = membership_of(app, person)
    assert workos_role_push.pending(after) is None
    # WorkOS demoted to developer after it took admin, then a slug we do not know (which keeps the role):
    # in order without the mark the row ends developer.
    assert after.role == "developer"


def test_the_same_words_after_the_lift_end_alike(acme: tuple[Flask, EmulatorControl]) -> None:
    """Without the race: WorkOS's words after the lift; the row ends developer, as with the race."""
    app, control = acme
    person = WorkOS(control, app)
    first = person.add("viewer")
    m = sign_in(app, person, "viewer")
    assert _patch(app, m, "admin") == 200
    assert _at_workos(app, first) == "admin"
    n = len(person.events)
    person.set_role(first, "developer")
    person.set_role(first, "contractor")
    _store_and_drain(app, person.events[n:])
    assert _role(app, person) == ("active", "developer")


@pytest.mark.postgres  # the race needs the row lock that holds the lift; SQLite's writers take turns instead
def test_a_held_word_is_not_given_to_a_member_removed_meanwhile(acme: tuple[Flask, EmulatorControl],
                                                                emulator: object) -> None:
    app, control, person, first = _decided_while_workos_down(acme, emulator, True, "viewer", "admin")
    m = membership_of(app, person)
    assert m is not None
    def removed(holder: Session) -> None:
        person.set_role(first, "developer")
        apply_now(app, holder, person.events[-1])
        tenant_admin.remove_member(holder, app.extensions["hatidata_workos"].client,
                                   organization_id=m.organization_id, membership_id=m.id,
                                   cause=Cause.by(Actor("user", "usr_it", "it@acme.test")))

    while_the_lift_waits(app, control, first, m, removed)
    after = membership_of(app, person)
    assert (after.status, after.role_source) == ("deprovisioned", "manual")  # the held word was not given
