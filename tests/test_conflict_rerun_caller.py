"""A write run again after a lock conflict is authorized again: it goes on only while its caller's credential
grants, by the committed rows, what it granted when the request was authorized (``conflict_reruns``).

Found by a break-it review: an admin's API key changed a member's role; the first attempt lost a deadlock to the
transaction that removed that admin (keys suspended, membership deprovisioned), and the rerun, with the identity
resolved before the first attempt, promoted the member anyway. Here the winner commits each way a grant can end
or narrow (credential revoked, member removed or demoted, organization suspended), for an API key and a browser
session, between the first attempt and the rerun: the change answers 503 and the member keeps their role; a
change that leaves the caller's grant alone is run again (200). The winner also narrows the access policy (an IP
allowlist without the caller's address). A second review found the first fix's read too early: PostgreSQL rolls the
loser back while the winner has yet to commit; on PostgreSQL the winner also commits only after the rollback, having
locked the organization and written its change first, as a real winner does (``caller_grants``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg.errors
import pytest
from flask import Flask, g, has_request_context
from flask.testing import FlaskClient
from sqlalchemy import event, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import ORMExecuteState, Session

from hatidata_auth import lasting_effects
from hatidata_auth.extensions import db
from hatidata_auth.models import ApiKey, AuthSession, Membership, Organization, User, utcnow
from tests.api_support import Tenant, headers_for, make_tenant
from tests.auth_support import ACME, csrf_headers, login, sync_organizations

Winner = Callable[[Session, "Caller"], None]


class Caller:
    """Who changes the target's role, and how they authenticate."""

    def __init__(self, organization_id: str, user_id: str, *, key_id: str | None = None,
                 session_id: str | None = None) -> None:
        self.organization_id, self.user_id, self.key_id, self.session_id = organization_id, user_id, key_id, session_id


def _revoke_credential(s: Session, caller: Caller) -> None:
    if caller.key_id is not None:
        s.execute(update(ApiKey).where(ApiKey.id == caller.key_id).values(status="revoked"))
    else:
        s.execute(update(AuthSession).where(AuthSession.id == caller.session_id).values(revoked_at=utcnow()))


def _membership(caller: Caller) -> Any:
    return update(Membership).where(Membership.organization_id == caller.organization_id,
                                    Membership.user_id == caller.user_id)


WINNERS: dict[str, Winner] = {
    "credential revoked": _revoke_credential,
    "member deprovisioned": lambda s, c: s.execute(_membership(c).values(status="deprovisioned")),
    "member demoted": lambda s, c: s.execute(_membership(c).values(role="developer")),
    "organization suspended": lambda s, c: s.execute(
        update(Organization).where(Organization.id == c.organization_id).values(status="suspended")),
    "caller's address not allowed": lambda s, c: s.execute(
        update(Organization).where(Organization.id == c.organization_id)
        .values(ip_allowlist=["192.0.2.0/24"], ip_allowlist_api_keys=True)),
}


@pytest.fixture(params=["commits first", "commits after the rollback", "writes rows only, commits after"])
def conflict_won_by(request: pytest.FixtureRequest, app: Flask, monkeypatch: pytest.MonkeyPatch
                    ) -> Iterator[list[Any]]:
    """Once armed (append the winner and its caller), the first ORM statement of a rerun view's first attempt
    raises the deadlock PostgreSQL's driver raises, the winner (another thread, its own session) having locked the
    organization (or not) and written its change; it commits before, or (PostgreSQL) only after, the loser's
    rollback."""
    after, lock_organization = request.param != "commits first", request.param != "writes rows only, commits after"
    if after and db_url_is_sqlite(app):
        pytest.skip("SQLite never rolls a writer back to break a conflict")  # covered by the PostgreSQL run
    armed: list[Any] = []
    threads: list[threading.Thread] = []
    mark = lasting_effects.mark

    def marked() -> lasting_effects.Mark:
        g.rerun_view_started = True
        return mark()

    def first_statement(state: ORMExecuteState) -> None:
        if len(armed) == 2 and has_request_context() and g.get("rerun_view_started"):
            winner, caller = armed
            armed.append("won")
            written = threading.Event()
            thread = threading.Thread(target=_win, args=(app, lambda s: winner(s, caller), caller, written, after,
                                                         lock_organization))
            thread.start()
            threads.append(thread)
            assert written.wait(10)
            if not after:
                thread.join()
            raise OperationalError("SELECT", {}, psycopg.errors.DeadlockDetected("the database broke a conflict"))

    monkeypatch.setattr(lasting_effects, "mark", marked)
    event.listen(Session, "do_orm_execute", first_statement)
    yield armed
    event.remove(Session, "do_orm_execute", first_statement)
    for thread in threads:
        thread.join(10)


