"""The person a sign-in is (``services.sign_in_person``), on every database: one person per email
(``services.person_email``), and its two exceptions. The races are in ``tests/test_person_email_race.py``."""
from __future__ import annotations

import sqlite3

import pytest
from flask import Flask
from sqlalchemy import func, select, text
from sqlalchemy.exc import OperationalError

from hatidata_auth.causes import NO_REQUEST
from hatidata_auth.extensions import db
from hatidata_auth.models import AuditEvent, DirectoryUser, Membership, Organization, User, utcnow
from hatidata_auth.services import inbox, inbox_worker, person_email, sign_in_membership, sign_in_person
from tests.sql_support import sent_statements
from tests.support.people import Replay
from tests.support.servers import EmulatorControl, http_json
from tests.test_inbox_batch_scope import ACME, _prepare

EMAIL = "amara.lind@contractors.test"  # a domain no organization verified


@pytest.fixture
def acme(app: Flask) -> Organization:
    _prepare(app)
    with app.app_context():
        org = db.session.scalar(select(Organization).where(Organization.workos_organization_id == ACME))
        assert org is not None
        db.session.expunge(org)
        return org


def _sign_in(org: Organization, workos_user_id: str, email: str) -> User:
    person = sign_in_person.upsert(db.session(), org, {"id": workos_user_id, "email": email}, utcnow()).person
    db.session.commit()
    return person


