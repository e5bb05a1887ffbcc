"""A resync page that ends a member's sessions asks WorkOS nothing itself: their ends at WorkOS are queued with the
page for the appliers (``workos_revocations``), so a page the database rolls back to break a conflict has nothing
outside the database to undo and is applied again (``reconcile.mirror_user_pages``).

From a break-it review: a page deprovisioning a member with a live session called WorkOS at once, then lost a
conflict at its commit and was run again, asking WorkOS a second time. Here the conflict is injected (a trigger
raising the deadlock's SQLSTATE) at the insert of that revocation's audit event, the page's last write."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from sqlalchemy import func, select

from hatidata_auth.models import AuditEvent, AuthSession, DirectoryUser, Membership, WebhookEvent, utcnow
from hatidata_auth.services import reconcile, sessions, workos_revocations
from tests.support.dsync import mirror_organizations
from tests.support.servers import EmulatorControl
from tests.test_resync_resume import PAGE, _ddl

pytestmark = pytest.mark.postgres


def _conflict_at_audit(action: str, times: int) -> tuple[str, ...]:
    return ("CREATE SEQUENCE hd_rpr_tries",
            "CREATE FUNCTION hd_rpr_conflict() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF NEW.action = '{action}' AND nextval('hd_rpr_tries') <= {times} THEN "
            "RAISE EXCEPTION 'injected deadlock' USING ERRCODE = '40P01'; END IF; RETURN NEW; END $$",
            "CREATE TRIGGER hd_rpr_conflict BEFORE INSERT ON audit_events FOR EACH ROW "
            "EXECUTE FUNCTION hd_rpr_conflict()")


_NO_CONFLICT = ("DROP TRIGGER IF EXISTS hd_rpr_conflict ON audit_events", "DROP FUNCTION IF EXISTS hd_rpr_conflict()",
                "DROP SEQUENCE IF EXISTS hd_rpr_tries")


@pytest.mark.parametrize("conflicts", [0, 1, 2])
def test_a_page_ending_sessions_asks_workos_nothing_and_runs_again(
        db_session: Any, workos_client: Any, emulator_control: EmulatorControl, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, conflicts: int) -> None:
    acme = mirror_organizations(db_session, workos_client)["acme.test"].id
    reconcile.full_resync(db_session, workos_client, organization_id=acme, page_size=PAGE)
    members = db_session.scalars(select(Membership).where(Membership.organization_id == acme,
                                                          Membership.status == "active",
                                                          Membership.directory_user_id.is_not(None))
                                 .order_by(Membership.directory_user_id)).all()
    victims = [members[0], members[-1]]  # on the first page and the last
    for n, victim in enumerate(victims):
        db_session.add(AuthSession(workos_session_id=f"session_RPR{n}", organization_id=acme,
                                   user_id=victim.user_id, expires_at=utcnow().replace(year=2099),
                                   last_seen_at=utcnow()))
        emulator_control.ctl("POST", f"/directory_users/{victim.directory_user_id}/deactivate")  # webhook missed
    db_session.commit()
    asked: list[str] = []
    monkeypatch.setattr(sessions, "revoke_at_workos", lambda _c, sid, **_k: asked.append(sid) or "revoked")
    _ddl(_conflict_at_audit("session.revoked", conflicts))
    try:
        with caplog.at_level(logging.WARNING, logger="hatidata_auth.services.db_conflicts"):
            report = reconcile.full_resync(db_session, workos_client, organization_id=acme, page_size=PAGE)
    finally:
        db_session.rollback()
        _ddl(_NO_CONFLICT)
    assert asked == [], "a resync page asks WorkOS nothing: its revocations are queued"
    reruns = [r for r in caplog.records if "running it again" in r.getMessage()]
    assert len(reruns) == conflicts
    listed = db_session.scalar(select(func.count()).select_from(DirectoryUser)
                               .where(DirectoryUser.organization_id == acme, DirectoryUser.deleted_at.is_(None)))
    assert (report.users_seen, report.users_updated) == (listed, 2), "counted once, whatever the reruns"
    for n, victim in enumerate(victims):
        row = db_session.scalar(select(AuthSession).where(AuthSession.workos_session_id == f"session_RPR{n}"))
        assert row is not None
        assert row.revoked_at is not None
        audited = db_session.scalars(select(AuditEvent.details).where(AuditEvent.action == "session.revoked",
                                                                      AuditEvent.target_id == row.id)).all()
        assert [d["workos"] for d in audited] == ["queued"], "audited once, as queued"
        jobs = db_session.scalar(select(func.count()).select_from(WebhookEvent).where(
            WebhookEvent.event_type == workos_revocations.JOB_TYPE,
            WebhookEvent.entity_key == f"workos_revocation:{row.id}"))
        assert jobs == 1, "queued once, with the page that committed"
        status = db_session.scalar(select(Membership.status).where(Membership.id == victim.id))
        assert status != "active"
