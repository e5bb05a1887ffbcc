"""The unit of work (``hatidata_auth.unit_of_work``): commit-time work lives on the app's own session class, never
on SQLAlchemy's global ``Session``; the cache invalidator is the app's, injected through ``session.info``; each
revocation evicts each cached entry once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, event, text
from sqlalchemy.orm import Session, SessionEvents

from hatidata_auth.causes import Actor, Cause
from hatidata_auth.extensions import db
from hatidata_auth.models import AuthSession, utcnow
from hatidata_auth.services import audit, events
from hatidata_auth.unit_of_work import (
    INVALIDATOR,
    AppSession,
    NotAUnitOfWork,
    invalidate_after_commit,
    undo_unless_committed,
)
from tests.api_support import Tenant, headers_for, make_tenant
from tests.credential_support import new_session

SESSION_EVENTS = sorted(name for name in vars(SessionEvents) if not name.startswith("_") and name != "dispatch")


class CountingInvalidator:
    """The app's invalidator, counting each eviction it is asked for before doing it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: Counter[tuple[str, str]] = Counter()

    def invalidate_session(self, workos_session_id: str) -> None:
        self.calls[("session", workos_session_id)] += 1
        if self.inner is not None:
            self.inner.invalidate_session(workos_session_id)

    def invalidate_api_key(self, key_id: str, key_hash: str | None = None) -> None:
        self.calls[("api_key", key_id)] += 1
        if self.inner is not None:
            self.inner.invalidate_api_key(key_id, key_hash)


def _listeners(session: Session) -> dict[str, int]:
    return {name: len(getattr(session.dispatch, name)) for name in SESSION_EVENTS if
            len(getattr(session.dispatch, name))}


def test_no_listener_on_sqlalchemys_session_after_create_app(app: Flask) -> None:
    """After ``create_app``, SQLAlchemy's ``Session`` class carries no listener for any session event, while the
    app's session (``db.session``) carries the audit, invalidation and metrics ones."""
    engine = create_engine("sqlite://")
    try:
        assert _listeners(Session(engine)) == {}
    finally:
        engine.dispose()
    with app.app_context():
        ours = _listeners(db.session())
    assert {"before_commit", "after_commit", "after_rollback", "after_flush"} <= set(ours)


def test_an_embedding_hosts_own_sessions_fire_none_of_our_listeners(app: Flask) -> None:
    """A host app with its own Flask-SQLAlchemy extension (and its plain sessions on our engine) gets sessions
    with no listener of ours: its commit runs no audit chaining, invalidation or metrics."""
    host = Flask("host_app")
    host.config["SQLALCHEMY_DATABASE_URI"] = "sqlite://"
    host_db = SQLAlchemy()
    host_db.init_app(host)
    with host.app_context():
        host_session = host_db.session()
        assert _listeners(host_session) == {}
        host_session.commit()
    with app.app_context(), Session(db.engine) as plain:
        assert _listeners(plain) == {}
        plain.commit()


def test_work_queued_on_a_foreign_session_fails(app: Flask) -> None:
    """Audit events or invalidations queued on a session that would never run them raise at once."""
    with app.app_context(), Session(db.engine) as plain:
        with pytest.raises(NotAUnitOfWork):
            audit.record(plain, action="test.queued", cause=Cause.by(Actor.system("host")), organization_id=None)
        with pytest.raises(NotAUnitOfWork):
            invalidate_after_commit(plain, "session", "session_host_1")
    with app.app_context(), AppSession(db.engine) as without_invalidator, pytest.raises(NotAUnitOfWork):
        invalidate_after_commit(without_invalidator, "api_key", "key_host_1", "hash")


_QUEUED = st.lists(st.tuples(st.sampled_from(["session", "api_key"]), st.sampled_from(["k1", "k2", "k3", "k4"]),
                             st.sampled_from([None, "h1"])), max_size=12)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(transactions=st.lists(st.tuples(_QUEUED, st.booleans()), min_size=1, max_size=5))
