"""Credential state transitions racing each other across database connections (PostgreSQL and SQLite).

Rule (docs/security.md, rule 1): a transition reads the record's state under a row lock, so the first of two
concurrent transitions wins and the second sees it: a revocation's who and why are never overwritten, and a
revoked key never becomes suspended (which an admin could reinstate), and a key is rotated once. Each case holds the
first transition's transaction open while the second one runs in another connection, then commits it. On SQLite the
row lock is the database's write turn, taken before the read (``unit_of_work._write_turn_before_row_locks``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from hatidata_auth.causes import Actor, Cause
from hatidata_auth.models import ApiKey, AuthSession, Membership, Organization, User, utcnow
from hatidata_auth.services import api_keys, sessions
from hatidata_auth.services.session_refresh import RefreshFailed, record_refresh
from hatidata_auth.unit_of_work import AppSession
from tests.support.races import race


def _setup(db_session: Any) -> tuple[str, str, str]:
    org = Organization(name="Race Co", domains=["race-co.test"])
    user = User(email="racer@race-co.test")
    db_session.add_all([org, user])
    db_session.flush()
    db_session.add(Membership(organization_id=org.id, user_id=user.id, role="admin", status="active"))
    db_session.add(AuthSession(organization_id=org.id, user_id=user.id, workos_session_id="session_race",
                               expires_at=utcnow() + timedelta(hours=1)))
    db_session.flush()
    created = api_keys.create_key(db_session, organization_id=org.id, owner_user_id=user.id, name="agent",
                                  scopes=["members:read"], cause=Cause.system("test"))
    db_session.commit()
    return org.id, user.id, created.key.id


def _race(app: Any, first: Callable[[AppSession], object], second: Callable[[AppSession], object]) -> None:
    errors = race(app, first, second)
    assert not errors, errors


def _session(session: AppSession) -> AuthSession:
    record = sessions.find_by_workos_session_id(session, "session_race")
    assert record is not None
    return record


SESSION_ENDINGS: dict[str, Callable[[AppSession], object]] = {
    "admin": lambda s: sessions.revoke_records(s, None, [_session(s)],
                                               cause=Cause.by(Actor("user", "u1"), reason="admin")),
    "webhook": lambda s: sessions.revoke_by_workos_session_id(
        s, None, workos_session_id="session_race", cause=Cause.from_event("event_1", reason="revoked_at_workos",
                                                                          actor=Actor.workos()), call_workos=False),
    "refresh_rejected": lambda s: record_refresh(
        s, workos_session_id="session_race", cause=Cause.system("refresh"),
        failure=RefreshFailed("rejected", cause="invalid_grant", transient=False)),
}


@pytest.mark.parametrize("first", sorted(SESSION_ENDINGS))
@pytest.mark.parametrize("second", sorted(SESSION_ENDINGS))
def test_the_first_session_ending_wins(app: Any, db_session: Any, first: str, second: str) -> None:
    _setup(db_session)
    _race(app, SESSION_ENDINGS[first], SESSION_ENDINGS[second])
    db_session.expire_all()
    record = db_session.scalar(select(AuthSession).where(AuthSession.workos_session_id == "session_race"))
    expected = {"admin": "admin", "webhook": "revoked_at_workos", "refresh_rejected": "refresh rejected"}[first]
    assert record.revoked_at is not None
    assert record.revoked_reason.startswith(expected), (first, second, record.revoked_reason)


def _key_steps(org_id: str, user_id: str, key_id: str) -> dict[str, Callable[[AppSession], object]]:
    admin = Cause.by(Actor.system("admin-1"), reason="admin")
    return {
        "revoke": lambda s: api_keys.revoke_key(s, organization_id=org_id, key_id=key_id, cause=admin),
        "suspend": lambda s: api_keys.suspend_key(s, organization_id=org_id, key_id=key_id, cause=admin),
        "deprovision": lambda s: api_keys.suspend_user_keys(s, organization_id=org_id, user_id=user_id,
                                                            cause=Cause.from_event("event_2",
                                                                                   actor=Actor.workos())),
    }


@pytest.mark.parametrize("first", ["revoke", "suspend", "deprovision"])
@pytest.mark.parametrize("second", ["revoke", "suspend", "deprovision"])
def test_a_revoked_key_stays_revoked(app: Any, db_session: Any, first: str, second: str) -> None:
    org_id, user_id, key_id = _setup(db_session)
    steps = _key_steps(org_id, user_id, key_id)
    _race(app, steps[first], steps[second])
    db_session.expire_all()
    key = db_session.get(ApiKey, key_id)
    if "revoke" in (first, second):
        assert key.status == "revoked", (first, second, key.status)
        assert key.revoked_by == "admin-1"
    else:
        assert key.status == "suspended"


def test_a_key_is_rotated_once(app: Any, db_session: Any) -> None:
    """Two rotations of one key at once: one successor; the second sees the first's grace period and is refused."""
    org_id, _user_id, key_id = _setup(db_session)
    rotate: Callable[[AppSession], object] = lambda s: api_keys.rotate_key(  # noqa: E731 - one step, named
        s, organization_id=org_id, key_id=key_id, cause=Cause.by(Actor.system("admin-1")), grace_seconds=60)
    errors = race(app, rotate, rotate)
    assert [getattr(e, "status", e) for e in errors] == [409]
    db_session.expire_all()
    successors = db_session.scalars(select(ApiKey).where(ApiKey.rotated_from_id == key_id)).all()
    assert len(successors) == 1
