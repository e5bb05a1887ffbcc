"""A role an admin changes here is changed at WorkOS too, so WorkOS's later word carries it. A break-it review: a
demoted admin stayed an admin at WorkOS, and WorkOS's next, unrelated word on the membership (a deactivation and
reactivation, newer than the demotion) gave the admin role back here. WorkOS refusing the slug (an environment
without our roles) or no longer holding the membership leaves the change here as it is; WorkOS unavailable makes
the change fail as a whole (nothing changed here)."""

from __future__ import annotations

import pytest
from flask import Flask

from hatidata_auth.causes import Actor, Cause
from hatidata_auth.extensions import db
from hatidata_auth.models import Membership
from hatidata_auth.services import tenant_admin
from hatidata_auth.workos import WorkOSUnavailable
from tests.auth_support import add_fault
from tests.support.membership_word import WorkOS, membership_of, prepared_acme, sign_in
from tests.support.servers import EmulatorControl
from tests.test_membership_rows_race import _store_and_drain


@pytest.fixture
def acme(app: Flask, emulator_control: EmulatorControl) -> tuple[Flask, EmulatorControl]:
    return prepared_acme(app, emulator_control, with_admin=True)


def _change(app: Flask, m: Membership, role: str) -> None:
    with app.app_context():
        try:
            tenant_admin.change_member_role(db.session(), app.extensions["hatidata_workos"].client,
                                            organization_id=m.organization_id, membership_id=m.id, role=role,
                                            cause=Cause.by(Actor("user", "usr_role_admin", "it@acme.test")))
            db.session.commit()
        finally:
            db.session.rollback()
            db.session.remove()


@pytest.mark.parametrize("to", ["developer", "viewer"])
def test_a_demotion_here_is_the_role_workos_carries_next(acme: tuple[Flask, EmulatorControl], to: str) -> None:
    app, control = acme
    person = WorkOS(control, app)
    first = person.add("admin")
    m = sign_in(app, person, "admin")
    assert (m.role, m.workos_membership_id) == ("admin", first)
    _change(app, m, to)
    person.set_status(first, "deactivate")
    person.set_status(first, "reactivate")
    assert person.events[-1]["data"]["role"]["slug"] == to  # WorkOS carries the role set here
    _store_and_drain(app, person.events)
    after = membership_of(app, person)
    assert after is not None
    assert (after.status, after.role) == ("active", to), after.details


def test_workos_unavailable_changes_nothing(acme: tuple[Flask, EmulatorControl], emulator: object) -> None:
    app, control = acme
    person = WorkOS(control, app)
    first = person.add("admin")
    m = sign_in(app, person, "admin")
    add_fault(emulator, "PUT", f"/user_management/organization_memberships/{first}", 503, count=10)
    with pytest.raises(WorkOSUnavailable):
        _change(app, m, "viewer")
    after = membership_of(app, person)
    assert after is not None
    assert (after.status, after.role) == ("active", "admin")
