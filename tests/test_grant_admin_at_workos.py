"""``grant-admin`` makes WorkOS agree before it grants here, so the person it names can sign in: a new user's
walk-through granted "the first admin" of an organization without SSO, and WorkOS, which knew no such user, let
nobody sign in with that email. Now the person exists in WorkOS User Management and holds an active ``admin``
membership of the organization (created, reactivated or given the role), then the grant here is made; run again,
it writes nothing at WorkOS. The proof is a sign-in with a code by email on AuthKit's hosted page."""

from __future__ import annotations

import re
from typing import Any

import httpx2
import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.auth_support import callback_path, start_login, sync_organizations
from tests.test_audit_cli import _cli

HOOLI = "hooli.test"


def _workos_members(emulator: Any, email: str) -> list[dict[str, Any]]:
    store = emulator.emulator.store
    users = [u["id"] for u in store.users.values() if u["email"] == email]
    return [dict(m) for m in store.memberships.values() if m["user_id"] in users]


def _sign_in_with_a_code(client: FlaskClient, emulator: Any, email: str) -> Any:
    with httpx2.Client(follow_redirects=False, timeout=10) as browser:
        page = browser.get(start_login(client, email=email))
        assert page.status_code == 200, page.text[:300]
        send = next(a for a in re.findall(r'action="([^"]+)"', page.text) if "/magic/" in a)
        sent = browser.post(emulator.url + send, data={"email": email})
        verify = next(a for a in re.findall(r'action="([^"]+)"', sent.text) if "/verify" in a)
        codes = httpx2.get(f"{emulator.url}/_emulator/magic_auth", params={"email": email},
                           headers={"Authorization": "Bearer sk_test_emulator"}).json()["data"]
        assert codes, f"WorkOS sent {email} no code: it does not know them"
        done = browser.post(emulator.url + verify.replace("&amp;", "&"),
                            data={"email": email, "code": codes[0]["code"]})
    assert done.status_code == 302, done.text[:300]
    return client.get(callback_path(done.headers["location"]))


def test_the_first_admin_of_an_organization_without_sso_signs_in(app: Flask, emulator: Any) -> None:
    sync_organizations(app)
    result = _cli(app, "grant-admin", HOOLI, "First.Boss@hooli.test")
    assert result.exit_code == 0, result.output
    assert "WorkOS: user" in result.output
    assert "created, admin membership created" in result.output
    assert "warning" not in result.output
    members = _workos_members(emulator, "first.boss@hooli.test")
    assert [(m["status"], m["role_slug"]) for m in members] == [("active", "admin")]
    client = app.test_client()
    assert _sign_in_with_a_code(client, emulator, "first.boss@hooli.test").status_code == 302
    me = client.get("/api/v1/me").get_json()
    assert (me["email"], me["role"]) == ("first.boss@hooli.test", "admin")
    again = _cli(app, "grant-admin", HOOLI, "first.boss@hooli.test")
    assert again.exit_code == 0, again.output
    assert "found, admin membership kept" in again.output
    assert _workos_members(emulator, "first.boss@hooli.test") == members  # nothing written at WorkOS


@pytest.mark.parametrize(("setup", "said"), [("viewer", "role changed"), ("inactive", "reactivated")])
def test_an_existing_workos_member_is_made_an_admin_there(app: Flask, emulator: Any, setup: str, said: str) -> None:
    sync_organizations(app)
    client = app.extensions["hatidata_workos"].client
    email = "member@hooli.test"
    [membership] = _workos_members(emulator, email)
    assert (membership["status"], membership["role_slug"]) == ("active", "viewer")
    if setup == "inactive":
        client.organization_membership.deactivate_organization_membership(membership["id"])
    result = _cli(app, "grant-admin", HOOLI, email)
    assert result.exit_code == 0, result.output
    assert f"found, admin membership {said}" in result.output
    assert [(m["id"], m["status"], m["role_slug"]) for m in _workos_members(emulator, email)] == [
        (membership["id"], "active", "admin")]


def test_a_refused_email_writes_nothing_at_workos(app: Flask, emulator: Any) -> None:
    sync_organizations(app)
    before = len(emulator.emulator.store.users)
    result = _cli(app, "grant-admin", HOOLI, "not-an-email")
    assert result.exit_code == 1
    assert "Not an email address" in result.output
    assert len(emulator.emulator.store.users) == before


