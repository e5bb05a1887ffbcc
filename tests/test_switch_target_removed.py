"""A switch never moves a session into an organization the member was removed from after the switch checked the
membership (a break-it review, by reading): the check reads the target membership, WorkOS then moves the session,
and a removal committed in between never saw the session (it was still in the other organization). The session
was moved in, inactive but never ended at WorkOS, and live again once the member was re-added. ``apply_switch``
now locks the target membership before the session (a removal's order) and decides on what it holds then: a
removal that committed first ends the session (here and at WorkOS: WorkOS already holds it in the target), one
that commits after waits and ends it itself."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from hatidata_auth.causes import Actor, Cause
from hatidata_auth.extensions import db
from hatidata_auth.models import AuditEvent, AuthSession, Membership, Organization, User, WebhookEvent, utcnow
from hatidata_auth.services import inbox_worker, session_refresh, tenant_admin, workos_revocations
from tests.auth_support import ACME, GLOBEX, csrf_headers, login, sync_organizations, workos_membership
from tests.test_inserted_user_race import _started, _wait_for_lock_wait

ADMIN = Cause.by(Actor.system("test-admin"))


def _remove(app: Flask, organization_id: str, user_id: str) -> None:
    """Remove the member from *organization_id* in a transaction of its own, committed."""
    def work() -> None:
        m = db.session.scalar(select(Membership).where(Membership.organization_id == organization_id,
                                                       Membership.user_id == user_id))
        assert m is not None
        tenant_admin.remove_member(db.session(), app.extensions["hatidata_workos"].client,
                                   organization_id=organization_id, membership_id=m.id, cause=ADMIN)
    thread, errors = _started(app, work)
    thread.join(60)
    assert errors == []


@pytest.mark.parametrize("email", ["dev@acme.test", "viewer@acme.test"])
def test_a_removal_between_the_check_and_the_move_ends_the_session(app: Flask, client: FlaskClient,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   email: str) -> None:
    orgs = sync_organizations(app)
    workos_membership(app, email, GLOBEX, "viewer")
    assert login(client, email, organization_id=ACME).status_code == 302
    me = client.get("/api/v1/me").get_json()
    user_id, refresh = me["user_id"], session_refresh.refresh_tokens

    def removed_meanwhile(*args: Any, **kwargs: Any) -> Any:  # our service, not the SDK: WorkOS still moves it
        _remove(app, orgs[GLOBEX], user_id)
        return refresh(*args, **kwargs)

    monkeypatch.setattr(session_refresh, "refresh_tokens", removed_meanwhile)
    switched = client.post("/auth/switch-organization", json={"organization_id": orgs[GLOBEX]},
                           headers=csrf_headers(client))
    body = switched.get_json()
    assert switched.status_code == 401, body
    assert body["error"]["details"]["reason"] == "membership_ended", body
    assert client.get("/api/v1/me").status_code == 401
    with app.app_context():
        record = db.session.scalar(select(AuthSession).where(AuthSession.user_id == user_id))
        assert record is not None
        assert record.organization_id == orgs[ACME], "never moved into the organization that removed the member"
        assert record.revoked_at is not None, "WorkOS holds it in Globex: it is ended, not left there"
        revoked = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "session.revoked",
                                                              AuditEvent.target_id == record.id)).all()
        assert len(revoked) == 1
        # queued with the transaction that ended it (never asked twice, nor under the move's locks)
        assert revoked[0].details["workos"] == "queued", revoked[0].details
        inbox_worker.drain(db.session(), app.extensions["hatidata_workos"].client, limit=50)
        job = db.session.scalar(select(WebhookEvent).where(WebhookEvent.event_type == workos_revocations.JOB_TYPE))
        assert job is not None
        assert job.status == "applied", (job.status, job.last_error)
        moved = db.session.scalars(select(AuditEvent).where(
            AuditEvent.action == "session.organization_switched")).all()
        assert moved == []


def test_a_switch_with_its_membership_still_active_moves_the_session(app: Flask, client: FlaskClient) -> None:
    orgs = sync_organizations(app)
    workos_membership(app, "dev@acme.test", GLOBEX, "viewer")
    assert login(client, "dev@acme.test", organization_id=ACME).status_code == 302
    switched = client.post("/auth/switch-organization", json={"organization_id": orgs[GLOBEX]},
                           headers=csrf_headers(client))
    assert switched.status_code == 200, switched.get_json()
    assert switched.get_json()["role"] == "viewer"
    assert client.get("/api/v1/me").get_json()["organization_id"] == orgs[GLOBEX]


@pytest.mark.postgres
def test_a_switch_waits_for_a_removal_in_progress(app: Flask) -> None:
    orgs = sync_organizations(app)
    a, b = orgs[ACME], orgs[GLOBEX]
    sid = "session_STR_wait"
    with app.app_context():
        p = User(email="mover@partners.test", workos_user_id="user_STR_mover")
        db.session.add(p)
        db.session.flush()
        for org in (a, b):
            db.session.add(Membership(organization_id=org, user_id=p.id, role="developer", role_source="manual",
                                      source="manual", status="active"))
        db.session.add(AuthSession(workos_session_id=sid, organization_id=a, user_id=p.id, auth_organization_id=a,
                                   expires_at=utcnow() + timedelta(hours=1)))
        db.session.commit()
        pid = p.id
        db.session.remove()
    held, go = threading.Event(), threading.Event()

    def removal() -> None:
        m = db.session.scalar(select(Membership).where(Membership.organization_id == b, Membership.user_id == pid))
        assert m is not None
        tenant_admin.remove_member(db.session(), app.extensions["hatidata_workos"].client, organization_id=b,
                                   membership_id=m.id, cause=ADMIN)
        held.set()
        assert go.wait(30)

    remover, removal_errors = _started(app, removal)
    assert held.wait(30)
    outcome: list[str] = []

    def switch() -> None:
        s = db.session()
        try:
            session_refresh.apply_switch(s, app.extensions["hatidata_workos"].client, workos_session_id=sid,
                                         target=s.get(Organization, b), user_id=pid,
                                         cause=Cause.by(Actor("user", pid, "mover@partners.test")))
        except session_refresh.SwitchTargetLost:
            outcome.append("lost")

    switcher, switch_errors = _started(app, switch)
    try:
        with app.app_context():
            _wait_for_lock_wait("SELECT organizations%FOR SHARE%")  # the switch waits for the removal's locks
    finally:
        go.set()
    for thread in (remover, switcher):
        thread.join(30)
    assert (removal_errors, switch_errors, outcome) == ([], [], ["lost"])
    with app.app_context():
        record = db.session.scalar(select(AuthSession).where(AuthSession.workos_session_id == sid))
        assert record is not None
        assert (record.organization_id, record.revoked_at is not None) == (a, True)


@pytest.mark.parametrize("removed", ["no", "meanwhile", "before"])
def test_a_move_the_database_rolled_back_is_run_again(app: Flask, client: FlaskClient,
                                                       monkeypatch: pytest.MonkeyPatch, removed: str) -> None:
    """The move takes the organization's, the membership's and the session's rows: a batch deprovisioning the
    member in two organizations can hold them in another order, and PostgreSQL rolls one of the two back (a
    break-it review). WorkOS has moved the session already, so the switch runs its move again: once moved and
    audited, or, the removal committed meanwhile, the session ended."""
    from tests.test_conflict_rerun_effects import _deadlock

    orgs = sync_organizations(app)
    workos_membership(app, "dev@acme.test", GLOBEX, "viewer")
    assert login(client, "dev@acme.test", organization_id=ACME).status_code == 302
    user_id, real = client.get("/api/v1/me").get_json()["user_id"], session_refresh.apply_switch
    calls: list[int] = []

    def loses_once(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if (len(calls), removed) in ((1, "before"), (2, "meanwhile")):
            _remove(app, orgs[GLOBEX], user_id)  # the batch the database let go on committed
        try:
            moved = real(*args, **kwargs)
        except session_refresh.SwitchTargetLost:
            if len(calls) == 1:
                raise _deadlock() from None  # the attempt that ended the session loses its commit
            raise
        if len(calls) == 1:
            raise _deadlock()
        return moved

    monkeypatch.setattr(session_refresh, "apply_switch", loses_once)
    switched = client.post("/auth/switch-organization", json={"organization_id": orgs[GLOBEX]},
                           headers=csrf_headers(client))
    assert len(calls) == 2
    with app.app_context():
        record = db.session.scalar(select(AuthSession).where(AuthSession.user_id == user_id))
        moves = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "session.organization_switched"))
        assert record is not None
        ends = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "session.revoked")).all()
        jobs = db.session.scalars(select(WebhookEvent.id).where(
            WebhookEvent.event_type == workos_revocations.JOB_TYPE)).all()
        if removed != "no":
            assert switched.status_code == 401, switched.get_json()
            assert (record.organization_id, record.revoked_at is not None) == (orgs[ACME], True)
            assert list(moves) == []
            assert (len(ends), len(jobs)) == (1, 1), "ended, and queued at WorkOS, once"
        else:
            assert switched.status_code == 200, switched.get_json()
            assert (record.organization_id, record.revoked_at) == (orgs[GLOBEX], None)
            assert sorted(e.organization_id for e in moves) == sorted([orgs[ACME], orgs[GLOBEX]])
