"""A batch takes up to ``REVOCATIONS_PER_BATCH`` queued WorkOS session revocations and makes their calls side by
side (``session_jobs.revoked_together``), each with the outcome it would have had alone (issue #14: one at a time,
a deprovisioning of many sessions took a batch, and WorkOS's latency, per session)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import delete, select, update

from hatidata_auth.causes import Actor, Cause
from hatidata_auth.extensions import db
from hatidata_auth.models import AuthSession, Organization, WebhookEvent
from hatidata_auth.services import inbox_worker, workos_revocations
from hatidata_auth.services.inbox_claim import REVOCATIONS_PER_BATCH
from tests.auth_support import add_fault
from tests.support.dsync import drain_inbox, post_event
from tests.support.servers import EmulatorControl
from tests.test_workos_revocation_jobs import (  # noqa: F401 - fixtures
    _audit,
    _deprovisioning_event,
    _signed_in,
    _workos_status,
    control,
    drain_inbox_events_only,
    resynced,
)

JOB = WebhookEvent.event_type == workos_revocations.JOB_TYPE


def _signed_in_times(app: Flask, n: int) -> list[str]:
    """The developer signed in *n* times (WorkOS session ids, all active there)."""
    sids = [_signed_in(app)[1] for _ in range(n)]
    assert len(set(sids)) == n
    return sids


def _deactivated_with_jobs_held(app: Flask, events: EmulatorControl, n: int) -> list[str]:
    sids = _signed_in_times(app, n)
    post_event(app.test_client(), app, _deprovisioning_event(events, "deactivate"), drain=False)
    drain_inbox_events_only(app)
    with app.app_context():
        assert db.session.query(WebhookEvent).filter(JOB, WebhookEvent.status == "received").count() == n
        db.session.remove()
    return sids


def _one_batch(app: Flask) -> inbox_worker.BatchReport:
    with app.app_context():
        report = inbox_worker.apply_batch(db.session(), app.extensions["hatidata_workos"].client, limit=50)
        db.session.remove()
    return report


def test_one_batch_takes_a_persons_revocations_and_ends_each_at_workos(
        app: Flask, resynced: None, control: EmulatorControl) -> None:  # noqa: F811 - fixtures
    sids = _deactivated_with_jobs_held(app, control, 5)
    report = _one_batch(app)
    assert report.claimed == 5
    assert {r.status for r in report.results} == {"applied"}
    assert [_workos_status(app, sid) for sid in sids] == ["revoked"] * 5
    at_workos = _audit(app, "session.revoked_at_workos")
    assert sorted(e.details["workos"] for e in at_workos) == ["revoked"] * 5
    assert len({e.target_id for e in at_workos}) == 5


def test_calls_workos_does_not_answer_fail_their_jobs_which_are_retried(
        app: Flask, resynced: None, control: EmulatorControl, emulator: Any) -> None:  # noqa: F811 - fixtures
    sids = _deactivated_with_jobs_held(app, control, 4)
    add_fault(emulator, "POST", "/user_management/sessions/revoke", 503)
    report = _one_batch(app)
    assert [r.status for r in report.results] == ["received"] * 4  # each its own transient failure
    assert [_workos_status(app, sid) for sid in sids] == ["active"] * 4
    assert _audit(app, "session.revoked_at_workos") == []
    with app.app_context():
        waiting = db.session.scalars(select(WebhookEvent).where(JOB, WebhookEvent.status == "received")).all()
        assert len(waiting) == 4
        assert all("WorkOSUnavailable" in (job.last_error or "") for job in waiting)
        db.session.execute(update(WebhookEvent.__table__).where(JOB).values(
            updated_at=inbox_worker.utcnow() - inbox_worker.RETRY_DELAY - timedelta(seconds=1)))
        db.session.commit()
        db.session.remove()
    control.ctl("DELETE", "/faults")
    drain_inbox(app)
    assert [_workos_status(app, sid) for sid in sids] == ["revoked"] * 4
    assert [e.details["workos"] for e in _audit(app, "session.revoked_at_workos")] == ["revoked"] * 4


def test_a_job_naming_another_organizations_session_calls_nothing(
        app: Flask, resynced: None, control: EmulatorControl) -> None:  # noqa: F811 - fixtures
    """A job is only good for its organization's session: side by side as alone, one naming a session of another
    organization is ``skipped``, and that session stays active at WorkOS."""
    sids = _signed_in_times(app, 3)
    with app.app_context():
        rows = {s.workos_session_id: s for s in db.session.scalars(select(AuthSession))}
        other = db.session.scalar(select(Organization.id).where(Organization.id != rows[sids[0]].organization_id))
        assert other is not None
        cause = Cause.by(Actor.system("test"), reason="test")
        for sid, organization_id in zip(sids, (rows[sids[0]].organization_id, other, other), strict=True):
            workos_revocations.queue(db.session(), organization_id=organization_id, session_id=rows[sid].id,
                                     user_id=rows[sid].user_id, cause=cause)
        db.session.commit()
        db.session.remove()
    report = _one_batch(app)
    assert report.claimed == 3
    assert [_workos_status(app, sid) for sid in sids] == ["revoked", "active", "active"]
    assert sorted(e.details["workos"] for e in _audit(app, "session.revoked_at_workos")) == \
        ["revoked", "skipped", "skipped"]


@pytest.mark.parametrize("others", [0, 2])
def test_a_batch_takes_at_most_its_bound_of_revocations_the_oldest_first(app: Flask, others: int) -> None:
    """Besides at most one other job (a recompute chunk), whatever else is pending."""
    from hatidata_auth.services.fanout_jobs import insert_job

    extra = 5
    with app.app_context():
        session = db.session()
        session.execute(delete(WebhookEvent.__table__))
        organization_id = session.scalar(select(Organization.id).limit(1)) or "org_none"
        cause = Cause.by(Actor.system("test"), reason="test")
        for n in range(others):  # older than the revocations: the batch's one job
            insert_job(session, "hatidata.test_job", organization_id=organization_id, data={}, entity_key=f"x:{n}",
                       revokes=False)
        queued = [workos_revocations.queue(session, organization_id=organization_id, session_id=f"ses_bound_{n}",
                                           user_id="usr_none", cause=cause)
                  for n in range(REVOCATIONS_PER_BATCH + extra)]
        session.commit()
        claimed = inbox_worker.claim(session, 100)
        revocations = [c.event_id for c in claimed if c.event_type == workos_revocations.JOB_TYPE]
        assert revocations == queued[:REVOCATIONS_PER_BATCH]
        assert len(claimed) - len(revocations) == min(others, 1)
        session.rollback()
        assert inbox_worker.drain(session, app.extensions["hatidata_workos"].client) >= len(queued)
        outcomes = {e.details["workos"] for e in _audit(app, "session.revoked_at_workos")}
        assert outcomes == {"skipped"}  # no such session: nothing to call
        session.execute(delete(WebhookEvent.__table__))
        session.commit()
        db.session.remove()


def test_a_batch_asks_workos_once_per_revocation_even_when_it_is_applied_again(
        app: Flask, resynced: None, emulator: Any) -> None:  # noqa: F811 - fixtures
    """One revocation with another event that fails: the batch, applied together and then event by event, asks
    WorkOS once (helper-151: twice before, so the second answer could differ from the first). WorkOS fails that
    call (and the client's one retry); a second call would succeed, so the job would be applied."""
    from hatidata_auth.services.fanout_jobs import insert_job

    sid = _signed_in_times(app, 1)[0]
    with app.app_context():
        row = db.session.scalar(select(AuthSession).where(AuthSession.workos_session_id == sid))
        assert row is not None
        workos_revocations.queue(db.session(), organization_id=row.organization_id, session_id=row.id,
                                 user_id=row.user_id, cause=Cause.by(Actor.system("test"), reason="test"))
        insert_job(db.session(), workos_revocations.JOB_TYPE, organization_id=row.organization_id,
                   data={"organization_id": "x"}, entity_key="workos_revocation:broken", revokes=False)
        db.session.commit()
        db.session.remove()
    add_fault(emulator, "POST", "/user_management/sessions/revoke", 503, count=2)
    report = _one_batch(app)
    assert sorted(r.status for r in report.results) == ["failed", "received"]
    assert _workos_status(app, sid) == "active"
    assert _audit(app, "session.revoked_at_workos") == []
