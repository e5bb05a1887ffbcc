"""A directory user waiting for an email (``directory_people.waiting_for``) is linked when ANOTHER directory user's
event frees it, by a job queued under the waiting user's own entity key (``services.freed_email_jobs``), applied
after the user's own pending events. Its own event (a suspension) committed meanwhile by another applier is kept:
the job syncs the user from the stored state (before the job, the freeing event synced the user inline from a read
taken before the suspension committed, and overwrote it)."""

from __future__ import annotations

import threading
from typing import Any

from flask import Flask
from sqlalchemy import select

from hatidata_auth.extensions import db
from hatidata_auth.models import DirectoryUser, Membership
from hatidata_auth.services import directory_people, inbox, inbox_worker
from tests import test_inbox_batch_scope as bs
from tests.test_breakroll_batches import _person_user

ACME = bs.ACME


def test_a_suspension_committed_while_the_freed_email_syncs_the_waiting_user_is_kept(app: Flask,
                                                                                   monkeypatch: Any) -> None:
    bs._prepare(app)
    holder = _person_user(ACME, 1, 7, "shared.test")  # A1 links person p7
    waiting = _person_user(ACME, 2, 7, "shared.test")  # A2 wants p7@: refused (held by A1's person), waits
    bs._apply(app, [[bs._group_created()], [holder], [waiting]], 1)
    frees = _person_user(ACME, 1, 8, "shared.test")  # A1 moves to p8@: p7@ is free, A2 is synced
    suspends = _person_user(ACME, 2, 7, "shared.test", "suspended")  # A2's own, later event
    client = app.extensions["hatidata_workos"].client
    with app.app_context():
        inbox.store(db.session(), frees)
        inbox.store(db.session(), suspends)
        db.session.commit()
        db.session.remove()

    done: list[Any] = []
    original = directory_people.waiting_for

    def suspend_meanwhile(ctx: Any, org: Any, du: Any, email: str) -> list[DirectoryUser]:
        found = original(ctx, org, du, email)  # A2 read (active) by the applier of A1's event
        def other_applier() -> None:
            with app.app_context():
                try:  # on SQLite the database is locked by the first applier: the drain below applies it
                    done.append(inbox_worker.apply_batch(db.session(), client, limit=1,
                                                         entity_key=inbox.entity_key(suspends)))
                except Exception as exc:  # noqa: BLE001 - recorded, the end state is what is asserted
                    done.append(exc)
                finally:
                    db.session.remove()
        thread = threading.Thread(target=other_applier)
        thread.start()
        thread.join()
        return found

    monkeypatch.setattr(directory_people, "waiting_for", suspend_meanwhile)
    with app.app_context():
        inbox_worker.apply_batch(db.session(), client, limit=1, entity_key=inbox.entity_key(frees))
        db.session.remove()
    monkeypatch.setattr(directory_people, "waiting_for", original)
    with app.app_context():
        inbox_worker.drain(db.session(), client)
        s = db.session()
        du = s.scalar(select(DirectoryUser).where(DirectoryUser.workos_id == "directory_user_A2"))
        assert du is not None
        assert du.state == "suspended"
        active = [m for m in s.scalars(select(Membership).where(Membership.directory_user_id == du.workos_id))
                  if m.status == "active"]
        assert active == [], [(m.user_id, m.status, m.role) for m in active]
        db.session.remove()