def db_url_is_sqlite(app: Flask) -> bool:
    return str(app.config["SQLALCHEMY_DATABASE_URI"]).startswith("sqlite")


def _win(app: Flask, change: Callable[[Session], None], caller: Caller, written: threading.Event,
         after: bool, lock_organization: bool) -> None:
    """The winner: the organization locked (as an admin's change locks it; else only the rows it writes), the
    change written, then committed; with *after*, only a while after it said it had written."""
    with app.app_context():
        s = db.session()
        if lock_organization:
            s.execute(select(Organization.id).where(Organization.id == caller.organization_id).with_for_update())
        change(s)
        written.set()
        if after:
            time.sleep(0.5)  # the loser's rollback and its rerun's check come meanwhile
        s.commit()
        db.session.remove()


def _role(app: Flask, membership_id: str) -> str | None:
    with app.app_context():
        found = db.session.get(Membership, membership_id)
        role = found.role if found is not None else None
        db.session.remove()
    return role


def _key_caller(app: Flask, tenant: Tenant) -> Caller:
    with app.app_context():
        key_id = db.session.scalar(select(ApiKey.id).where(ApiKey.organization_id == tenant.id,
                                                           ApiKey.owner_user_id == tenant.users["admin"]))
        db.session.remove()
    assert key_id is not None
    return Caller(tenant.id, tenant.users["admin"], key_id=key_id)


def _session_caller(app: Flask, client: FlaskClient) -> tuple[Caller, str]:
    """*client* signed in as ACME's admin; the caller, and a manual viewer of ACME to promote."""
    orgs = sync_organizations(app)
    assert login(client, "admin@acme.test").status_code == 302
    with app.app_context():
        s = db.session()
        admin = s.scalars(select(User).where(User.email == "admin@acme.test")).one()
        session_id = s.scalars(select(AuthSession.id).where(AuthSession.user_id == admin.id)
                               .order_by(AuthSession.created_at.desc())).first()
        target = User(email="promoted@acme.test", workos_user_id="user_rerun_promoted")
        s.add(target)
        s.flush()
        membership = Membership(organization_id=orgs[ACME], user_id=target.id, role="viewer",
                                role_source="manual", source="manual", status="active")
        s.add(membership)
        s.commit()
        caller, target_id = Caller(orgs[ACME], admin.id, session_id=session_id), membership.id
        s.close()
        db.session.remove()
    return caller, target_id


@pytest.mark.parametrize("credential", ["api_key", "session"])
@pytest.mark.parametrize("winner", [*sorted(WINNERS), None])
def test_a_rerun_goes_on_only_while_its_caller_holds_the_same_grant(
        app: Flask, client: FlaskClient, emulator: Any, conflict_won_by: list[Any], credential: str,
        winner: str | None) -> None:
    if credential == "api_key":
        tenant = make_tenant(app, "Rerunco")
        caller, target, headers = _key_caller(app, tenant), tenant.members["viewer"], headers_for(tenant, "admin")
    else:
        caller, target = _session_caller(app, client)
        headers = csrf_headers(client)
    unrelated: Winner = lambda s, c: s.execute(  # noqa: E731 - a change of another member only
        update(Membership).where(Membership.id == target).values(updated_at=utcnow()))
    conflict_won_by.extend([WINNERS[winner] if winner else unrelated, caller])
    answer = client.patch(f"/api/v1/members/{target}", json={"role": "admin"}, headers=headers)
    assert conflict_won_by[2:] == ["won"], "the first attempt met the conflict"
    if winner is None:
        assert answer.status_code == 200, answer.get_json()
        assert _role(app, target) == "admin"
    else:
        assert answer.status_code == 503, answer.get_json()
        assert answer.get_json()["error"]["message"].startswith("The change crossed a concurrent one")
        assert answer.headers["Retry-After"]
        assert _role(app, target) == "viewer"


