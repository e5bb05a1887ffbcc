"""A WorkOS role we do not know (``services.workos_memberships.apply``, ``docs/directory-sync.md``).

WorkOS's role slugs are the environment's; ours are ``admin``, ``developer``, ``viewer``. A slug we do not know
keeps the member's role while the membership goes on (an environment's own default slug must not undo a grant made
here), but a membership WorkOS made anew starts at the organization's default: a re-add with an unknown slug used to
restore the role the removed membership held (an admin came back an admin; a break-it review). The rule: no
membership holds a role from a membership before it. Here over both ways of being removed (at WorkOS, by an admin
here) and both ways the re-add arrives (its events, a sign-in's catch-up).

All through the real SDK against the emulator; each WorkOS change is made through WorkOS's API.
"""

from __future__ import annotations

import pytest
from flask import Flask
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hatidata_auth.extensions import db
from hatidata_auth.services import workos_memberships
from tests.support.membership_word import TOLERANCE, WorkOS, acme_org, membership_of, remove_here, sign_in
from tests.support.servers import EmulatorControl, http_json
from tests.test_inbox_batch_scope import _prepare
from tests.test_membership_rows_race import _store_and_drain

UNKNOWN_SLUGS = st.sampled_from(["member", "contractor", "billing-admin", "admin-2"])


@pytest.fixture
def acme(app: Flask, emulator_control: EmulatorControl) -> tuple[Flask, EmulatorControl]:
    """Acme with an admin, in an environment whose roles include the unknown slugs (made through WorkOS's roles
    API)."""
    _prepare(app)
    for slug in ("member", "contractor", "billing-admin", "admin-2"):
        status, body = http_json("POST", f"{emulator_control.base_url}/authorization/roles",
                                 {"slug": slug, "name": slug.title()}, emulator_control.headers)
        assert status in (201, 409), body
    standing = WorkOS(emulator_control, app)  # another admin, so that removing one is not refused as the last
    standing.add("admin")
    sign_in(app, standing, "admin")
    return app, emulator_control


def _default_role(app: Flask) -> str:
    with app.app_context():
        role = acme_org(db.session).default_role
        db.session.remove()
    assert role is not None
    return str(role)


@settings(max_examples=16, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(held=st.sampled_from(["admin", "developer"]), removed_by=st.sampled_from(["workos", "admin here"]),
       arrives_by=st.sampled_from(["events", "sign-in"]), slug=UNKNOWN_SLUGS)
def test_a_re_add_with_a_role_we_do_not_know_starts_at_the_default(
        acme: tuple[Flask, EmulatorControl], monkeypatch: pytest.MonkeyPatch, held: str, removed_by: str,
        arrives_by: str, slug: str) -> None:
    """The person held *held*, was removed, and WorkOS added them again with *slug*: whichever way the removal
    was made and the re-add arrives, they are active with the organization's default role, not *held*."""
    monkeypatch.setattr(workos_memberships, "CLOCK_TOLERANCE", TOLERANCE)
    app, control = acme
    person = WorkOS(control, app)
    first = person.add(held)
    sign_in(app, person, held)
    _store_and_drain(app, person.events)
    m = membership_of(app, person)
    assert m is not None
    assert (m.status, m.role) == ("active", held), (m.status, m.role, m.details)
    if removed_by == "admin here":
        remove_here(app, person, skew=-(TOLERANCE.total_seconds() + 2))  # well before the re-add, by both clocks
    person.remove(first)
    _store_and_drain(app, person.events[-1:])
    person.add(slug)
    if arrives_by == "events":
        _store_and_drain(app, person.events[-1:])
    else:
        sign_in(app, person, slug)
    m = membership_of(app, person)
    assert m is not None
    assert (m.status, m.role) == ("active", _default_role(app)), (held, removed_by, arrives_by, m.details)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(held=st.sampled_from(["admin", "developer"]), slug=UNKNOWN_SLUGS)
def test_a_role_we_do_not_know_keeps_the_role_of_the_membership_that_goes_on(
        acme: tuple[Flask, EmulatorControl], held: str, slug: str) -> None:
    """The same WorkOS membership changed to a role we do not know, or deactivated and reactivated with one: the
    member keeps the role this membership gave (the documented half of the rule)."""
    app, control = acme
    person = WorkOS(control, app)
    first = person.add(held)
    sign_in(app, person, held)
    person.set_role(first, slug)
    _store_and_drain(app, person.events)
    m = membership_of(app, person)
    assert m is not None
    assert (m.status, m.role) == ("active", held), (m.status, m.role, m.details)
    person.set_status(first, "deactivate")
    _store_and_drain(app, person.events[-1:])
    person.set_status(first, "reactivate")
    _store_and_drain(app, person.events[-1:])
    m = membership_of(app, person)
    assert m is not None
    assert (m.status, m.role) == ("active", held), m.details


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(held=st.sampled_from(["admin", "developer"]), slug=UNKNOWN_SLUGS, cycled=st.booleans(),
       order=st.permutations(range(5)))
# Events: m1 created, m1 deleted, m2 created, (cycled) m2 deactivated, m2 reactivated.
@example(held="admin", slug="member", cycled=False, order=[2, 0, 1, 3, 4])  # the re-add before the removal
@example(held="admin", slug="member", cycled=True, order=[1, 3, 2, 4, 0])  # first seen inactive, then reactivated
def test_a_re_add_holds_no_earlier_role_in_any_delivery_order(
        acme: tuple[Flask, EmulatorControl], held: str, slug: str, cycled: bool, order: list[int]) -> None:
    """Signed in as *held* before any of WorkOS's events was applied (the row knows no WorkOS id), removed and
    added again with *slug* (and, *cycled*, deactivated and reactivated): whatever order the events arrive in, the
    member ends active with the default role (a break-it review: the re-add delivered first kept the sign-in's
    role, and a re-add first seen inactive took the old role with it)."""
    app, control = acme
    person = WorkOS(control, app)
    first = person.add(held)
    sign_in(app, person, held)
    person.remove(first)
    again = person.add(slug)
    if cycled:
        person.set_status(again, "deactivate")
        person.set_status(again, "reactivate")
    events = person.events
    assert len(events) == (5 if cycled else 3)
    for i in [i for i in order if i < len(events)]:
        _store_and_drain(app, [events[i]])
    m = membership_of(app, person)
    assert m is not None
    assert (m.status, m.role) == ("active", _default_role(app)), (held, slug, order, m.details)


def test_an_invited_re_add_accepted_later_starts_at_the_default(acme: tuple[Flask, EmulatorControl]) -> None:
    """A re-add WorkOS first reports ``pending`` (an invitation), then active with a role we do not know: the
    default role, not the removed membership's."""
    app, control = acme
    person = WorkOS(control, app)
    first = person.add("admin")
    sign_in(app, person, "admin")
    person.remove(first)
    again = person.add("contractor")
    person.set_role(again, "member")
    created = {**person.events[-2], "data": {**person.events[-2]["data"], "status": "pending"}}
    _store_and_drain(app, person.events[:2])
    _store_and_drain(app, [created])
    m = membership_of(app, person)
    assert m is not None
    assert m.status != "active"
    _store_and_drain(app, person.events[-1:])
    m = membership_of(app, person)
    assert m is not None
    assert (m.status, m.role) == ("active", _default_role(app)), m.details
