"""A full resync that crashes resumes from its stored cursor and ends where an uninterrupted run ends.

The crash is real: a database trigger refuses to insert one directory user, so the page holding it fails to commit
(as a lost connection or a killed worker would leave it). Every position of the directory's listing is tried.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError, OperationalError

from hatidata_auth.extensions import db
from hatidata_auth.models import (
    AuditEvent,
    DirectoryGroupMembership,
    DirectoryUser,
    Membership,
    Organization,
    ResyncCursor,
    User,
    utcnow,
)
from hatidata_auth.services import db_conflicts, reconcile, resync_state
from tests.support.dsync import mirror_organizations

ACME_DIR = "directory_01HTDQ8D100000000000000001"
PAGE = 2


def _empty(session: Any) -> None:
    session.rollback()
    with db.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SET LOCAL session_replication_role = replica"))  # audit_events refuses DELETE
        for table in reversed(db.metadata.sorted_tables):
            conn.execute(table.delete())


def _crash_on(workos_id: str) -> tuple[str, ...]:
    assert workos_id.replace("_", "").isalnum()  # inlined into DDL below
    if db.engine.dialect.name == "postgresql":
        return (f"CREATE FUNCTION hd_test_crash() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"IF NEW.workos_id = '{workos_id}' THEN RAISE EXCEPTION 'injected crash'; END IF; RETURN NEW; "
                f"END $$",
                "CREATE TRIGGER hd_test_crash BEFORE INSERT ON directory_users FOR EACH ROW "
                "EXECUTE FUNCTION hd_test_crash()")
    return (f"CREATE TRIGGER hd_test_crash BEFORE INSERT ON directory_users WHEN NEW.workos_id = '{workos_id}' "
            f"BEGIN SELECT RAISE(ABORT, 'injected crash'); END",)


def _no_crash() -> tuple[str, ...]:
    if db.engine.dialect.name == "postgresql":
        return "DROP TRIGGER IF EXISTS hd_test_crash ON directory_users", "DROP FUNCTION IF EXISTS hd_test_crash()"
    return ("DROP TRIGGER IF EXISTS hd_test_crash",)


def _ddl(statements: tuple[str, ...]) -> None:
    with db.engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))


def _state(session: Any, org_id: str) -> dict[str, Any]:
    """What the resync decides, without generated ids or times; audit events counted by what they are about."""
    session.expire_all()
    emails: dict[str, str] = {uid: email for uid, email in session.execute(select(User.id, User.email))}
    member_of = {m.id: emails[m.user_id] for m in session.scalars(select(Membership))}
    orgs = {o.id: o.workos_organization_id for o in session.scalars(select(Organization))}
    names = {**emails, **member_of, **orgs}
    audit = Counter(
        (e.action, e.target_type, names.get(e.target_id or "", e.target_id), e.source_event_id is None)
        for e in session.scalars(select(AuditEvent).where(AuditEvent.organization_id == org_id,
                                                          AuditEvent.action != "directory.resynced")))
    out = {
        "directory_users": sorted((d.workos_id, d.email, d.state, d.deleted_at is None, emails.get(d.user_id))
                                  for d in session.scalars(select(DirectoryUser).where(
                                      DirectoryUser.organization_id == org_id))),
        "groups": sorted((m.group_workos_id, m.user_workos_id, m.present) for m in session.scalars(
            select(DirectoryGroupMembership).where(DirectoryGroupMembership.organization_id == org_id))),
        "members": sorted((emails[m.user_id], m.role, m.status, m.source, m.directory_user_id)
                          for m in session.scalars(select(Membership).where(Membership.organization_id == org_id))),
        "people": sorted((u.email, u.first_name, u.last_name) for u in session.scalars(select(User))),
        "audit": audit,
        "cursors": session.scalar(select(ResyncCursor.id).where(ResyncCursor.organization_id == org_id)),
    }
    session.rollback()
    return out


def _report(report: reconcile.ResyncReport) -> dict[str, Any]:
    return {k: v for k, v in report.to_dict().items() if k not in ("seconds", "organization_id")}


def test_a_crashed_resync_resumes_from_its_cursor_at_every_page(db_session: Any, workos_client: Any) -> None:
    listed = [u.id for u in workos_client.directory_sync.list_users(directory=ACME_DIR, limit=100,
                                                                     order="asc").auto_paging_iter()]
    assert len(listed) > PAGE  # several pages, so a crash can land after a committed one

    acme = mirror_organizations(db_session, workos_client)["acme.test"].id
    uninterrupted = _report(reconcile.full_resync(db_session, workos_client, organization_id=acme,
                                                  page_size=PAGE))
    expected = _state(db_session, acme)
    assert expected["cursors"] is None

    for position, victim in enumerate(listed):
        _empty(db_session)
        acme = mirror_organizations(db_session, workos_client)["acme.test"].id
        _ddl(_crash_on(victim))
        try:
            with pytest.raises(DBAPIError, match="injected crash"):
                reconcile.full_resync(db_session, workos_client, organization_id=acme, page_size=PAGE)
        finally:
            db_session.rollback()
            _ddl(_no_crash())
        cursor = db_session.scalar(select(ResyncCursor).where(ResyncCursor.organization_id == acme))
        committed_pages = position // PAGE
        assert cursor is not None
        assert cursor.after_user_id == (listed[committed_pages * PAGE - 1] if committed_pages else None)
        run_id = cursor.run_id
        db_session.rollback()

        resumed = reconcile.full_resync(db_session, workos_client, organization_id=acme, page_size=PAGE)
        assert _report(resumed) == uninterrupted, f"crash at user {position}"
        assert _state(db_session, acme) == expected, f"crash at user {position}"
        resynced = db_session.scalars(select(AuditEvent).where(AuditEvent.organization_id == acme,
                                                               AuditEvent.action == "directory.resynced")).all()
        assert [e.source_event_id for e in resynced] == [run_id]  # one run, finished once
        assert reconcile.full_resync(db_session, workos_client, organization_id=acme).differences == 0
        db_session.rollback()


def test_a_resync_retires_only_what_it_did_not_see(db_session: Any, workos_client: Any) -> None:
    acme = mirror_organizations(db_session, workos_client)["acme.test"].id
    reconcile.full_resync(db_session, workos_client, organization_id=acme, page_size=PAGE)
    org = db_session.get(Organization, acme)
    live = db_session.scalars(select(DirectoryUser).where(DirectoryUser.organization_id == acme,
                                                          DirectoryUser.deleted_at.is_(None))).all()
    # A user WorkOS never listed (gone while we were away) is retired; every listed one stays.
    ghost = DirectoryUser(organization_id=acme, workos_id="directory_user_01HTDQ8F1GHOST0000000000000",
                          directory_id=org.directory_id, email="ghost@acme.test", state="active")
    db_session.add(ghost)
    db_session.commit()
    report = reconcile.full_resync(db_session, workos_client, organization_id=acme, page_size=PAGE)
    assert report.users_deleted == 1
    after = {d.workos_id: d.deleted_at for d in db_session.scalars(select(DirectoryUser).where(
        DirectoryUser.organization_id == acme))}
    assert after[ghost.workos_id] is not None
    assert all(after[d.workos_id] is None for d in live)
    db_session.rollback()


def test_a_stale_cursor_is_abandoned_for_a_new_run(db_session: Any, workos_client: Any) -> None:
    acme = mirror_organizations(db_session, workos_client)["acme.test"].id
    org = db_session.get(Organization, acme)
    listed = [u.id for u in workos_client.directory_sync.list_users(directory=ACME_DIR, limit=100,
                                                                     order="asc").auto_paging_iter()]
    old = utcnow() - resync_state.RESUME_WITHIN - timedelta(minutes=1)
    db_session.add(ResyncCursor(organization_id=acme, directory_id=org.directory_id, run_id="resync_stale",
                                started_at=old, after_user_id=listed[-1], report={"users_seen": 99},
                                created_at=old, updated_at=old))
    db_session.commit()
    report = reconcile.full_resync(db_session, workos_client, organization_id=acme, page_size=PAGE)
    assert report.users_seen == len(listed)  # every user, from the first page
    assert report.users_created == len(listed)
    assert db_session.scalar(select(ResyncCursor.id).where(ResyncCursor.organization_id == acme)) is None
    db_session.rollback()


def _conflict_on(workos_id: str, times: int) -> tuple[str, ...]:
    """The insert of *workos_id*'s directory user fails its first *times* tries with the SQLSTATE PostgreSQL rolls a
    deadlock's loser back with (the count is a sequence: a rollback does not take it back)."""
    assert workos_id.replace("_", "").isalnum()  # inlined into DDL below
    return ("CREATE SEQUENCE hd_test_tries",
            f"CREATE FUNCTION hd_test_conflict() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF NEW.workos_id = '{workos_id}' AND nextval('hd_test_tries') <= {times} THEN "
            f"RAISE EXCEPTION 'injected deadlock' USING ERRCODE = '40P01'; END IF; RETURN NEW; END $$",
            "CREATE TRIGGER hd_test_conflict BEFORE INSERT ON directory_users FOR EACH ROW "
            "EXECUTE FUNCTION hd_test_conflict()")


