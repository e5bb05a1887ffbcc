"""A directory writes a person's names only where it speaks for the person (``directory_names.speaks_for_names``):
its organization verified the email's domain, or every other organization that still has the person as a live
member lists it with the same names (none: the person is this organization's alone).

Before, every directory listing a person renamed it: one tenant's IdP changed the name every other tenant sees
(a member list, the person's own profile), and two directories listing one person with different names renamed it
in turn, so that a resync of each always found a difference. Delivered by signed webhooks and by a resync after
missed events; the rule checked over random names, for a person on a domain nobody verified (shared by two
directories) and one on a domain its directory's organization verified (also a member elsewhere).
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from hatidata_auth.models import AuditEvent, DirectoryUser, Membership, User
from hatidata_auth.services import reconcile
from tests.conftest import _empty_tables
from tests.support.people import Replay, directory_user, person_of, prepare
from tests.support.servers import EmulatorControl

ACME_DIR = "directory_01HTDQ8D100000000000000001"
SHARED_IN_ACME = "directory_user_01HTDQ8F100000000000000009"  # the demo's contractor on partners.test
SHARED_IN_GLOBEX = "directory_user_01HTDQ8F200000000000000009"  # the same person, in Globex's directory
DELIVERIES = ("webhooks", "resync")

names = st.tuples(st.text(st.characters(whitelist_categories=("Lu", "Ll")), min_size=1, max_size=12),
                  st.text(st.characters(whitelist_categories=("Lu", "Ll")), min_size=1, max_size=12))


def _names(user: User) -> tuple[str | None, str | None]:
    return user.first_name, user.last_name


def _renames_of(session: Any, user_id: str) -> list[str | None]:
    return list(session.scalars(select(AuditEvent.organization_id).where(
        AuditEvent.action == "user.updated", AuditEvent.target_id == user_id)))


@pytest.fixture
def world(app: Flask, emulator: Any) -> Any:
    """Fresh tables and demo organizations for each example (Hypothesis runs many in one test)."""
    from hatidata_auth.extensions import db

    def make() -> tuple[Any, Any, dict[str, Any], Replay]:
        emulator.reset()
        _empty_tables(app)
        session = db.session
        workos_client = app.extensions["hatidata_workos"].client
        return session, workos_client, prepare(session, workos_client), Replay(EmulatorControl(emulator.url), app)

    with app.app_context():
        yield make
        db.session.rollback()


@pytest.mark.parametrize("how", DELIVERIES)
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(acme_names=names, other_names=names, agree=st.booleans())
def test_a_person_of_two_organizations_is_renamed_only_when_both_agree(
        how: str, acme_names: tuple[str, str], other_names: tuple[str, str], agree: bool, world: Any) -> None:
    globex_names = acme_names if agree else other_names
    assume(agree or acme_names != other_names)
    session, workos_client, orgs, replay = world()
    acme, globex = orgs["acme.test"].id, orgs["globex.test"].id
    _, person = person_of(session, acme, SHARED_IN_ACME)
    before = _names(person)
    for directory_user_id, (first, last) in ((SHARED_IN_ACME, acme_names), (SHARED_IN_GLOBEX, globex_names)):
        replay.ctl("PATCH", f"/directory_users/{directory_user_id}", {"first_name": first, "last_name": last})
    replay.apply(how, session, workos_client, acme)
    replay.apply(how, session, workos_client, globex)

    expected = acme_names if agree else before
    session.expire_all()
    assert _names(session.get(User, person.id)) == expected
    # The first directory's rename waits for the second's; a disagreement renames nobody.
    assert _renames_of(session, person.id) == ([globex] if agree and expected != before else [])
    # Each organization's directory user holds what its own directory says.
    assert (directory_user(session, acme, SHARED_IN_ACME).first_name,
            directory_user(session, acme, SHARED_IN_ACME).last_name) == acme_names
    assert (directory_user(session, globex, SHARED_IN_GLOBEX).first_name,
            directory_user(session, globex, SHARED_IN_GLOBEX).last_name) == globex_names
    # Nothing flips back and forth: each resync, in turn, finds nothing to repair.
    for org_id in (acme, globex, acme, globex):
        report = reconcile.full_resync(session, workos_client, organization_id=org_id)
        assert report.differences == 0, report.examples
    session.expire_all()
    assert _names(session.get(User, person.id)) == expected


@pytest.mark.parametrize("how", DELIVERIES)
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(new_names=names)
def test_the_domains_organization_renames_its_member_who_belongs_elsewhere_too(
        how: str, new_names: tuple[str, str], world: Any) -> None:
    session, workos_client, orgs, replay = world()
    acme, globex = orgs["acme.test"].id, orgs["globex.test"].id
    uid = session.scalar(select(DirectoryUser.workos_id).where(DirectoryUser.organization_id == acme,
                                                               DirectoryUser.email == "viewer@acme.test"))
    _, person = person_of(session, acme, uid)
    session.add(Membership(organization_id=globex, user_id=person.id, role="viewer", source="manual"))
    session.commit()

    replay.ctl("PATCH", f"/directory_users/{uid}", {"first_name": new_names[0], "last_name": new_names[1]})
    replay.apply(how, session, workos_client, acme)

    session.expire_all()
    assert _names(session.get(User, person.id)) == new_names  # Acme verified acme.test: it speaks for the address
    assert _renames_of(session, person.id) == [acme]
    report = reconcile.full_resync(session, workos_client, organization_id=acme)
    assert report.differences == 0, report.examples


@pytest.mark.parametrize("how", DELIVERIES)
def test_a_person_of_one_organization_follows_its_directory(how: str, world: Any) -> None:
    session, workos_client, orgs, replay = world()
    acme = orgs["acme.test"].id
    created = replay.ctl("POST", f"/directories/{ACME_DIR}/users",
                         {"email": "imani.okafor@partners.test", "first_name": "Imani", "last_name": "Okafor",
                          "groups": ["HatiData Viewers"]})
    replay.deliver()
    _, person = person_of(session, acme, created["id"])
    replay.ctl("PATCH", f"/directory_users/{created['id']}", {"first_name": "Imani", "last_name": "Okafor-Reyes"})
    replay.apply(how, session, workos_client, acme)

    session.expire_all()
    assert _names(session.get(User, person.id)) == ("Imani", "Okafor-Reyes")  # nobody else sees this person
    assert _renames_of(session, person.id) == [acme]
