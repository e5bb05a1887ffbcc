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

import itertools
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from hatidata_auth.causes import Actor, Cause
from hatidata_auth.extensions import db
from hatidata_auth.models import AuditEvent, Membership, OrganizationAlert
from hatidata_auth.services import alerts, tenant_admin, workos_memberships
from tests.support.membership_word import (
    TOLERANCE,
    UNKNOWN_SLUGS,
    WorkOS,
    acme_org,
    membership_of,
    mirror,
    prepared_acme,
    remove_here,
    sign_in,
)
from tests.support.servers import EmulatorControl
from tests.test_membership_rows_race import _store_and_drain

SLUGS = st.sampled_from(UNKNOWN_SLUGS)


@pytest.fixture
def acme(app: Flask, emulator_control: EmulatorControl) -> tuple[Flask, EmulatorControl]:
    """Acme with an admin, in an environment whose roles include the unknown slugs."""
    return prepared_acme(app, emulator_control, with_admin=True)


@pytest.fixture
def bare_acme(app: Flask, emulator_control: EmulatorControl) -> tuple[Flask, EmulatorControl]:
    """Acme with no admin yet, in the same environment."""
    return prepared_acme(app, emulator_control, with_admin=False)


def _default_role(app: Flask) -> str:
    with app.app_context():
        role = acme_org(db.session).default_role
        db.session.remove()
    assert role is not None
    return str(role)


