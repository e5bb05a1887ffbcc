"""A role an admin changes here (``PATCH /api/v1/members/{id}``) is changed at WorkOS too, once committed, so
WorkOS's later word carries it. Break-it reviews: a demoted admin stayed an admin at WorkOS, and WorkOS's next,
unrelated word on the membership (a deactivation and reactivation, newer than the demotion) gave the admin role
back here; and with the WorkOS write inside the transaction, a change rolled back after it (a lock conflict) landed
later through WorkOS's echo, past the last-admin guard. WorkOS refusing, not holding the membership or
unavailable leaves the change here as it is (logged)."""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy import select

from hatidata_auth.causes import Actor, Cause
from hatidata_auth.extensions import db
from hatidata_auth.models import Membership
from hatidata_auth.roles import permissions_for
from hatidata_auth.services import api_keys as key_service
from tests.auth_support import add_fault
from tests.support.membership_word import WorkOS, acme_org, membership_of, prepared_acme, sign_in
from tests.support.servers import EmulatorControl
from tests.test_membership_rows_race import _store_and_drain


@pytest.fixture
def acme(app: Flask, emulator_control: EmulatorControl) -> tuple[Flask, EmulatorControl]:
    return prepared_acme(app, emulator_control, with_admin=True)


def _admin_key(app: Flask) -> dict[str, str]:
    with app.app_context():
        org = acme_org(db.session)
        admin = db.session.scalars(select(Membership).where(Membership.organization_id == org.id,
                                                            Membership.role == "admin")).first()
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


def test_workos_unavailable_leaves_the_change_here(acme: tuple[Flask, EmulatorControl], emulator: object) -> None:
    app, control = acme
    person = WorkOS(control, app)
    first = person.add("admin")
    m = sign_in(app, person, "admin")
    add_fault(emulator, "PUT", f"/user_management/organization_memberships/{first}", 503, count=10)
    assert _patch(app, m, "viewer") == 200
    after = membership_of(app, person)
    assert after is not None
    assert (after.status, after.role) == ("active", "viewer")


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
