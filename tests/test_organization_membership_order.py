"""WorkOS ``organization_membership.*`` events in any order: the newest version decides, a deletion included.

A deletion of a membership we had no row of was dropped, so the facts it carried were lost: an older ``created``
or ``updated`` delivered after it (WorkOS does not promise order) made an active member of a person WorkOS had
removed, and a first sign-in creating the membership while the deletion was applied recorded an active membership
(and a session) that nothing ended (a break-it review, by reading). A deletion is now kept as a deprovisioned row
with its version (``events.organization_memberships``, through ``membership_rows.created_or_locked``).
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from hatidata_auth.causes import NO_REQUEST
from hatidata_auth.extensions import db
from hatidata_auth.models import AuthSession, Membership, Organization, User, WebhookEvent, utcnow
from hatidata_auth.services import sign_in_membership, sign_in_person
from hatidata_auth.services.events.context import EventContext
from hatidata_auth.services.events.organization_memberships import on_organization_membership
from hatidata_auth.services.login import LoginDenied
from tests.test_inbox_batch_scope import ACME, _envelope, _prepare
from tests.test_membership_rows_race import _store_and_drain

_people = itertools.count(1)
# One person's memberships at WorkOS, in the order they happened: (type, membership, version, role). WorkOS gives a
# member it adds again a new membership id, and a deletion's payload is the membership as it was (its last
# ``updated_at``: a tie with the created or updated it ends).
HISTORY = [("created", 1, 1, "viewer"), ("deleted", 1, 1, None),
           ("created", 2, 3, "viewer"), ("updated", 2, 4, "developer"), ("deleted", 2, 4, None),
           ("created", 3, 6, "admin")]


def _event(kind: str, membership: int, version: int, role: str | None, workos_user_id: str) -> dict[str, Any]:
    stamp = f"2031-02-0{version}T00:00:00.000Z"
    data: dict[str, Any] = {"object": "organization_membership", "id": f"om_OMO_{workos_user_id}_{membership}",
                            "user_id": workos_user_id, "organization_id": ACME, "status": "active",
                            "created_at": "2031-02-01T00:00:00.000Z", "updated_at": stamp}
    if role is not None:
        data["role"] = {"slug": role}
    return _envelope(f"organization_membership.{kind}", data, stamp)


def _person(app: Flask) -> tuple[str, str]:
    n = next(_people)
    workos_user_id = f"user_OMO{n:06d}"
    with app.app_context():
        user = User(email=f"omo{n}@partners.test", workos_user_id=workos_user_id)
        db.session.add(user)
        db.session.commit()
        user_id = user.id
        db.session.remove()
    return workos_user_id, user_id


def _deliver(app: Flask, events: list[dict[str, Any]]) -> None:
    """Each event stored and applied before the next arrives (the order is the delivery's, not the versions')."""
    for payload in events:
        _store_and_drain(app, [payload])


def _membership(app: Flask, user_id: str) -> Membership | None:
    with app.app_context():
        m = db.session.scalar(select(Membership).join(Organization, Organization.id == Membership.organization_id)
                              .where(Organization.workos_organization_id == ACME, Membership.user_id == user_id))
        db.session.expunge_all()
        return m


@pytest.fixture
def acme_prepared(app: Flask) -> Flask:
    _prepare(app)
    return app


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(delivered=st.lists(st.sampled_from(range(len(HISTORY))), min_size=1, max_size=8))
@example(delivered=[1, 0])  # a deletion, then the late created it ends (equal updated_at)
@example(delivered=[4, 3])  # a deletion, then the late updated it ends (equal updated_at)
@example(delivered=[4, 2, 3])  # a deletion, then older events of the membership it ends
@example(delivered=[0, 1, 5, 4])  # a re-added member, then the deletion of an earlier membership
def test_the_newest_event_decides_in_any_delivery_order(acme_prepared: Flask, delivered: list[int]) -> None:
    """Any subset of a person's membership history, delivered in any order with repeats (a retry re-sends the
    same event): the membership is active, with the latest event's role, exactly when the latest is not a
    deletion; ties of a deletion with the event it ends included (a break-it review: the late ``created`` of a
    deleted membership, equal ``updated_at``, made an active member again)."""
    app = acme_prepared
    workos_user_id, user_id = _person(app)
    events = {i: _event(*HISTORY[i], workos_user_id) for i in set(delivered)}
    _deliver(app, [events[i] for i in delivered])
    kind, _, _, role = HISTORY[max(delivered)]
    m = _membership(app, user_id)
    if kind == "deleted":
        assert m is None or m.status != "active", (delivered, m and (m.status, m.role))
    else:
        assert m is not None
        assert (m.status, m.role) == ("active", role), delivered


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_a_removal_and_re_add_at_one_moment_keep_the_person_out(acme_prepared: Flask, order: tuple[int, ...]
                                                                 ) -> None:
    """m1 made an admin, deleted, and m2 added, all at one ``updated_at`` (within a millisecond): two memberships
    at one version are not ordered, so the deletion wins in every delivery order and no role of m1 is left (a
    break-it review: ordering them by the row's id let m1's late ``created`` make an admin again). WorkOS's next
    word on m2 lets the person in."""
    app = acme_prepared
    workos_user_id, user_id = _person(app)
    events = [_event("created", 1, 3, "admin", workos_user_id), _event("deleted", 1, 3, None, workos_user_id),
              _event("created", 2, 3, "developer", workos_user_id)]
    _deliver(app, [events[i] for i in order])
    m = _membership(app, user_id)
    assert m is not None
    assert m.status != "active", (order, m.role, m.details)
    _deliver(app, [_event("updated", 2, 4, "developer", workos_user_id)])
    m = _membership(app, user_id)
    assert m is not None
    assert (m.status, m.role) == ("active", "developer"), (order, m.details)


def test_a_deletion_of_an_unknown_membership_refuses_a_later_stale_sign_in(acme_prepared: Flask) -> None:
    """WorkOS removed the member after it authenticated them; the deletion is applied before the sign-in writes
    its membership: the sign-in is refused, as it is for any deprovisioned member."""
    app = acme_prepared
    workos_user_id, user_id = _person(app)
    _deliver(app, [_event("deleted", 1, 3, None, workos_user_id)])
    with app.app_context():
        s = db.session()
        org = s.scalar(select(Organization).where(Organization.workos_organization_id == ACME))
        assert org is not None
        signed = sign_in_person.upsert(s, org, {"id": workos_user_id, "email": f"{user_id}@partners.test"},
                                       utcnow())
        with pytest.raises(LoginDenied):
            sign_in_membership.upsert(s, app.extensions["hatidata_workos"].client, org, signed, "developer",
                                      NO_REQUEST)
        s.rollback()
    m = _membership(app, user_id)
    assert m is not None
    assert m.status == "deprovisioned"


@pytest.mark.postgres
def test_a_deletion_waits_for_a_first_sign_ins_membership_and_ends_its_session(acme_prepared: Flask) -> None:
    """The first sign-in has inserted the membership and recorded its session, uncommitted, when the applier
    applies ``organization_membership.deleted``: the deletion waits for the row, then deprovisions it and ends the
    session (it was dropped: no row was visible)."""
    from tests.test_inserted_user_race import _started, _wait_for_lock_wait

    app = acme_prepared
    workos_user_id, user_id = _person(app)
    inserted, go = threading.Event(), threading.Event()
    sid = f"session_OMO_{user_id}"

    def sign_in() -> None:
        s = db.session()
        org = s.scalar(select(Organization).where(Organization.workos_organization_id == ACME))
        assert org is not None
        signed = sign_in_person.upsert(s, org, {"id": workos_user_id, "email": f"{user_id}@partners.test"},
                                       utcnow())
        m = sign_in_membership.upsert(s, app.extensions["hatidata_workos"].client, org, signed, "developer",
                                      NO_REQUEST)
        s.add(AuthSession(workos_session_id=sid, organization_id=org.id, user_id=m.user_id,
                          auth_organization_id=org.id, expires_at=utcnow().replace(year=2099)))
        s.flush()
        inserted.set()
        assert go.wait(30)

    thread, errors = _started(app, sign_in)
    assert inserted.wait(30)
    deletion = _event("deleted", 1, 3, None, workos_user_id)
    applier = threading.Thread(target=_deliver, args=(app, [deletion]))
    applier.start()
    try:
        with app.app_context():
            _wait_for_lock_wait("INSERT INTO memberships%", event="transactionid")  # waits for the sign-in's row
    finally:
        go.set()
        thread.join(30)
        applier.join(30)
    assert errors == []
    m = _membership(app, user_id)
    assert m is not None
    assert m.status == "deprovisioned"
    with app.app_context():
        record = db.session.scalar(select(AuthSession).where(AuthSession.workos_session_id == sid))
        status = db.session.scalar(select(WebhookEvent.status).where(WebhookEvent.event_id == deletion["id"]))
        assert record is not None
        assert record.revoked_at is not None, "the session the sign-in recorded is ended"
        assert status == "applied"


@pytest.mark.postgres
def test_a_deletion_of_the_old_membership_racing_the_re_add_keeps_the_re_add(acme_prepared: Flask) -> None:
    """The inbox keyed these events by WorkOS membership id, so the deletion of the old membership and the re-add's
    ``created`` (a new id) could be applied at once (a break-it review): the deletion, having read the row before
    the re-add committed, wrote over it and locked the member out. The handler now locks the row before it compares:
    the deletion waits, reads the re-add, and changes nothing. (The inbox now also orders them: one key per person
    and organization; events stored under the old keys, by membership id, are still applied beside each other.)"""
    from hatidata_auth.services.inbox import entity_key
    from tests.test_inserted_user_race import _started, _wait_for_lock_wait

    app = acme_prepared
    workos_user_id, user_id = _person(app)
    created1, deleted1, created2 = (_event(*HISTORY[i], workos_user_id) for i in (0, 1, 2))
    assert entity_key(deleted1) == entity_key(created2)  # the inbox orders them; the handler holds on its own
    _deliver(app, [created1])
    flushed, go = threading.Event(), threading.Event()

    def apply(payload: dict[str, Any], pause: bool) -> None:
        s = db.session()
        ctx = EventContext(session=s, client=app.extensions["hatidata_workos"].client, event_id=payload["id"],
                           event_type=payload["event"], event_time=utcnow())
        on_organization_membership(ctx, payload["data"])
        s.flush()
        if pause:
            flushed.set()
            assert go.wait(30)

    re_add, re_add_errors = _started(app, lambda: apply(created2, True))
    assert flushed.wait(30)
    deletion, deletion_errors = _started(app, lambda: apply(deleted1, False))
    try:
        with app.app_context():
            _wait_for_lock_wait("SELECT memberships%FOR UPDATE%", event="transactionid")
    finally:
        go.set()
        re_add.join(30)
        deletion.join(30)
    assert (re_add_errors, deletion_errors) == ([], [])
    m = _membership(app, user_id)
    assert m is not None
    assert (m.status, m.role) == ("active", "viewer"), (m.status, m.details)


@settings(max_examples=50, deadline=None)
@given(a=st.tuples(st.sampled_from(["created", "updated", "deleted"]), st.integers(1, 3), st.integers(1, 2),
                   st.integers(1, 2)),
       b=st.tuples(st.sampled_from(["created", "updated", "deleted"]), st.integers(1, 3), st.integers(1, 2),
                   st.integers(1, 2)))
def test_the_inbox_orders_one_persons_membership_events_in_one_organization(
        a: tuple[str, int, int, int], b: tuple[str, int, int, int]) -> None:
    """Two ``organization_membership.*`` events share an entity key (the appliers' unit of order) exactly when they
    are about the same person in the same organization, whatever their membership ids (WorkOS gives a re-added
    member a new one)."""
    from hatidata_auth.services.inbox import entity_key

    def payload(kind: str, membership: int, person: int, org: int) -> dict[str, Any]:
        data = {"object": "organization_membership", "id": f"om_K{person}{org}{membership}",
                "user_id": f"user_K{person}", "organization_id": f"org_K{org}", "status": "active"}
        return {"id": f"event_K{kind}{membership}{person}{org}", "event": f"organization_membership.{kind}",
                "data": data, "created_at": "2031-02-01T00:00:00.000Z"}

    same = (a[2], a[3]) == (b[2], b[3])
    assert (entity_key(payload(*a)) == entity_key(payload(*b))) == same
