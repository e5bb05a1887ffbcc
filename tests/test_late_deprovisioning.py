"""A directory user's deactivation delivered after WorkOS's newer word (suspended, then restored at the IdP; the two
events delivered in reverse order) changes no state, yet ends what it ended in order: the person's sessions begun and
keys created by its time, within ``events.context.CLOCK_TOLERANCE`` (services/events/directory_state.py).

A break-it review found that the late deactivation was skipped as stale: a session from before the suspension lived
on. The property: for credentials created at any time around the deactivation (before it, within the tolerance after
it, well after it and after the restoring event), and either delivery order, every credential from before the
deactivation ends, every one from after it (plus the tolerance) lives, and the member is active at the end.
"""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from hatidata_auth.causes import Cause
from hatidata_auth.extensions import db
from hatidata_auth.models import ApiKey, AuthSession, Membership, User
from hatidata_auth.roles import permissions_for
from hatidata_auth.services import api_keys, inbox
from tests.support.dsync import drain_inbox, mirror_all
from tests.test_inbox_appliers import user_event

SUSPENDED, RESTORED = 60, 120  # the events' times: 2030-01-01T00:01:00Z and 00:02:00Z (user_event)
AT = datetime(2030, 1, 1, tzinfo=UTC)
NAMES = itertools.count()


def _credentials(app: Flask, email: str, offsets: list[int]) -> list[tuple[int, str, str]]:
    """For each offset (seconds after the suspension), a live session and an active key of the person created then:
    (offset, session id, key id)."""
    made = []
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == email))
        assert user is not None
        member = db.session.scalar(select(Membership).where(Membership.user_id == user.id))
        assert member is not None
        assert member.status == "active"
        for n, offset in enumerate(offsets):
            created = AT + timedelta(seconds=SUSPENDED + offset)
            record = AuthSession(organization_id=member.organization_id, user_id=user.id,
                                 workos_session_id=f"session_late_{uuid.uuid4().hex}", created_at=created,
                                 expires_at=created + timedelta(days=3650))
            db.session.add(record)
            key = api_keys.create_key(db.session(), organization_id=member.organization_id, owner_user_id=user.id,
                                      name=f"agent {n}", scopes=sorted(permissions_for(member.role))[:1],
                                      cause=Cause.system("test"))
            db.session.flush()
            db.session.get(ApiKey, key.key.id).created_at = created  # type: ignore[union-attr]
            made.append((offset, record.id, key.key.id))
        db.session.commit()
        db.session.remove()
    return made


def _apply(app: Flask, event: dict[str, Any]) -> None:
    with app.app_context():
        inbox.store(db.session(), event)
        db.session.remove()
    drain_inbox(app)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=st.lists(st.integers(-3600, 0), min_size=1, max_size=2),
       after=st.lists(st.integers(80, 3600), max_size=2), within=st.integers(1, 4), late=st.booleans())
def test_a_late_deactivation_ends_what_it_ended_in_order(app: Flask, before: list[int], after: list[int],
                                                         within: int, late: bool) -> None:
    mirror_all(app)
    name = f"LATE{next(NAMES)}"  # a new directory user per example (the app and its database are the test's)
    email = f"{name.lower()}@acme.test"
    _apply(app, user_event(name, 1))  # provisioned, active
    suspended, restored = user_event(name, SUSPENDED, state="suspended"), user_event(name, RESTORED)
    # Credentials from before the suspension (or within the clocks' tolerance after it) exist before both events.
    early = _credentials(app, email, [*before, within])
    if not late:  # in order: the suspension ends them, the restoring event gives access back
        _apply(app, suspended)
        _apply(app, restored)
        later = _credentials(app, email, after)  # signed in again after the restoring event
    else:  # the restoring event first; the person signs in again; then the suspension arrives
        _apply(app, restored)
        later = _credentials(app, email, after)
        _apply(app, suspended)
    with app.app_context():
        for offset, session_id, key_id in early:
            assert db.session.get(AuthSession, session_id).revoked_at is not None, offset  # type: ignore[union-attr]
            assert db.session.get(ApiKey, key_id).status == "suspended", offset  # type: ignore[union-attr]
        for offset, session_id, key_id in later:
            assert db.session.get(AuthSession, session_id).revoked_at is None, offset  # type: ignore[union-attr]
            assert db.session.get(ApiKey, key_id).status == "active", offset  # type: ignore[union-attr]
        user = db.session.scalar(select(User).where(User.email == email))
        member = db.session.scalar(select(Membership).where(Membership.user_id == user.id))  # type: ignore[union-attr]
        assert member is not None
        assert member.status == "active"
        db.session.remove()