@pytest.mark.parametrize("accept", ["application/json", "text/html"])
def test_a_conflict_that_outlasts_the_reruns_says_so(app: Flask, accept: str) -> None:
    from hatidata_auth.conflict_reruns import rerun_on_conflict

    attempts: list[int] = []

    def view() -> Any:
        attempts.append(1)
        raise OperationalError("COMMIT", {}, psycopg.errors.SerializationFailure("could not serialize access"))

    rerun = rerun_on_conflict(view)
    app.extensions["csrf"].exempt(rerun)  # a bare route: no browser session to forge
    app.add_url_rule("/test-only/always-crossed", "test_only_always_crossed", rerun, methods=["POST"])
    answer = app.test_client().post("/test-only/always-crossed", headers={"Accept": accept})
    assert (answer.status_code, len(attempts)) == (503, 3)
    assert answer.headers["Retry-After"]
    assert "The change crossed a concurrent one" in answer.get_data(as_text=True)


@pytest.mark.parametrize("lapsed", ["idle timeout", "sliding expiry"])
def test_the_requests_own_use_of_its_session_counts_in_the_rerun_check(
        app: Flask, client: FlaskClient, emulator: Any, lapsed: str) -> None:
    """The request's authorization is a use of its session; its last-seen write is only queued (written off the
    request path), so by the committed rows alone a session used within its idle timeout, or its sliding expiry,
    of the rerun would look lapsed and be refused (a break-it review's L2). Counted from the request's use, it is
    granted; a revocation still refuses it, and a use after *now* counts as one at *now*."""
    from hatidata_auth.roles import permissions_for
    from hatidata_auth.services import caller_grants

    caller, _ = _session_caller(app, client)
    now, idle = time.time(), 600
    with app.app_context():
        s = db.session()
        values: dict[str, Any] = {"remembered": False, "last_seen_at": _utc(now - idle - 60)}
        if lapsed == "sliding expiry":
            values = {"remembered": False, "last_seen_at": _utc(now - 60), "expires_at": _utc(now - 1)}
        s.execute(update(AuthSession).where(AuthSession.id == caller.session_id).values(**values))
        s.commit()

        def grant(seen_at: float | None) -> Any:
            found = caller_grants.grant_now(
                s, organization_id=caller.organization_id, user_id=caller.user_id, session_id=caller.session_id,
                api_key_id=None, address="127.0.0.1", now=now, authenticated_at=None, default_idle=idle,
                default_remembered=30 * 86400, seen_at=seen_at)
            s.rollback()
            return found

        assert grant(None) is None, "by the committed rows alone the session has lapsed"
        assert grant(now - 2) == (caller.organization_id, permissions_for("admin"))
        assert grant(now - idle - 30) is None, "a use before the lapse does not extend it past now"
        assert grant(now + idle * 10) == (caller.organization_id, permissions_for("admin"))
        s.execute(update(AuthSession).where(AuthSession.id == caller.session_id).values(revoked_at=utcnow()))
        s.commit()
        assert grant(now - 2) is None, "a revoked session stays refused"
        db.session.remove()


def _utc(epoch: float) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC)


def test_a_rerun_check_counts_from_the_requests_authorization(
        app: Flask, client: FlaskClient, emulator: Any, conflict_won_by: list[Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The view passes the instant the request was authorized (``hatidata.identity_at``) as its use."""
    from hatidata_auth.services import caller_grants

    caller, target = _session_caller(app, client)
    asked: list[tuple[float | None, float]] = []
    grant_now = caller_grants.grant_now

    def spied(*args: Any, **kwargs: Any) -> Any:
        asked.append((kwargs["seen_at"], kwargs["now"]))
        return grant_now(*args, **kwargs)

    monkeypatch.setattr(caller_grants, "grant_now", spied)
    conflict_won_by.extend([lambda s, c: s.execute(
        update(Membership).where(Membership.id == target).values(updated_at=utcnow())), caller])
    before = time.time()
    answer = client.patch(f"/api/v1/members/{target}", json={"role": "admin"}, headers=csrf_headers(client))
    assert answer.status_code == 200, answer.get_json()
    [(seen_at, now)] = asked
    assert seen_at is not None
    assert before <= seen_at <= now
