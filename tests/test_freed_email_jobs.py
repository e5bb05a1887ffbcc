"""A directory user waiting for an email is linked by a job of its own (``services.freed_email_jobs``), queued by
the transaction that frees the email under the waiting user's entity key: that transaction never takes the
waiting user's key (the cascade of a rotation of emails was a livelock of deadlocks when it did), the job is
applied in order after the user's own pending events, continues the freeing event's cause, and no webhook can
forge one."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, text

from hatidata_auth.extensions import db
from hatidata_auth.models import AuditEvent, DirectoryUser, Membership, User, WebhookEvent
from hatidata_auth.models.inbox import INTERNAL_SOURCE
from hatidata_auth.services import freed_email_jobs, inbox, inbox_worker
from hatidata_auth.services.events import HANDLERS, INTERNAL_HANDLERS, handled_event_types
from hatidata_auth.services.fanout_jobs import member_key
from tests import test_inbox_batch_scope as bs
from tests.support.dsync import post_event
from tests.test_breakroll_batches import _person_user

ACME = bs.ACME
WAITING = "directory_user_A2"


def _waiting_for_p7(app: Flask) -> tuple[dict[str, Any], dict[str, Any]]:
    """A1 holds person p7; A2 wants p7@shared.test and is refused (waits, linked to no one). Returns A1's move to
    p8 (which frees p7@), stored, not applied, and A2's event."""
    bs._prepare(app)
    holder = _person_user(ACME, 1, 7, "shared.test")
    waiting = _person_user(ACME, 2, 7, "shared.test")
    bs._apply(app, [[bs._group_created()], [holder], [waiting]], 1)
    frees = _person_user(ACME, 1, 8, "shared.test")
    with app.app_context():
        inbox.store(db.session(), frees)
        db.session.remove()
    return frees, waiting


def _apply_key(app: Flask, key: str) -> inbox_worker.BatchReport:
    with app.app_context():
        try:
            return inbox_worker.apply_batch(db.session(), app.extensions["hatidata_workos"].client, limit=1,
                                            entity_key=key)
        finally:
            db.session.remove()


def _link(app: Flask) -> tuple[str | None, str | None]:
    """A2's person's email and the status of its membership (``None``: none)."""
    with app.app_context():
        s = db.session()
        du = s.scalar(select(DirectoryUser).where(DirectoryUser.workos_id == WAITING))
        assert du is not None
        person = s.get(User, du.user_id) if du.user_id else None
        membership = s.scalar(select(Membership).where(Membership.directory_user_id == WAITING))
        db.session.remove()
    return (person.email if person else None), (membership.status if membership else None)


def _jobs(app: Flask) -> list[WebhookEvent]:
    with app.app_context():
        rows = list(db.session.scalars(select(WebhookEvent).where(WebhookEvent.source == INTERNAL_SOURCE)))
        db.session.remove()
    return rows


def test_the_freeing_event_queues_a_job_under_the_waiting_users_key(app: Flask) -> None:
    frees, _ = _waiting_for_p7(app)
    assert _link(app) == (None, None)  # refused: p7@ is A1's person's
    report = _apply_key(app, inbox.entity_key(frees))
    assert [r.status for r in report.results] == ["applied"]
    assert _link(app) == (None, None)  # not synced in the freeing transaction
    (job,) = _jobs(app)
    assert (job.event_type, job.entity_key, job.status, job.revokes, job.organization_id is not None) == (
        freed_email_jobs.JOB_TYPE, member_key(WAITING), "received", False, True)
    assert job.payload["data"]["email"] == "p7@shared.test"
    assert job.payload["data"]["cause"]["source_event_id"] == frees["id"]

    report = _apply_key(app, member_key(WAITING))
    assert [(r.event_id, r.status) for r in report.results] == [(job.event_id, "applied")]
    assert _link(app) == ("p7@shared.test", "active")
    with app.app_context():
        rows = list(db.session.scalars(select(AuditEvent).where(AuditEvent.action.like("membership.%"),
                                                                AuditEvent.source_event_id == frees["id"])))
        db.session.remove()
    # The job's rows continue the freeing event's cause, with the reason of the link.
    assert rows
    assert {r.details.get("reason") for r in rows} == {"email_freed"}


def test_a_job_comes_after_the_waiting_users_pending_events_and_skips_a_user_that_moved_on(app: Flask) -> None:
    """A2's own later event (a move to p9@, stored before the freeing is applied) is applied before the job, whose
    event time is never before it (even from WorkOS's clock, ahead of ours here): the job is then ignored with a
    note, and A2 keeps what its own event decided."""
    frees, _ = _waiting_for_p7(app)
    moves_on = _person_user(ACME, 2, 9, "shared.test")
    with app.app_context():
        inbox.store(db.session(), moves_on)
        db.session.remove()
    _apply_key(app, inbox.entity_key(frees))
    first = _apply_key(app, member_key(WAITING))
    assert [r.event_id for r in first.results] == [moves_on["id"]]
    second = _apply_key(app, member_key(WAITING))
    assert [(r.status, r.note) for r in second.results] == [
        ("ignored", f"directory user {WAITING} no longer has the freed email")]
    assert _link(app) == ("p9@shared.test", "active")


@pytest.mark.postgres
def test_the_freeing_transaction_never_waits_for_the_waiting_users_key(app: Flask) -> None:
    """While another transaction holds A2's entity key (an applier applying A2's event), A1's event that frees
    A2's email applies and commits promptly; A2 is linked by its job once the key is free."""
    frees, _ = _waiting_for_p7(app)
    with app.app_context():
        engine = db.engine
    with engine.connect() as holder:
        holder.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": member_key(WAITING)})
        done: list[Any] = []
        started = time.monotonic()
        thread = threading.Thread(target=lambda: done.append(_apply_key(app, inbox.entity_key(frees))), daemon=True)
        thread.start()
        thread.join(10)
        elapsed = time.monotonic() - started
        assert not thread.is_alive(), "the freeing event waited for the waiting user's key"
        assert [r.status for r in done[0].results] == ["applied"]
        assert elapsed < 5, elapsed
        assert not _apply_key(app, member_key(WAITING)).claimed  # the job waits for the key, as A2's events do
        assert _link(app) == (None, None)
        holder.rollback()
    assert _apply_key(app, member_key(WAITING)).claimed == 1
    assert _link(app) == ("p7@shared.test", "active")


def test_a_webhook_cannot_forge_a_freed_email_job(app: Flask, client: FlaskClient) -> None:
    """The type is in our internal namespace: a signed webhook carrying it is refused and nothing is stored; no
    Events API filter names it, and only the internal registry handles it."""
    payload = {"id": "event_FORGEDFREED0001", "event": freed_email_jobs.JOB_TYPE, "created_at": "2030-01-01T00:00:00Z",
               "data": {"organization_id": "org_x", "directory_user_id": WAITING, "email": "p7@shared.test",
                        "cause": {"actor": {"type": "system", "id": "x"}, "request": {},
                                  "source_event_id": None, "reason": "forged"}}}
    response = post_event(client, app, json.dumps(payload))
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "malformed_event"
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(WebhookEvent)) == 0
        db.session.remove()
    assert freed_email_jobs.JOB_TYPE not in handled_event_types()
    assert freed_email_jobs.JOB_TYPE not in HANDLERS
    assert freed_email_jobs.JOB_TYPE in INTERNAL_HANDLERS
