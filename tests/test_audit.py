"""The audit log's hash chain."""

from __future__ import annotations

import contextlib
import threading
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update
from sqlalchemy.exc import DataError

from hatidata_auth.causes import Actor, Cause, RequestInfo
from hatidata_auth.models import AuditEvent, Organization
from hatidata_auth.services import audit
from hatidata_auth.unit_of_work import AppSession
from tests.audit_support import tampering


def _org(db_session: Any, name: str) -> Organization:
    org = Organization(name=name, domains=[f"{name.lower()}.test"])
    db_session.add(org)
    db_session.flush()
    return org


def _record_three(db_session: Any, org: Organization) -> None:
    for action in ("session.created", "api_key.created", "session.revoked"):
        audit.record(db_session, action=action, cause=Cause.by(Actor(type="user", id="usr_1", email="a@x.test"),
                                                               RequestInfo(ip_address="10.0.0.1", user_agent="pytest",
                                                                           request_id="r1")),
                     organization_id=org.id, target_type="session", target_id="ses_1")
    db_session.commit()


def test_events_chain_per_organization(db_session: Any) -> None:
    acme, globex = _org(db_session, "Acme"), _org(db_session, "Globex")
    _record_three(db_session, acme)
    _record_three(db_session, globex)
    events = db_session.scalars(select(AuditEvent).where(AuditEvent.organization_id == acme.id)
                                .order_by(AuditEvent.seq)).all()
    assert [e.seq for e in events] == [1, 2, 3]
    assert events[0].prev_hash == audit.GENESIS_HASH
    assert events[1].prev_hash == events[0].hash
    assert audit.verify_organization(db_session, acme.id).ok
    report = audit.verify_organization(db_session, globex.id)
    assert report.ok
    assert report.checked == 3


def test_edited_event_is_detected(db_session: Any) -> None:
    org = _org(db_session, "Acme")
    _record_three(db_session, org)
    with tampering(db_session):
        db_session.execute(update(AuditEvent).where(AuditEvent.organization_id == org.id, AuditEvent.seq == 2)
                           .values(outcome="failure"))
    report = audit.verify_organization(db_session, org.id)
    assert report.first_broken_seq == 2
    assert "edited" in (report.problem or "")


def test_deleted_event_is_detected(db_session: Any) -> None:
    org = _org(db_session, "Acme")
    _record_three(db_session, org)
    victim = db_session.scalar(select(AuditEvent).where(AuditEvent.organization_id == org.id,
                                                        AuditEvent.seq == 2))
    with tampering(db_session):
        db_session.delete(victim)
    report = audit.verify_organization(db_session, org.id)
    assert report.first_broken_seq == 2
    assert "missing" in (report.problem or "")


def test_audit_event_rolls_back_with_its_change(db_session: Any) -> None:
    org = _org(db_session, "Acme")
    db_session.commit()
    audit.record(db_session, action="organization.updated", cause=Cause.by(Actor.system()), organization_id=org.id)
    org.name = "Acme 2"
    db_session.rollback()
    assert audit.count(db_session, org.id) == 0
    assert db_session.get(Organization, org.id).name == "Acme"


@pytest.mark.postgres
def test_concurrent_appends_keep_one_unbroken_chain(app: Any, db_session: Any) -> None:
    """Appends from many connections at once serialise on the organization's chain head: no gap, no fork."""
    from hatidata_auth.extensions import db

    org_id = _org(db_session, "Acme").id
    db_session.commit()
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            with app.app_context(), AppSession(db.engine) as session:
                for i in range(15):
                    for j in range(1 + (n + i) % 3):  # one to three events per transaction
                        audit.record(session, action="test.concurrent", cause=Cause.by(Actor.system(f"w{n}")),
                                     organization_id=org_id, details={"writer": n, "txn": i, "event": j})
                    session.commit()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    expected = sum(1 + (n + i) % 3 for n in range(6) for i in range(15))
    report = audit.verify_organization(db_session, org_id)
    assert report.ok, report
    assert report.checked == expected


@pytest.mark.parametrize("deferred", [False, True])
@pytest.mark.parametrize("rolled_back", [(), (1,), (0, 2), (0, 1, 2, 3)])
def test_savepoints_of_one_transaction_extend_one_chain(db_session: Any, rolled_back: tuple[int, ...],
                                                        deferred: bool) -> None:
    """Savepoints write their audit rows when they commit (the transaction keeps the head it moved, locked), or
    (*deferred*, an applier's batch) leave them pending for the outer commit: savepoints rolled back in between,
    even after writing (which writes the pending events of the savepoints before it too), drop only their own
    events and leave one unbroken chain."""
    org = _org(db_session, "Acme")
    db_session.commit()
    kept = sum(1 + n % 2 for n in range(4) if n not in rolled_back)
    with audit.deferred(db_session) if deferred else contextlib.nullcontext():
        _savepoints(db_session, org, rolled_back, deferred)
        db_session.commit()
    report = audit.verify_organization(db_session, org.id)
    assert report.ok, report
    assert report.checked == kept == audit.count(db_session, org.id)
    assert sorted(e.details["event"] for e in db_session.scalars(select(AuditEvent).where(
        AuditEvent.organization_id == org.id)).all()) == sorted(n for n in range(4) if n not in rolled_back
                                                                for _ in range(1 + n % 2))