def test_each_queued_invalidation_runs_once_per_transaction(
        transactions: list[tuple[list[tuple[str, str, str | None]], bool]]) -> None:
    """Whatever is queued, however often, each ``(kind, key)`` is evicted exactly once when its transaction ends
    (committed or rolled back), and nothing before that."""
    engine = create_engine("sqlite://")
    counting = CountingInvalidator(None)
    try:
        with AppSession(engine, invalidator=counting) as session:
            for queued, commit in transactions:
                counting.calls.clear()
                session.execute(text("SELECT 1"))  # the transaction's own work, as a service's change
                for kind, key, key_hash in queued:
                    invalidate_after_commit(session, kind, key, key_hash)
                assert counting.calls == Counter()
                session.commit() if commit else session.rollback()
                assert counting.calls == Counter({(kind, key): 1 for kind, key, _ in queued})
    finally:
        engine.dispose()


@settings(max_examples=60, deadline=None, derandomize=True)
@given(steps=st.lists(st.tuples(_QUEUED, st.sampled_from(["outer", "savepoint_commit", "savepoint_rollback"])),
                      min_size=1, max_size=5), commit=st.booleans())
def test_no_invalidation_runs_before_the_outermost_transaction_ends(
        steps: list[tuple[list[tuple[str, str, str | None]], str]], commit: bool) -> None:
    """Work queued inside savepoints (an applier's event each) runs when the batch's transaction ends, never when
    a savepoint is released or rolled back (SQLAlchemy fires ``after_commit``/``after_rollback`` for those too): a
    process that reloaded the entry between the two would read the state from before the change committed."""
    engine = create_engine("sqlite://")
    counting = CountingInvalidator(None)
    try:
        with AppSession(engine, invalidator=counting) as session:
            session.execute(text("SELECT 1"))
            for queued, where in steps:
                savepoint = session.begin_nested() if where != "outer" else None
                for kind, key, key_hash in queued:
                    invalidate_after_commit(session, kind, key, key_hash)
                if savepoint is not None:
                    savepoint.commit() if where == "savepoint_commit" else savepoint.rollback()
                assert counting.calls == Counter()
            session.commit() if commit else session.rollback()
            assert counting.calls == Counter({(kind, key): 1 for queued, _ in steps for kind, key, _ in queued})
    finally:
        engine.dispose()


def _via_api(method: str, path: Callable[[Tenant], str], body: dict[str, Any] | None = None) -> Any:
    def run(app: Flask, tenant: Tenant) -> None:
        response = app.test_client().open(path(tenant), method=method, json=body, headers=headers_for(tenant, "admin"))
        assert response.status_code in (200, 201), response.get_json()
    return run


def _session_revoked_event(app: Flask, tenant: Tenant) -> None:
    with app.app_context():
        ctx = events.EventContext(session=db.session, client=app.extensions["hatidata_workos"].client,
                                          event_id="event_quokka_revoked", event_type="session.revoked",
                                          event_time=utcnow())
        events.sessions.on_session_revoked(ctx, {"id": tenant.ids["sid"]})
        db.session.commit()
        db.session.remove()


def _session_key(tenant: Tenant) -> set[tuple[str, str]]:
    return {("session", tenant.ids["sid"])}


def _member_keys(tenant: Tenant) -> set[tuple[str, str]]:
    return {("session", sid) for sid in tenant.ids["sids"].split()} | {("api_key", tenant.ids["key"])}


REVOCATIONS: dict[str, tuple[Callable[[Flask, Tenant], None], Callable[[Tenant], set[tuple[str, str]]]]] = {
    "one session": (_via_api("POST", lambda t: f"/api/v1/sessions/{t.ids['session']}/revoke"), _session_key),
    "a member's sessions": (_via_api("POST", lambda t: f"/api/v1/users/{t.ids['user']}/sessions/revoke"),
                            lambda t: {("session", sid) for sid in t.ids["sids"].split()}),
    "the organization's sessions": (_via_api("POST", lambda t: "/api/v1/organization/sessions/revoke"),
                                    lambda t: {("session", sid) for sid in t.ids["sids"].split()}),
    "session.revoked from WorkOS": (_session_revoked_event, _session_key),
    "a key revoked": (_via_api("POST", lambda t: f"/api/v1/api-keys/{t.ids['key']}/revoke"),
                      lambda t: {("api_key", t.ids["key"])}),
    "a key suspended": (_via_api("POST", lambda t: f"/api/v1/api-keys/{t.ids['key']}/suspend"),
                        lambda t: {("api_key", t.ids["key"])}),
    "a key rotated": (_via_api("POST", lambda t: f"/api/v1/api-keys/{t.ids['key']}/rotate"),
                      lambda t: {("api_key", t.ids["key"])}),
    "a member removed": (_via_api("DELETE", lambda t: f"/api/v1/members/{t.ids['member']}"), _member_keys),
    "a member's role changed": (_via_api("PATCH", lambda t: f"/api/v1/members/{t.ids['member']}",
                                         {"role": "developer"}), _member_keys),
}


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(st.integers(0, 3), st.sampled_from(["outer", "savepoint_commit",
                                                                    "savepoint_rollback"])), min_size=1, max_size=5),
       end=st.sampled_from(["commit", "rollback", "close", "failed_commit"]), failing=st.booleans())
