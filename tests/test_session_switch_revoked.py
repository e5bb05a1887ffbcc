"""An organization switch and a revocation of the same session, interleaved: the switch reads the session under
its row lock (``sessions.lock_for_update``, the rule for every state transition of a session), so a revocation
committed meanwhile is seen and the switch refused (401), and the session stays in the organization its revocation
names. From a second break-it review: a resync page ended a member's session and queued its end at WorkOS for the
session's organization (``workos_revocations``); a switch that had read the session before the page committed
moved the revoked row to another organization after it, and the queued job, finding the session in another
organization, skipped it: the session was never ended at WorkOS."""
from __future__ import annotations

import threading
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from hatidata_auth.causes import Actor, Cause
from hatidata_auth.errors import AppError
from hatidata_auth.extensions import db
from hatidata_auth.models import AuditEvent, AuthSession, Membership, Organization, utcnow
from hatidata_auth.services import inbox_worker, reconcile, resync_state, session_refresh, sessions
from hatidata_auth.services.events import session_jobs
from tests.support.dsync import mirror_organizations
from tests.support.servers import EmulatorControl
from tests.test_inserted_user_race import _started, _wait_for_lock_wait
from tests.test_resync_resume import PAGE

pytestmark = pytest.mark.postgres


def test_a_switch_crossing_a_resync_revocation_is_refused_and_the_session_ended_at_workos(
        app: Flask, db_session: Any, workos_client: Any, emulator_control: EmulatorControl,
        monkeypatch: pytest.MonkeyPatch) -> None:
    orgs = mirror_organizations(db_session, workos_client)
    acme, globex = orgs["acme.test"].id, orgs["globex.test"].id
    reconcile.full_resync(db_session, workos_client, organization_id=acme, page_size=PAGE)
    victim = db_session.scalars(select(Membership).where(Membership.organization_id == acme,
                                                         Membership.status == "active",
                                                         Membership.directory_user_id.is_not(None))
                                .order_by(Membership.directory_user_id)).first()
    user_id, du = victim.user_id, victim.directory_user_id
    # the person may switch to Globex (an active member there)
    db_session.add(Membership(organization_id=globex, user_id=user_id, role="viewer", role_source="manual",
                              source="manual", status="active"))
    db_session.add(AuthSession(workos_session_id="session_SSR_switch", organization_id=acme, user_id=user_id,
                               expires_at=utcnow().replace(year=2099), last_seen_at=utcnow()))
    db_session.commit()
    emulator_control.ctl("POST", f"/directory_users/{du}/deactivate")  # the webhook is missed: the resync repairs

    revoked, paused, resume = threading.Event(), threading.Event(), threading.Event()
    real_revoke, real_mark = sessions.revoke_records, resync_state.mark_seen

    def revoke_records(*a: Any, **k: Any) -> int:
        n = real_revoke(*a, **k)
        if n:
            revoked.set()
        return n

    def mark_seen(*a: Any, **k: Any) -> Any:
        if revoked.is_set() and not paused.is_set():
            paused.set()  # the page has revoked the session and queued its WorkOS end; not committed yet
            assert resume.wait(30)
        return real_mark(*a, **k)

    asked: list[str] = []  # every end asked of WorkOS: at once (sessions) or by the queued job (session_jobs)
    monkeypatch.setattr(sessions, "revoke_at_workos", lambda _c, sid, **_k: asked.append(sid) or "revoked")
    monkeypatch.setattr(sessions, "revoke_records", revoke_records)
    monkeypatch.setattr(resync_state, "mark_seen", mark_seen)
    # the switch view has checked the session (live: check_switch_target) and WorkOS refreshed it into Globex;
    # it now records the move (apply_switch) while the resync page holds the revocation uncommitted
    runner, resync_errors = _started(app, lambda: reconcile.full_resync(db.session(), workos_client,
                                                                        organization_id=acme, page_size=PAGE))
    assert paused.wait(60)

    def switch() -> None:
        s = db.session()
        session_refresh.apply_switch(s, workos_client, workos_session_id="session_SSR_switch",
                                     target=s.get(Organization, globex), user_id=user_id,
                                     cause=Cause.by(Actor("user", user_id, None)))

    thread, errors = _started(app, switch)
    try:
        with app.app_context():
            _wait_for_lock_wait("SELECT auth_sessions%FOR UPDATE%")  # the switch's locked read waits for the page
    finally:
        resume.set()
        runner.join(60)
        thread.join(30)
    assert not resync_errors
    assert [(type(e), getattr(e, "status", None)) for e in errors] == [(AppError, 401)]

    monkeypatch.setattr(session_jobs, "revoke_at_workos", lambda _c, sid, **_k: asked.append(sid) or "revoked")
    with app.app_context():
        inbox_worker.drain(db.session(), workos_client, limit=50)
        row = db.session.scalar(select(AuthSession).where(AuthSession.workos_session_id == "session_SSR_switch"))
        outcomes = db.session.scalars(select(AuditEvent.details).where(
            AuditEvent.action == "session.revoked_at_workos", AuditEvent.target_id == row.id)).all()
    assert row.organization_id == acme, "the revoked session was not moved"
    assert row.revoked_at is not None
    assert [d["workos"] for d in outcomes] == ["revoked"]
    assert asked == ["session_SSR_switch"], "the revoked session is ended at WorkOS, once"