def _actions(action: str) -> list[AuditEvent]:
    return list(db.session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def _holders(email: str) -> int:
    return int(db.session.scalar(select(func.count()).select_from(User).where(User.email == email)) or 0)


def test_an_email_workos_changed_moves_onto_the_person_audited(app: Flask, acme: Organization) -> None:
    with app.app_context():
        first = _sign_in(acme, "user_SIP_move", f"before.{EMAIL}")
        again = _sign_in(acme, "user_SIP_move", EMAIL)
        assert again.id == first.id
        assert again.email == EMAIL
        [changed] = _actions("user.email_changed")
        assert changed.target_id == first.id
        assert changed.details["from"] == f"before.{EMAIL}"
        assert changed.details["to"] == EMAIL


def test_an_email_another_person_holds_stays_theirs(app: Flask, acme: Organization) -> None:
    """Two people are never merged: the person keeps the old email, and the refusal is audited."""
    with app.app_context():
        db.session.add(User(email=EMAIL))  # a directory's person, say
        db.session.commit()
        person = _sign_in(acme, "user_SIP_held", f"before.{EMAIL}")
        person = _sign_in(acme, "user_SIP_held", EMAIL)
        assert person.email == f"before.{EMAIL}"
        assert _holders(EMAIL) == 1
        [refused] = _actions("user.email_change_refused")
        assert refused.outcome == "failure"
        assert refused.details["reason"] == "email_held_by_another_person"


def test_an_email_on_another_organization_s_domain_is_a_person_of_its_own(app: Flask, acme: Organization) -> None:
    """The first exception: Globex verified globex.test, so signing in to Acme with it neither links to nor is kept
    from Globex's person."""
    email = "omar.haddad@globex.test"
    with app.app_context():
        db.session.add(User(email=email))
        db.session.commit()
        person = _sign_in(acme, "user_SIP_foreign", email)
        assert person.email == email
        assert _holders(email) == 2


def test_a_second_workos_user_with_the_email_is_a_person_of_its_own(app: Flask, acme: Organization) -> None:
    """The second exception: a person a WorkOS user claimed is never handed to another (deleted at WorkOS and
    invited again, say)."""
    with app.app_context():
        first = _sign_in(acme, "user_SIP_one", EMAIL)
        second = _sign_in(acme, "user_SIP_two", EMAIL)
        assert second.id != first.id
        assert db.session.get(User, first.id).workos_user_id == "user_SIP_one"


def test_a_person_a_directory_lists_keeps_the_directory_s_email(app: Flask, acme: Organization) -> None:
    """The directory speaks for the email (and names) of a person it lists: WorkOS's older email at a sign-in does not
    flip it back until the next resync (break-it review)."""
    with app.app_context():
        _listed(acme, _sign_in(acme, "user_SIP_listed", EMAIL))
        person = _sign_in(acme, "user_SIP_listed", f"older.{EMAIL}")
        assert person.email == EMAIL
        assert not _actions("user.email_changed")


def test_a_tombstoned_directory_user_lists_nobody(app: Flask, acme: Organization) -> None:
    """A deleted directory tombstones its users at once and deactivates its members a chunk at a time; a member not
    yet deactivated is listed by no directory, so a sign-in writes the person's email and names (as
    ``directory_names.names_listed_elsewhere`` counts it)."""
    with app.app_context():
        du = _listed(acme, _sign_in(acme, "user_SIP_tomb", EMAIL))
        du.deleted_at = utcnow()
        db.session.commit()
        person = sign_in_person.upsert(db.session(), acme, {"id": "user_SIP_tomb", "email": f"new.{EMAIL}",
                                                            "first_name": "Amara", "last_name": "Lind"},
                                       utcnow()).person
        db.session.commit()
        assert (person.email, person.first_name, person.last_name) == (f"new.{EMAIL}", "Amara", "Lind")


def _listed(org: Organization, person: User) -> DirectoryUser:
    """*person* as a live member of *org* through a live directory user."""
    du = DirectoryUser(organization_id=org.id, workos_id=f"directory_user_{person.id}", directory_id="directory_SIP",
                       email=person.email, user_id=person.id)
    db.session.add_all([du, Membership(organization_id=org.id, user_id=person.id, source="directory",
                                       status="active", role="viewer", role_source="mapping",
                                       directory_user_id=du.workos_id)])
    db.session.commit()
    return du


def test_an_organization_membership_event_never_hands_over_a_claimed_person(
        app: Flask, acme: Organization, emulator_control: EmulatorControl) -> None:
    """WorkOS's second user with the email of a person its first user claimed gets a person of its own, as at a
    sign-in: before, the event gave the first user's person the second user's membership (break-it review)."""
    replay = Replay(emulator_control, app)
    api = f"{emulator_control.base_url}/user_management"
    with app.app_context():
        first = _sign_in(acme, "user_SIP_first_claimant", EMAIL).id
    second = http_json("POST", f"{api}/users", {"email": EMAIL}, emulator_control.headers)[1]
    http_json("POST", f"{api}/organization_memberships", {"user_id": second["id"], "organization_id": ACME},
              emulator_control.headers)
    with app.app_context():
        for payload in replay.new_events():
            if payload["event"].startswith("organization_membership."):
                inbox.store(db.session(), payload)
        inbox_worker.drain(db.session(), app.extensions["hatidata_workos"].client)
        theirs = db.session.scalar(select(User).where(User.workos_user_id == second["id"]))
        assert theirs is not None
        assert theirs.id != first
        assert db.session.scalar(select(Membership.user_id).where(Membership.organization_id == acme.id,
                                                                  Membership.status == "active")) == theirs.id


def test_holding_an_email_for_an_organization_keeps_other_writers_out(app: Flask, acme: Organization) -> None:
    """What the look after :func:`person_email.hold_email` relies on, per database: on PostgreSQL the email's lock
    (and the organization's row, key-shared); on SQLite the database's write lock (pysqlite begins a transaction at
    the first write only, so without it a look would run outside the writer's turn)."""
    with app.app_context():
        session = db.session()
        stamp = text("SELECT updated_at FROM organizations WHERE id = :id")
        before = session.scalar(stamp, {"id": acme.id})
        assert person_email.hold_email(session, EMAIL, organization_id=acme.id)
        assert session.scalar(stamp, {"id": acme.id}) == before  # the turn is taken without changing the row
        with db.engine.connect() as other:
            if other.dialect.name == "postgresql":
                assert not other.scalar(text("SELECT pg_try_advisory_xact_lock(1162693632, hashtext(:e))"),
                                        {"e": EMAIL})
                with pytest.raises(OperationalError):
                    other.execute(text("SELECT id FROM organizations WHERE id = :id FOR UPDATE NOWAIT"),
                                  {"id": acme.id})
            else:
                raw = other.connection.dbapi_connection
                assert isinstance(raw, sqlite3.Connection)
                raw.execute("PRAGMA busy_timeout = 0")
                with pytest.raises(sqlite3.OperationalError, match="locked"):
                    raw.execute("BEGIN IMMEDIATE")
            other.rollback()
        session.rollback()
        assert not person_email.hold_email(session, "", organization_id=acme.id)


def test_a_members_sign_in_reads_the_membership_and_holds_its_key_once(app: Flask, acme: Organization) -> None:
    """``sign_in_person.upsert`` reads the member's membership under its member key (the lock order) and hands it
    on: the login writes that one, without a second look nor a second hold."""
    def keep(statement: str) -> bool:
        flat = " ".join(statement.split())
        loads = flat.startswith("SELECT memberships.id, ") and " FROM memberships WHERE " in flat  # the whole row
        return loads or "hashtextextended" in flat

    with app.app_context():
        _listed(acme, _sign_in(acme, "user_SIP_once", EMAIL))
        db.session.remove()
        with sent_statements(app, keep) as sent:
            s = db.session()
            signed_in = sign_in_person.upsert(s, s.merge(acme), {"id": "user_SIP_once", "email": EMAIL}, utcnow())
            membership = sign_in_membership.upsert(s, app.extensions["hatidata_workos"].client, s.merge(acme),
                                                   signed_in, None, NO_REQUEST)
            s.commit()
        assert membership is signed_in.membership
        holds = [statement for statement in sent if "hashtextextended" in statement]
        postgres = db.engine.dialect.name == "postgresql"
        assert len(holds) == (1 if postgres else 0), sent
        # the look by person, and on PostgreSQL the reload once the key is held
        assert len(sent) - len(holds) == (2 if postgres else 1), sent
