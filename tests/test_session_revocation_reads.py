"""Ending a person's or an organization's sessions reads them once: the statement that selects them locks them
(``FOR UPDATE``, in id order), so no session is read again under its lock before it is ended (issue #14: a
deprovisioning is applied in its webhook request, and each statement there costs the request about half a
millisecond of CPU)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy import select

from hatidata_auth.causes import Actor, Cause
from hatidata_auth.extensions import db
from hatidata_auth.models import AuditEvent, AuthSession, Membership, User, utcnow
from hatidata_auth.services import sessions
from tests.sql_support import sent_statements
from tests.test_inbox_batch_scope import ACME, _prepare
from tests.test_sign_in_batch_locks import _org


def _reads_of_sessions(statement: str) -> bool:
    return statement.lstrip().upper().startswith("SELECT") and "FROM auth_sessions" in statement


@pytest.mark.parametrize("scope", ["person", "organization"])
@pytest.mark.parametrize("live", [1, 4])
def test_ending_sessions_reads_them_once(app: Flask, scope: str, live: int) -> None:
    _prepare(app)
    org = _org(app, ACME)
    with app.app_context():
        person = User(email="reads@partners.test", workos_user_id="user_SRR_reads")
        db.session.add(person)
        db.session.flush()
        db.session.add(Membership(organization_id=org.id, user_id=person.id, role="developer",
                                  role_source="manual", source="manual", status="active"))
        for n in range(live + 1):  # and one ended already: neither ended again nor audited
            db.session.add(AuthSession(workos_session_id=f"session_SRR_{n}", organization_id=org.id,
                                       user_id=person.id, expires_at=utcnow() + timedelta(hours=1),
                                       revoked_at=utcnow() if n == live else None))
        db.session.commit()
        person_id = person.id
        cause = Cause.by(Actor.system("test"), reason="deprovisioned")
        with sent_statements(app, _reads_of_sessions) as reads:
            if scope == "person":
                ended = sessions.revoke_user_sessions(db.session(), None, organization_id=org.id,
                                                      user_id=person_id, cause=cause)
            else:
                ended = sessions.revoke_organization_sessions(db.session(), None, organization_id=org.id,
                                                              cause=cause)
            db.session.commit()
        assert ended == live
        assert len(reads) == 1, reads
        left = db.session.scalars(select(AuthSession).where(AuthSession.user_id == person_id,
                                                            AuthSession.revoked_at.is_(None))).all()
        assert left == []
        audited = db.session.scalars(select(AuditEvent.target_id).where(
            AuditEvent.organization_id == org.id, AuditEvent.action == "session.revoked")).all()
        assert len(audited) == live
        db.session.remove()