@settings(max_examples=16, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(held=st.sampled_from(["admin", "developer"]), removed_by=st.sampled_from(["workos", "admin here"]),
       arrives_by=st.sampled_from(["events", "sign-in"]), slug=SLUGS)
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
@given(held=st.sampled_from(["admin", "developer"]), slug=SLUGS)
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
@given(held=st.sampled_from(["admin", "developer"]), slug=SLUGS, cycled=st.booleans(),
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


# --- grants here that the rule keeps, and what a re-add seen inactive records (helper-129's repros) -------------


def _grant_admin(app: Flask, email: str) -> None:
    """``hatidata grant-admin``'s service: the organization's first admin, before WorkOS knows the person."""
    with app.app_context():
        s = db.session()
        tenant_admin.grant_admin(s, organization_id=acme_org(s).id, email=email, actor=Actor.system("cli"))
        s.commit()
        db.session.remove()


def _made_admin_here(app: Flask, m: Membership) -> None:
    """An admin of Acme makes the member an admin (``PATCH /api/v1/members/<id>``'s service)."""
    with app.app_context():
        tenant_admin.change_member_role(db.session(), app.extensions["hatidata_workos"].client,
                                        organization_id=m.organization_id, membership_id=m.id, role="admin",
                                        cause=Cause.by(Actor("user", "usr_role_admin", "it@acme.test")))
        db.session.commit()
        db.session.remove()


def test_a_grant_here_survives_the_first_workos_membership_with_a_role_we_do_not_know(
        bare_acme: tuple[Flask, EmulatorControl]) -> None:
    """``grant-admin`` made the person the first admin; WorkOS then adds them with its default slug (not ours):
    their first and only membership, which the grant goes on under (a version with clocks reset it)."""
    app, control = bare_acme
    person = WorkOS(control, app)
    _grant_admin(app, person.email)
    person.add("member")
    _store_and_drain(app, person.events)
    m = membership_of(app, person)
    assert m is not None
    assert (m.status, m.role, m.role_source) == ("active", "admin", "manual"), m.details


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
@pytest.mark.parametrize("re_add_slug", ["member", "developer"])
def test_a_grant_here_removed_and_re_added_at_workos_ends_alike_in_any_delivery_order(
        bare_acme: tuple[Flask, EmulatorControl], order: tuple[int, ...], re_add_slug: str) -> None:
    """``grant-admin`` made the person the first admin; WorkOS added them (m1, a slug we do not know), removed
    them and added them again (m2, *re_add_slug*). In every order of the three events the person ends as the re-add
    makes them: the default role for a slug we do not know, WorkOS's role for ours. (m2's ``created`` delivered
    first was taken as the grant's own membership, and the admin kept; m1's late deletion now ends that.)"""
    app, control = bare_acme
    person = WorkOS(control, app)
    _grant_admin(app, person.email)
    first = person.add("contractor")
    person.remove(first)
    again = person.add(re_add_slug)
    events = person.events
    assert len(events) == 3
    for i in order:
        _store_and_drain(app, [events[i]])
    m = membership_of(app, person)
    assert m is not None
    expected = (_default_role(app), "default") if re_add_slug == "member" else ("developer", "idp")
    assert (m.status, m.role, m.role_source, m.workos_membership_id) == ("active", *expected, again), \
        (order, m.details)
    assert workos_memberships.TRUSTED not in (m.details or {}), m.details  # m2 is known as a re-add now


def test_an_admins_grant_here_survives_the_late_created_of_the_same_membership(
        acme: tuple[Flask, EmulatorControl]) -> None:
    """Added at WorkOS with a slug we do not know, signed in (the default role), made an admin here at once; the
    same membership's late ``created`` keeps the grant."""
    app, control = acme
    person = WorkOS(control, app)
    person.add("member")
    m = sign_in(app, person, "member")
    assert (m.role, m.workos_membership_id) == (_default_role(app), person.events[0]["data"]["id"])
    _made_admin_here(app, m)
    _store_and_drain(app, person.events)
    m2 = membership_of(app, person)
    assert m2 is not None
    assert (m2.status, m2.role) == ("active", "admin"), m2.details


def test_a_first_sign_in_workos_fails_to_list_for_still_signs_in(acme: tuple[Flask, EmulatorControl],
                                                                 emulator: Any) -> None:
    """WorkOS failing the first sign-in's listing: the sign-in is let in, its row knowing no WorkOS id (the
    documented fallback: a grant here goes on under any membership while active)."""
    from tests.auth_support import add_fault

    app, control = acme
    person = WorkOS(control, app)
    person.add("developer")
    add_fault(emulator, "GET", "/user_management/organization_memberships", 503, count=1)
    m = sign_in(app, person, "developer")
    assert (m.status, m.role, m.workos_membership_id) == ("active", "developer", None)


def test_a_re_add_seen_pending_deprovisions_the_last_admin_audited_and_alerted(
        bare_acme: tuple[Flask, EmulatorControl]) -> None:
    """The only admin is removed at WorkOS and invited again with a slug we do not know; the invitation's pending
    ``created`` arrives first: the deprovisioning is audited from ``admin`` and the organization is alerted that no
    admin is left (a version wrote the new role before ``set_access`` and hid both)."""
    app, control = bare_acme
    person = WorkOS(control, app)
    first = person.add("admin")
    sign_in(app, person, "admin")
    person.remove(first)
    person.add("contractor")
    created = {**person.events[-1], "data": {**person.events[-1]["data"], "status": "pending"}}
    _store_and_drain(app, [created])
    m = membership_of(app, person)
    assert m is not None
    assert (m.status, m.role) == ("inactive", _default_role(app))
    with app.app_context():
        s = db.session()
        org = acme_org(s)
        previous = s.scalars(select(AuditEvent.details["previous_role"].as_string()).where(
            AuditEvent.organization_id == org.id, AuditEvent.action == "membership.deprovisioned",
            AuditEvent.target_id == m.id)).all()
        alert = s.scalar(select(OrganizationAlert.id).where(
            OrganizationAlert.organization_id == org.id, OrganizationAlert.kind == alerts.NO_ACTIVE_ADMIN,
            OrganizationAlert.resolved_at.is_(None)))
        db.session.remove()
    assert previous == ["admin"]
    assert alert is not None


# --- a sign-in's row made from WorkOS's present membership (helper-130's repros) ----------------------------------


def test_a_sign_in_after_a_re_add_takes_the_re_adds_role_not_the_tokens(acme: tuple[Flask, EmulatorControl]
                                                                         ) -> None:
    """The token says admin (the code was exchanged under m1); WorkOS removed m1 and added m2 with a slug we do not
    know before the sign-in asked it: the row is made from m2, with the default role, and m1's late events (m2's
    ``created`` first) change nothing."""
    app, control = acme
    person = WorkOS(control, app)
    first = person.add("admin")
    person.remove(first)
    again = person.add("member")
    m = sign_in(app, person, "admin")
    assert (m.role, m.workos_membership_id) == (_default_role(app), again)
    created1, deleted1, created2 = person.events
    for event in (created2, created1, deleted1):
        _store_and_drain(app, [event])
    m2 = membership_of(app, person)
    assert m2 is not None
    assert (m2.status, m2.role) == ("active", _default_role(app)), m2.details


def test_the_events_a_sign_in_was_made_past_change_nothing(acme: tuple[Flask, EmulatorControl]) -> None:
    """WorkOS deactivated and reactivated m1 before the first sign-in; the row is made from m1 at its newest
    version, so m1's older events (the deactivation included) neither deactivate the member nor undo the admin's
    grant made here since; and the same version delivered again is old news too."""
    app, control = acme
    person = WorkOS(control, app)
    first = person.add("developer")
    person.set_status(first, "deactivate")
    person.set_status(first, "reactivate")
    m = sign_in(app, person, "developer")
    assert m.workos_membership_id == first
    _made_admin_here(app, m)
    for event in person.events:  # created, deactivated, reactivated (the version the row was made at)
        _store_and_drain(app, [event])
    m2 = membership_of(app, person)
    assert m2 is not None
    assert (m2.status, m2.role, m2.role_source) == ("active", "admin", "manual"), m2.details


def test_a_mirrored_row_is_made_from_the_membership_workos_lists(acme: tuple[Flask, EmulatorControl]) -> None:
    """The sign-in's mirroring of the person's other memberships makes its rows as a first sign-in does: the
    listed membership's id and version, so its older events neither deactivate the member nor undo the admin's
    grant made here since."""
    from hatidata_auth.models import User

    app, control = acme
    person = WorkOS(control, app)
    first = person.add("developer")
    person.set_status(first, "deactivate")
    person.set_status(first, "reactivate")
    with app.app_context():
        user = User(email=person.email, workos_user_id=person.user_id)
        db.session.add(user)
        db.session.commit()
        user_id = user.id
        db.session.remove()
    mirror(app, person, user_id)
    m = membership_of(app, person)
    assert m is not None
    assert (m.status, m.role, m.workos_membership_id) == ("active", "developer", first)
    _made_admin_here(app, m)
    for event in person.events:
        _store_and_drain(app, [event])
    m2 = membership_of(app, person)
    assert m2 is not None
    assert (m2.status, m2.role, m2.role_source) == ("active", "admin", "manual"), m2.details


def test_a_re_add_seen_pending_keeps_no_manual_source(acme: tuple[Flask, EmulatorControl]) -> None:
    """Made admin here (``manual``) under m1; WorkOS removed m1 and invited the person again (m2 pending, then
    active with a slug we do not know): the dormant default role comes with its own source, so the member is not a
    ``manual`` viewer whom sign-ins would leave as an admin's decision (a break-it review)."""
    app, control = acme
    person = WorkOS(control, app)
    first = person.add("developer")
    _made_admin_here(app, sign_in(app, person, "developer"))
    person.remove(first)
    again = person.add("contractor")
    person.set_role(again, "member")
    created1, deleted1, created2, updated2 = person.events
    for event in ({**created2, "data": {**created2["data"], "status": "pending"}}, updated2, created1, deleted1):
        _store_and_drain(app, [event])
    m = membership_of(app, person)
    assert m is not None
    with app.app_context():
        sources = db.session.scalars(select(AuditEvent.details["role_source"].as_string()).where(
            AuditEvent.action == "membership.activated", AuditEvent.target_id == m.id).order_by(AuditEvent.seq)).all()
        db.session.remove()
    assert (m.status, m.role, m.role_source) == ("active", _default_role(app), "default"), m.details
    assert sources[-1] == "default", sources
