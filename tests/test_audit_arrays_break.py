"""Break-it of the audit rows written as arrays (``audit._unnest_statement`` on PostgreSQL; one executemany on
SQLite): values an array literal could mangle in every text column, NULLs beside empty strings, timestamps in any
zone with microseconds, several chains interleaved in one transaction (ids in recorded order, each chain's seq in
id order), resync-sized transactions, a savepoint rolled back after an explicit write, and concurrent
transactions on one chain (real threads)."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from hatidata_auth.causes import Actor, Cause, RequestInfo
from hatidata_auth.extensions import db
from hatidata_auth.models import AuditEvent, Organization
from hatidata_auth.services import audit

# Texts an array literal (``{a,"b c",NULL}``) quotes or escapes, and the word it reads as a NULL.
_AWKWARD = ["", " ", "NULL", "null", "Null", '"NULL"', "{", "}", "{}", "{a,b}", '"', "'", ",", "\\", "\\\\",
            '\\"', "a b", "\t", "\n", "{NULL}", "ARRAY[1]", "é", "日本", "🙂", "\\u0000", "$1", "%s", "%(seq)s"]
_TEXT = st.sampled_from(_AWKWARD) | st.text(st.characters(codec="utf-8", exclude_categories=("Cs",),
                                                          exclude_characters="\x00"), max_size=12)
_MAYBE = st.none() | _TEXT
_JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**63) | _TEXT,
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
                     max_leaves=10)
_ZONE = st.integers(-14 * 60, 14 * 60).map(lambda minutes: timezone(timedelta(minutes=minutes)))
_WHEN = st.none() | st.builds(lambda dt, tz: dt.replace(tzinfo=UTC).astimezone(tz),
                              st.datetimes(datetime(1971, 1, 1), datetime(2200, 1, 1)), _ZONE)
_ROW = st.fixed_dictionaries({
    "chain": st.integers(0, 3),  # 3: no organization
    "actor": st.builds(lambda t, i, e: Actor(type=t[:16], id=i and i[:64], email=e), _TEXT, _MAYBE, _MAYBE),
    "request": st.builds(RequestInfo, _MAYBE, _MAYBE, _MAYBE),
    "source": _MAYBE, "target_type": _MAYBE, "target_id": _MAYBE, "outcome": _TEXT, "details": st.dictionaries(
        _TEXT, _JSON, max_size=4), "at": _WHEN})


def _orgs(db_session: Any) -> list[str | None]:
    orgs = [Organization(name=f"Arr {uuid.uuid4().hex[:8]}", domains=[f"{uuid.uuid4().hex[:8]}.test"])
            for _ in range(3)]
    db_session.add_all(orgs)
    db_session.commit()
    return [o.id for o in orgs] + [None]


def _fits(text: str | None, length: int) -> str | None:
    return None if text is None else text[:length // 4]  # characters, not bytes: a quarter stays within limits


def _stored(db_session: Any, public_ids: list[str]) -> list[AuditEvent]:
    db_session.expire_all()
    return db_session.scalars(select(AuditEvent).where(AuditEvent.public_id.in_(public_ids))
                              .order_by(AuditEvent.id)).all()


_COLUMNS = ("public_id", "organization_id", "seq", "actor_type", "actor_id", "actor_email", "action",
            "target_type", "target_id", "outcome", "ip_address", "user_agent", "request_id", "source_event_id",
            "details", "created_at", "prev_hash", "hash")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(st.lists(_ROW, min_size=1, max_size=40))
def test_any_values_of_every_column_across_chains_are_stored_as_recorded_in_recorded_order(
        db_session: Any, rows: list[dict[str, Any]]) -> None:
    """Every text column (NULL beside ``''`` and ``'NULL'``, braces, quotes, backslashes, unicode), nested JSON
    and timestamps of any zone with microseconds come back as recorded; ids follow the recorded order across
    the transaction's chains, and each chain's seq follows its ids; every chain verifies."""
    db_session.rollback()  # the session is every example's: one that failed mid-flush must not fail the next
    chains = _orgs(db_session)
    recorded = []
    for row in rows:
        request = RequestInfo(_fits(row["request"].ip_address, 64), row["request"].user_agent,
                              _fits(row["request"].request_id, 64))
        actor = Actor(type=_fits(row["actor"].type, 16) or "", id=_fits(row["actor"].id, 64),
                      email=_fits(row["actor"].email, 320))
        cause = Cause(actor, request, source_event_id=_fits(row["source"], 64))
        recorded.append(audit.record(db_session, action="test.arrays", cause=cause,
                                     organization_id=chains[row["chain"]],
                                     target_type=_fits(row["target_type"], 32), target_id=_fits(row["target_id"], 64),
                                     outcome=_fits(row["outcome"], 16) or "", details=row["details"], at=row["at"]))
    db_session.commit()
    expected = [{c: getattr(e, c) for c in _COLUMNS} for e in recorded]
    stored = _stored(db_session, [e["public_id"] for e in expected])
    got = [{c: getattr(e, c) for c in _COLUMNS} for e in stored]
    assert [[(c, g[c], x[c]) for c in _COLUMNS if g[c] != x[c]] for g, x in zip(got, expected, strict=True)] == [
        [] for _ in expected]
    for chain in chains:
        mine = [e for e in stored if e.organization_id == chain]
        assert [e.seq for e in mine] == sorted(e.seq for e in mine)
        assert audit.verify_organization(db_session, chain).ok


@pytest.mark.parametrize("rows", [3000])
def test_a_resync_sized_transaction_over_two_chains_is_stored_whole(db_session: Any, rows: int) -> None:
    chains = _orgs(db_session)[:2]
    cause = Cause.by(Actor(type="user", id="usr_r"))
    recorded = [audit.record(db_session, action="test.resync", cause=cause, organization_id=chains[i % 2],
                             target_type="user", target_id=f"u{i}", details={"i": i, "s": "{,}\"\\" * (i % 5)})
                for i in range(rows)]
    db_session.commit()
    stored = _stored(db_session, [e.public_id for e in recorded])
    assert [(e.public_id, e.seq, e.details) for e in stored] == [(e.public_id, e.seq, e.details) for e in recorded]
    for chain in chains:
        report = audit.verify_organization(db_session, chain)
        assert report.ok, report
        assert report.checked == rows // 2


def test_a_savepoint_rolled_back_after_an_explicit_write_across_chains_leaves_whole_chains(db_session: Any) -> None:
    chains = _orgs(db_session)
    cause = Cause.by(Actor(type="user", id="usr_s"))
    for chain in chains:
        audit.record(db_session, action="test.before", cause=cause, organization_id=chain)
    savepoint = db_session.begin_nested()
    for chain in reversed(chains):
        audit.record(db_session, action="test.undone", cause=cause, organization_id=chain)
    assert audit.flush_pending(db_session) == 2 * len(chains)
    savepoint.rollback()
    for chain in chains:
        audit.record(db_session, action="test.after", cause=cause, organization_id=chain)
    db_session.commit()
    for chain in chains:
        report = audit.verify_organization(db_session, chain)
        assert report.ok, report
        assert report.checked == 2
        assert [e.action for e in db_session.scalars(select(AuditEvent).where(
            AuditEvent.organization_id.is_(None) if chain is None else AuditEvent.organization_id == chain)
            .order_by(AuditEvent.id))] == ["test.before", "test.after"]


@pytest.mark.postgres
def test_concurrent_transactions_of_many_rows_on_one_chain_keep_it_unbroken(app: Flask) -> None:
    """Real threads, each committing transactions of 1-30 rows on the same two chains (recorded in opposite
    orders): the chains stay unbroken and hold every row."""
    with app.app_context():
        chains = _orgs(db.session())[:2]
        db.session.remove()
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def writer(w: int) -> None:
        try:
            with app.app_context():
                start.wait()
                session = db.session()
                for t in range(15):
                    for i in range(1 + (w * 7 + t * 3) % 30):
                        audit.record(session, action="test.race", cause=Cause.by(Actor(type="user", id=f"w{w}")),
                                     organization_id=chains[(w + i) % 2], details={"w": w, "t": t, "i": i})
                    session.commit()
                db.session.remove()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    expected = sum(1 + (w * 7 + t * 3) % 30 for w in range(4) for t in range(15))
    with app.app_context():
        reports = [audit.verify_organization(db.session(), chain) for chain in chains]
        assert all(r.ok for r in reports), reports
        assert sum(r.checked for r in reports) == expected
        ids_by_seq = [[e.id for e in db.session.scalars(select(AuditEvent).where(AuditEvent.organization_id == c)
                                                       .order_by(AuditEvent.seq))] for c in chains]
        assert all(ids == sorted(ids) for ids in ids_by_seq)
        db.session.remove()


def test_an_event_recorded_at_another_offset_is_hashed_as_stored(db_session: Any) -> None:
    """``record(at=…)`` with an aware time at an offset other than UTC: the row is stored in UTC, and the hash
    covered the other offset's isoformat, so the chain read back no longer verified."""
    chain = _orgs(db_session)[0]
    at = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    event = audit.record(db_session, action="test.offset", cause=Cause.by(Actor(type="user", id="usr_o")),
                         organization_id=chain, at=at)
    db_session.commit()
    assert audit.verify_organization(db_session, chain).ok
    assert event.created_at == at
    assert event.created_at.utcoffset() == timedelta(0)