def _no_conflict() -> tuple[str, ...]:
    return ("DROP TRIGGER IF EXISTS hd_test_conflict ON directory_users", "DROP FUNCTION IF EXISTS hd_test_conflict()",
            "DROP SEQUENCE IF EXISTS hd_test_tries")


def _undisturbed(db_session: Any, workos_client: Any) -> tuple[list[str], dict[str, Any], dict[str, Any]]:
    """Acme's listed users, and the report and state of a resync nothing disturbed."""
    listed = [u.id for u in workos_client.directory_sync.list_users(directory=ACME_DIR, limit=100,
                                                                     order="asc").auto_paging_iter()]
    acme = mirror_organizations(db_session, workos_client)["acme.test"].id
    uninterrupted = _report(reconcile.full_resync(db_session, workos_client, organization_id=acme, page_size=PAGE))
    return listed, uninterrupted, _state(db_session, acme)


@pytest.mark.postgres
def test_a_page_that_loses_a_conflict_is_applied_again_at_every_page(db_session: Any, workos_client: Any,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """A page rolled back to break a deadlock (an applier's batch holding some of its member keys) is applied again
    from the listing already read, its counters as the last commit left them: the run ends as an undisturbed one,
    wherever the conflict lands (before, the resync stopped and the admin's request answered 503)."""
    listed, uninterrupted, expected = _undisturbed(db_session, workos_client)
    for position, victim in enumerate(listed):
        _empty(db_session)
        acme = mirror_organizations(db_session, workos_client)["acme.test"].id
        _ddl(_conflict_on(victim, times=db_conflicts.ATTEMPTS - 1))
        caplog.clear()
        try:
            report = reconcile.full_resync(db_session, workos_client, organization_id=acme, page_size=PAGE)
        finally:
            db_session.rollback()
            _ddl(_no_conflict())
        assert _report(report) == uninterrupted, f"conflict at user {position}"
        assert _state(db_session, acme) == expected, f"conflict at user {position}"
        again = [r.getMessage() for r in caplog.records if "a resync page rolled back" in r.getMessage()]
        assert len(again) == db_conflicts.ATTEMPTS - 1, again
        assert all("(deadlock detected); running it again" in message for message in again)


@pytest.mark.postgres
def test_a_page_that_keeps_losing_stops_the_run_where_the_next_resumes(db_session: Any, workos_client: Any) -> None:
    """After ``db_conflicts.ATTEMPTS`` conflicts the page's conflict is raised (the request answers 503) and the
    cursor keeps the pages committed before it: the next run resumes there and ends as an undisturbed one."""
    listed, uninterrupted, expected = _undisturbed(db_session, workos_client)
    _empty(db_session)
    acme = mirror_organizations(db_session, workos_client)["acme.test"].id
    _ddl(_conflict_on(listed[PAGE], times=db_conflicts.ATTEMPTS))  # the second page, every attempt
    try:
        with pytest.raises(OperationalError) as raised:
            reconcile.full_resync(db_session, workos_client, organization_id=acme, page_size=PAGE)
        assert db_conflicts.conflict(raised.value) == "deadlock detected"
    finally:
        db_session.rollback()
        _ddl(_no_conflict())
    cursor = db_session.scalar(select(ResyncCursor).where(ResyncCursor.organization_id == acme))
    assert cursor is not None
    assert cursor.after_user_id == listed[PAGE - 1]
    db_session.rollback()
    assert _report(reconcile.full_resync(db_session, workos_client, organization_id=acme,
                                         page_size=PAGE)) == uninterrupted
    assert _state(db_session, acme) == expected