def _savepoints(db_session: Any, org: Organization, rolled_back: tuple[int, ...], deferred: bool) -> None:
    """Four savepoints recording 1, 2, 1, 2 events; those in *rolled_back* write theirs, then roll back."""
    for n in range(4):
        savepoint = db_session.begin_nested()
        for i in range(1 + n % 2):
            audit.record(db_session, action="test.savepoint", cause=Cause.from_event(f"evt_{n}", reason="test"),
                         organization_id=org.id, details={"event": n, "row": i})
        if n not in rolled_back:
            savepoint.commit()
            kept_so_far = sum(1 + k % 2 for k in range(n + 1) if k not in rolled_back)
            assert len(audit.pending(db_session)) == (kept_so_far if deferred else 0)
            continue
        audit.flush_pending(db_session)  # written, then undone with the savepoint
        savepoint.rollback()


@pytest.mark.parametrize("per_org", [1, 2, 50, 51, 200])
def test_one_transaction_of_any_size_writes_every_event_in_one_chain(db_session: Any, per_org: int) -> None:
    """However many events a transaction records (a webhook's few, a resync page's hundreds, written another
    way), every one is stored as recorded, chained after the organization's earlier events."""
    acme, globex = _org(db_session, "Acme"), _org(db_session, "Globex")
    _record_three(db_session, acme)
    cause = Cause.by(Actor(type="user", id="usr_9", email="b@x.test"), RequestInfo(ip_address="10.0.0.9",
                                                                                    user_agent="pytest",
                                                                                    request_id="r9"))
    recorded = [audit.record(db_session, action="test.bulk", cause=cause, organization_id=org.id,
                             target_type="user", target_id=f"usr_{n}", details={"n": n, "org": org.name})
                for n in range(per_org) for org in (acme, globex)]
    db_session.commit()
    for org, before in ((acme, 3), (globex, 0)):
        report = audit.verify_organization(db_session, org.id)
        assert report.ok, report
        assert report.checked == before + per_org == audit.count(db_session, org.id)
    stored = {e.public_id: e for e in db_session.scalars(select(AuditEvent).where(AuditEvent.action == "test.bulk"))}
    assert set(stored) == {e.public_id for e in recorded}
    for event in recorded:
        row = stored[event.public_id]
        assert (row.organization_id, row.target_id, row.details, row.actor_email, row.ip_address, row.request_id,
                row.seq, row.hash) == (event.organization_id, event.target_id, event.details, "b@x.test",
                                       "10.0.0.9", "r9", event.seq, event.hash)


_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="\x00"), max_size=24)
_JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**53, 2**53) | _TEXT,
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
                     max_leaves=8)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(_TEXT, st.none() | _TEXT, st.dictionaries(_TEXT, _JSON, max_size=4)), min_size=1,
                max_size=60))
def test_the_rows_are_stored_as_recorded_whatever_their_values_and_number(db_session: Any,
                                                                         rows: list[tuple[str, Any, Any]]) -> None:
    """The audit rows of a transaction reach the database as one statement of arrays on PostgreSQL, one
    executemany on SQLite: any text (quotes, braces, commas, backslashes, the characters an array literal
    escapes), NULLs and nested JSON come back as recorded, in recorded order, and the chain verifies."""
    db_session.rollback()  # the session is every example's: one that failed mid-flush must not fail the next
    org = _org(db_session, f"Prop {uuid.uuid4().hex[:8]}")
    cause = Cause.by(Actor(type="user", id="usr_p", email="p@x.test"))
    recorded = [audit.record(db_session, action="test.values", cause=cause, organization_id=org.id,
                             target_type=target_type, target_id=target_id, details=details)
                for target_type, target_id, details in rows]
    db_session.commit()
    stored = db_session.scalars(select(AuditEvent).where(AuditEvent.organization_id == org.id)
                                .order_by(AuditEvent.id)).all()
    assert [(e.public_id, e.seq, e.target_type, e.target_id, e.details, e.hash) for e in stored] == [
        (e.public_id, e.seq, e.target_type, e.target_id, e.details, e.hash) for e in recorded]
    assert audit.verify_organization(db_session, org.id).ok


@pytest.mark.postgres
@pytest.mark.parametrize("column", ["target_id", "actor_email", "user_agent"])
def test_an_over_long_value_is_refused_not_truncated(db_session: Any, column: str) -> None:
    """An explicit cast to ``VARCHAR(n)`` would truncate silently, and the stored row would no longer match its
    hash: the value is refused, the transaction rolls back with its change, and the chain stays whole."""
    org = _org(db_session, "Long")
    db_session.commit()
    limit = AuditEvent.__table__.c[column].type.length
    event = audit.record(db_session, action="test.long", cause=Cause.by(Actor(type="user", id="usr_l")),
                         organization_id=org.id, target_type="user", target_id="usr_l")
    setattr(event, column, "x" * (limit + 1))
    with pytest.raises(DataError):
        db_session.commit()
    db_session.rollback()
    assert audit.count(db_session, org.id) == 0
    _record_three(db_session, org)
    assert audit.verify_organization(db_session, org.id).ok