@pytest.mark.postgres
def test_the_arrays_are_sent_in_binary_format(db_session: Any) -> None:
    """Text format escapes every element in Python (about five times the CPU: ``models.base.BinaryArray``). Every
    column holds a value here: psycopg sends an array of NULLs alone as text (nothing to escape)."""
    from psycopg.adapt import PyFormat
    from psycopg.pq import Format
    from sqlalchemy import event

    formats: dict[str, Any] = {}

    def seen(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
        if "INSERT INTO audit_events" in statement and "unnest(" in statement:
            # the dumper psycopg uses for this very value (upgrade() picks it from the elements)
            formats.update({name: cursor.adapters.get_dumper(type(value), PyFormat.AUTO)(type(value), cursor)
                            .upgrade(value, PyFormat.AUTO).format for name, value in params.items()})

    org = _orgs(db_session)[0]
    engine = db_session.get_bind()
    cause = Cause(Actor(type="user", id="usr_b", email="b@binary.test"), RequestInfo("192.0.2.1", "ua", "req_b"),
                  source_event_id="event_b")
    event.listen(engine, "before_cursor_execute", seen)
    try:
        audit.record(db_session, action="test.binary", cause=cause, organization_id=org, target_type="user",
                     target_id="usr_t", details={"k": "v"})
        db_session.commit()
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert len(formats) >= 18, formats  # every column's array
    assert set(formats.values()) == {Format.BINARY}, formats
