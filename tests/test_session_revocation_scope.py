"""One organization's revocation never ends a session that has become another's meanwhile: the sessions are
selected and locked by one statement (``sessions._locked_where``), and PostgreSQL checks its conditions again on a
row a switch changed while the revocation waited for it. From a break-it review: a switch A -> B held the session's
row while A's admin removed the member; the removal had picked the session while it was in A, waited, then (locking
by id only) ended the session now in B, signed in at B, and wrote its ``session.revoked`` event, with A's admin as
actor, into B's audit chain."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy import select

from hatidata_auth.causes import Actor, Cause
from hatidata_auth.extensions import db
from hatidata_auth.models import AuditEvent, AuthSession, Membership, Organization, User, utcnow
from hatidata_auth.services import session_refresh, tenant_admin
from tests.test_inbox_batch_scope import ACME, GLOBEX, _prepare
from tests.test_inserted_user_race import _started, _wait_for_lock_wait
from tests.test_sign_in_batch_locks import _org

pytestmark = pytest.mark.postgres
SID = "session_SWR_hop"


def test_a_removal_in_one_organization_spares_a_session_switched_to_another(app: Flask) -> None:
    _prepare(app)
    a, b = _org(app, ACME), _org(app, GLOBEX)
    with app.app_context():
        p = User(email="hop@partners.test", workos_user_id="user_SWR_hop")
        db.session.add(p)
        db.session.flush()
        ma = Membership(organization_id=a.id, user_id=p.id, role="developer", role_source="manual",
                        source="manual", status="active")
        db.session.add_all([ma, Membership(organization_id=b.id, user_id=p.id, role="developer",
                                           role_source="manual", source="manual", status="active")])
        db.session.add(AuthSession(workos_session_id=SID, organization_id=a.id, user_id=p.id,
                                   auth_organization_id=b.id, expires_at=utcnow() + timedelta(hours=1)))
        # signed in at B and switched to A; now switching back to B
        db.session.commit()
        ma_id, pid = ma.id, p.id
        db.session.remove()
    moved, go = threading.Event(), threading.Event()

    def switch() -> None:
        s = db.session()
        session_refresh.apply_switch(s, app.extensions["hatidata_workos"].client, workos_session_id=SID,
                                     target=s.get(Organization, b.id), user_id=pid,
                                     cause=Cause.by(Actor("user", pid, "hop@partners.test")))
        moved.set()
        assert go.wait(30)

    t1, e1 = _started(app, switch)
    assert moved.wait(30)
    t2, e2 = _started(app, lambda: tenant_admin.remove_member(
        db.session(), app.extensions["hatidata_workos"].client, organization_id=a.id, membership_id=ma_id,
        cause=Cause.by(Actor("user", "usr_admin_a", "admin@acme.test"))))
    with app.app_context():
        _wait_for_lock_wait("SELECT auth_sessions%", event="transactionid")
    go.set()
    for thread in (t1, t2):
        thread.join(30)
    assert (e1, e2) == ([], [])
    with app.app_context():
        rec = db.session.scalar(select(AuthSession).where(AuthSession.workos_session_id == SID))
        in_b = db.session.scalars(select(AuditEvent).where(AuditEvent.organization_id == b.id,
                                                           AuditEvent.action == "session.revoked")).all()
        assert rec is not None
        assert (rec.organization_id, rec.revoked_at) == (b.id, None), "org A's removal ended a session of org B"
        assert in_b == [], "nothing of A's removal in B's audit log"
        m = db.session.get(Membership, ma_id)
        assert m is not None
        assert m.status != "active", "the removal itself went through"
