"""The directory users a batch's events update are locked and read together (``services.events.batch_users``,
issue #14): one statement per organization instead of one per event, and the same outcome (the property of
``tests/test_inbox_batch_scope.py`` covers it over any history; here the read itself and what keeps it current)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import select

from hatidata_auth.extensions import db
from hatidata_auth.models import Membership, Organization
from hatidata_auth.services.events import batch_users
from hatidata_auth.services.events.batch_scope import BatchScope
from tests.sql_support import sent_statements
from tests.test_inbox_batch_scope import ACME, GLOBEX, _membership, _scenario, _state, _user


@pytest.fixture
def user_reads(app: Flask) -> Iterator[list[str]]:
    """Every statement that reads directory users by their WorkOS id, from now on (whitespace collapsed)."""
    def keep(statement: str) -> bool:
        flat = " ".join(statement.split())
        return flat.startswith("SELECT directory_users.") and "directory_users.workos_id" in flat

    with sent_statements(app, keep) as found:
        yield found


def test_wanted_names_the_looked_up_users_of_organizations_with_several() -> None:
    events = [_user(ACME, 1, "own"), _user(ACME, 2, "own", deleted=True), _user(GLOBEX, 1, "own"),
              {**_user(ACME, 3, "own"), "event": "dsync.user.created"}, _membership(4, True), {"event": "x"}]
    assert batch_users.wanted(events) == {ACME: frozenset({"directory_user_A1", "directory_user_A2"})}


def test_a_batch_of_updates_reads_its_users_in_one_statement(app: Flask, user_reads: list[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    stored = tuple(_user(ACME, n, "own") for n in range(5))
    updates = [_user(ACME, n, "own", "suspended" if n % 2 else "active") for n in range(5)]
    updates.append(_user(ACME, 9, "own"))  # not stored: its event reads (and inserts) it alone
    user_reads.clear()
    batched = _scenario(app, *updates, before=stored)
    together = [s for s in user_reads if " IN (" in s]
    one_by_one = len(user_reads) - len(together)
    with monkeypatch.context() as patched:
        patched.setattr(batch_users, "wanted", lambda payloads: {})
        user_reads.clear()
        assert _scenario(app, *updates, before=stored) == batched, "the same outcome, read one by one"
    assert len(together) == 1
    assert len(user_reads) - one_by_one >= 5, "the five stored users' reads are the one statement"
    assert batched["directory_users"][(ACME, "directory_user_A1")][1] == "suspended"
    assert batched["directory_users"][(ACME, "directory_user_A9")][1] == "active"


def test_an_entry_is_not_used_once_its_persons_membership_was_written(app: Flask) -> None:

    _scenario(app, _user(ACME, 1, "own"), _user(ACME, 2, "own"), before=(_user(ACME, 1, "own"),
                                                                       _user(ACME, 2, "own")))
    with app.app_context():
        session = db.session()
        org = session.scalar(select(Organization).where(Organization.workos_organization_id == ACME))
        assert org is not None
        session.execute(select(Organization).where(Organization.id == org.id).with_for_update())
        batch = BatchScope({ACME: frozenset({"directory_user_A1", "directory_user_A2"})})
        scope = batch.event(session)
        scope.hold(ACME, org, exclusive=False)
        first = scope.locked_user(org, "directory_user_A1")
        assert first is not None
        assert first.membership is not None
        assert scope.locked_user(org, "directory_user_A2") is not None
        membership = session.get(Membership, first.membership.id)
        assert membership is not None
        membership.role = "admin"  # pending: the entry no longer says what a read would
        assert scope.locked_user(org, "directory_user_A1") is None
        session.flush()  # written: still not
        assert scope.locked_user(org, "directory_user_A1") is None
        assert scope.locked_user(org, "directory_user_A2") is not None  # another person's: current
        first.directory_user.user_id = None  # unlinked: not current either
        assert scope.locked_user(org, "directory_user_A1") is None
        session.rollback()
        db.session.remove()
    assert _state(app)


def test_a_person_both_directories_list_is_read_the_same_batched_or_not(app: Flask,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Acme's A0 and Globex's G0 are one person (one email); Acme's A1 fills the batch's read. The batch updates
    A1, suspends G0 (the person's Globex membership is written) and moves A0 to another email (the person is
    left to G0): A0's entry, read before, no longer says what a read would, and the event reads again."""
    before = (_user(ACME, 0, "shared.test", person="p0"), _user(ACME, 1, "own"),
              _user(GLOBEX, 0, "shared.test", person="p0"))
    batch = (_user(ACME, 1, "own", "suspended"), _user(GLOBEX, 0, "shared.test", "suspended", person="p0"),
             _user(ACME, 0, "shared.test", person="p0moved"))
    batched = _scenario(app, *batch, before=before)
    with monkeypatch.context() as patched:
        patched.setattr(batch_users, "wanted", lambda payloads: {})
        assert _scenario(app, *batch, before=before) == batched, "the same outcome, read one by one"
    _scenario(app, before=before)
    shared = _state(app)["directory_users"]
    assert shared[(ACME, "directory_user_A0")][3] == shared[(GLOBEX, "directory_user_G0")][3] == "p0@shared.test"
    users = batched["directory_users"]
    assert users[(ACME, "directory_user_A0")][0] == "p0moved@shared.test"
    assert users[(GLOBEX, "directory_user_G0")][1] == "suspended"
    assert users[(ACME, "directory_user_A1")][1] == "suspended"