def test_undos_run_once_newest_first_when_the_transaction_ends_uncommitted(
        steps: list[tuple[int, str]], end: str, failing: bool, caplog: pytest.LogCaptureFixture) -> None:
    """Undos registered anywhere in a transaction (savepoints included, released or rolled back) run when the
    outermost transaction ends without committing, each once, newest first, and never before; a commit drops them.
    One that fails is logged by name and the others still run."""
    caplog.clear()
    engine = create_engine("sqlite://")
    ran: list[int] = []

    def undo(n: int) -> None:
        ran.append(n)
        if failing and n == 0:
            raise RuntimeError("WorkOS is down")

    registered: list[int] = []
    try:
        with AppSession(engine) as session:
            session.execute(text("SELECT 1"))
            for count, where in steps:
                savepoint = session.begin_nested() if where != "outer" else None
                for _ in range(count):
                    n = len(registered)
                    undo_unless_committed(session, f"change {n}", lambda n=n: undo(n))  # type: ignore[misc]
                    registered.append(n)
                if savepoint is not None:
                    savepoint.commit() if where == "savepoint_commit" else savepoint.rollback()
                assert ran == []
            if end == "failed_commit":
                def refuse(_session: Session) -> None:
                    raise RuntimeError("the database broke a conflict")

                event.listen(session, "before_commit", refuse)
                with pytest.raises(RuntimeError):
                    session.commit()
                assert ran == []
                session.rollback()
            else:
                getattr(session, end)()
            assert ran == ([] if end == "commit" else list(reversed(registered)))
            session.execute(text("SELECT 1"))
            session.rollback()  # the next transaction has none of them
            assert ran == ([] if end == "commit" else list(reversed(registered)))
    finally:
        engine.dispose()
    logged = any("could not undo change 0" in r.getMessage() for r in caplog.records)
    assert logged == (failing and end != "commit" and 0 in registered)


@pytest.mark.parametrize("revocation", sorted(REVOCATIONS))
def test_every_revocation_invalidates_each_entry_once(app: Flask, emulator: Any, revocation: str) -> None:
    """Every way of revoking access evicts each affected cached session or key once, through the app's own
    invalidator, even where two services both ask for it (the member's sessions, ``session.revoked``)."""
    tenant = make_tenant(app, "Quokka")
    extra = [new_session(app, emulator, tenant.id, tenant.ids["user"])[0] for _ in range(2)]
    with app.app_context():
        sids = [db.session.get(AuthSession, sid).workos_session_id for sid in [tenant.ids["session"], *extra]]
        db.session.remove()
    tenant.ids["sid"], tenant.ids["sids"] = sids[0], " ".join(sids)
    counting = CountingInvalidator(app.extensions[INVALIDATOR])
    app.extensions[INVALIDATOR] = counting
    run, expected = REVOCATIONS[revocation]
    run(app, tenant)
    assert expected(tenant) <= set(counting.calls), counting.calls
    assert {entry: n for entry, n in counting.calls.items() if n != 1} == {}


@settings(max_examples=10, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(organization=st.sampled_from(["Zenith", "Marlowe", "Okapi"]), repeats=st.integers(1, 4))
def test_the_app_session_uses_its_own_apps_invalidator(app: Flask, organization: str, repeats: int) -> None:
    """``db.session`` takes the invalidator of the app whose context made it (no process-wide registry)."""
    counting = CountingInvalidator(app.extensions["hatidata_auth"].introspector)
    app.extensions[INVALIDATOR] = counting
    sid = f"session_{organization.lower()}_{repeats}"
    with app.app_context():
        for _ in range(repeats):
            invalidate_after_commit(db.session, "session", sid)
        db.session.commit()
        db.session.remove()
    assert counting.calls == Counter({("session", sid): 1})