def test_a_deleted_organization_is_refused_before_workos_is_asked(app: Flask, emulator: Any) -> None:
    """A break-it review: the grant in an organization deleted here was refused after WorkOS had made the person
    an admin member there."""
    from sqlalchemy import update

    from hatidata_auth.extensions import db
    from hatidata_auth.models import Organization, utcnow

    sync_organizations(app)
    with app.app_context():
        db.session.execute(update(Organization).where(Organization.name == "Hooli")
                           .values(status="deleted", deleted_at=utcnow()))
        db.session.commit()
        db.session.remove()
    before = (len(emulator.emulator.store.users), len(emulator.emulator.store.memberships))
    result = _cli(app, "grant-admin", HOOLI, "late.boss@hooli.test")
    assert result.exit_code == 1, result.output
    assert (len(emulator.emulator.store.users), len(emulator.emulator.store.memberships)) == before


def test_a_pending_invitation_granted_is_an_admin_once_accepted(app: Flask, emulator: Any) -> None:
    """A pending invitation at WorkOS is given the admin role there; WorkOS's word (its echo of that change) keeps
    the member inactive here, holding the admin role, until the invitation is accepted, and the command says so
    (a break-it review found the first admin inactive after a grant that said nothing of it)."""
    from tests.test_membership_rows_race import _store_and_drain

    sync_organizations(app)
    email = "member@hooli.test"
    [membership] = _workos_members(emulator, email)
    emulator.emulator.store.memberships[membership["id"]]["status"] = "pending"
    granted = _cli(app, "grant-admin", HOOLI, email)
    assert granted.exit_code == 0, granted.output
    assert "an invitation not accepted yet" in granted.output
    events = app.extensions["hatidata_workos"].client.events.list_events(
        events=["organization_membership.updated"], limit=100).data
    assert events, "WorkOS echoed the role change"
    _store_and_drain(app, [e.to_dict() for e in events])
    with app.app_context():
        from sqlalchemy import select

        from hatidata_auth.extensions import db
        from hatidata_auth.models import Membership, User

        row = db.session.execute(select(Membership.status, Membership.role).join(User, User.id == Membership.user_id)
                                 .where(User.email == email)).one()
        db.session.remove()
    assert tuple(row) == ("inactive", "admin")


def test_workos_word_before_the_grant_keeps_the_admin_whatever_our_clock(
        app: Flask, emulator_control: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The grant's decision is not older than WorkOS's version once WorkOS made the person an admin: WorkOS's word
    made before the grant, delivered after it, keeps the admin even when our clock is behind WorkOS's (it compared
    WorkOS's versions with our clock only: a demotion made at WorkOS before the grant undid it)."""
    from datetime import timedelta

    from hatidata_auth.models import utcnow
    from hatidata_auth.services import tenant_admin
    from tests.support.membership_word import ACME, WorkOS, membership_of, prepared_acme, sign_in
    from tests.test_membership_rows_race import _store_and_drain

    app, control = prepared_acme(app, emulator_control, with_admin=True)
    person = WorkOS(control, app)
    first = person.add("viewer")
    sign_in(app, person, "viewer")
    _store_and_drain(app, person.events)
    person.set_role(first, "developer")  # WorkOS's word before the grant, delivered after it
    before_grant = list(person.events)
    monkeypatch.setattr(tenant_admin, "utcnow", lambda: utcnow() - timedelta(seconds=60))  # our clock behind
    result = _cli(app, "grant-admin", ACME, person.email)
    assert result.exit_code == 0, result.output
    assert "admin membership role changed" in result.output
    _store_and_drain(app, before_grant)
    after = membership_of(app, person)
    assert after is not None
    assert (after.status, after.role) == ("active", "admin"), after.details


def test_an_email_on_another_organizations_verified_domain_is_warned_about(app: Flask, emulator: Any) -> None:
    """An operator's typo would give one tenant's admin to another tenant's person: the grant is made (an
    operator may mean it) and says whose domain the email is on."""
    sync_organizations(app)
    result = _cli(app, "grant-admin", HOOLI, "Contractor@Acme.test")
    assert result.exit_code == 0, result.output
    assert "warning: acme.test is a domain organization org_" in result.output
    assert "now also an admin of" in result.output
