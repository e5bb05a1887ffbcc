"""The identity memo (``session_checks.IdentityMemo``) answers a session credential as resolving it again would.

The rule: a remembered identity is used only while nothing it was decided from can have changed (the bus live and
nothing evicted since, before the token's, the session's and the policy's instants, from the same address, last-seen
not due). Checked as a property: after any sequence of what changes a session's answer (time passing, the idle
timeout and absolute lifetime, the IP allowlist, the caller's address, a role change, a revocation, an unrelated
eviction), ``/api/v1/me`` by cookie and by bearer answers exactly as it does with the memo emptied; and that the memo
is used at all (a second request resolves nothing).
"""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from hatidata_auth.causes import Actor, Cause
from hatidata_auth.extensions import db
from hatidata_auth.models import AuthSession, Membership, Organization, User
from hatidata_auth.services import access_policy, sessions, tenant_admin
from hatidata_auth.services.access_policy import AccessPolicy, session_allowed_until, session_refusal
from hatidata_auth.services.credential_status import SessionStatus
from tests.auth_support import access_token, cookie_value, login, sync_organizations

SUBJECT = "dev@acme.test"
ADDRESSES = ("127.0.0.1", "10.1.2.3")


@pytest.fixture
def app_config(app_config: dict[str, Any], tmp_path: Any) -> dict[str, Any]:
    """Without Redis, the embedded default: the file cache and its revocation log, so the bus is live; each
    example of the property signs in anew, past the login route's rate limit."""
    app_config["RATELIMIT_ENABLED"] = False
    if not app_config.get("REDIS_URL"):
        app_config["CACHE_TYPE"] = "FileSystemCache"
        app_config["CACHE_DIR"] = str(tmp_path / "shared-cache")
    return app_config


@pytest.fixture
def resolutions(app: Flask, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The sessions whose status a request read (a request the memo answered reads none)."""
    introspector = app.extensions["hatidata_auth"].introspector
    seen: list[str] = []
    original = introspector.session_status

    def session_status(session: Any, workos_session_id: str) -> Any:
        seen.append(workos_session_id)
        return original(session, workos_session_id)

    monkeypatch.setattr(introspector, "session_status", session_status)
    return seen


def _me(client: FlaskClient, address: str, bearer: str | None = None, cookie: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {"Cookie": f"hatidata_session={cookie}"} \
        if cookie else {}
    response = client.get("/api/v1/me", headers=headers, environ_base={"REMOTE_ADDR": address})
    body = response.get_json()
    return response.status_code, body if response.status_code == 200 else (body or {}).get("error", {}).get("code")


def _signed_in(app: Flask, client: FlaskClient) -> tuple[str, str]:
    """Sign the subject in on *client*: ``(its bearer token, its WorkOS session id)``."""
    assert login(client, SUBJECT).status_code == 302
    assert app.extensions["hatidata_auth"].bus.wait_until_ready()  # Redis: subscribed (nothing is kept before)
    token = access_token(app, client)
    return token, str(jwt.decode(token, options={"verify_signature": False})["sid"])


def test_a_second_request_is_answered_from_the_memo(app: Flask, client: FlaskClient,
                                                    resolutions: list[str]) -> None:
    sync_organizations(app)
    token, sid = _signed_in(app, client)
    for bearer in (None, token):
        resolutions.clear()
        first, second = _me(client, ADDRESSES[0], bearer), _me(client, ADDRESSES[0], bearer)
        assert first == second
        assert first[0] == 200
        assert resolutions == [sid], "the second request resolved the session again"


def test_an_eviction_another_address_or_a_dead_bus_resolves_again_a_due_last_seen_is_noted(
        app: Flask, client: FlaskClient, resolutions: list[str], clock: list[float],
        monkeypatch: pytest.MonkeyPatch) -> None:
    sync_organizations(app)
    token, sid = _signed_in(app, client)
    rt = app.extensions["hatidata_auth"]
    for bearer in (None, token):
        _me(client, ADDRESSES[0], bearer)
        resolutions.clear()
        # An eviction of anything drops every memo. Evicted here only: on Redis a published eviction also comes
        # back to this process's listener, at a moment of its own, and would drop the memo the checks below keep.
        rt.bus.evict("session", "session_of_someone_else")
        assert _me(client, ADDRESSES[0], bearer)[0] == 200
        assert resolutions == [sid]
        resolutions.clear()
        assert _me(client, ADDRESSES[1], bearer)[0] == 200
        assert resolutions == [sid], "the memo answered another address"
    _me(client, ADDRESSES[0], token)
    resolutions.clear()
    before = rt.identities.cache.get(rt.identities.key(b"b", token))
    clock[0] = time.time() + rt.last_seen.interval  # the last-seen time is due: the memo notes it, as the full path
    assert _me(client, ADDRESSES[0], token)[0] == 200
    assert resolutions == [], "a due last-seen time resolved the session again"
    remembered = rt.identities.cache.get(rt.identities.key(b"b", token))
    assert remembered is before, "a noted use replaced the memo's entry (a new object per session and interval)"
    assert not rt.last_seen.due(SessionStatus._make(remembered.status)), \
        "the memo answered without noting the session's use"
    assert rt.introspector.held_session(sid).last_seen_at == clock[0], "the session's status in memory was not slid"
    monkeypatch.setattr(rt.bus, "local_enabled", lambda: False)
    resolutions.clear()
    _me(client, ADDRESSES[0], token)
    _me(client, ADDRESSES[0], token)
    assert resolutions == [sid, sid], "the memo answered while the bus could not be trusted"


def test_an_eviction_while_resolving_is_not_remembered_past(app: Flask, client: FlaskClient,
                                                           resolutions: list[str]) -> None:
    """A revocation that lands between reading the session's status and remembering the identity (another
    thread's eviction) leaves nothing remembered: the next request resolves again."""
    sync_organizations(app)
    token, sid = _signed_in(app, client)
    rt = app.extensions["hatidata_auth"]
    resolve = rt.introspector.session_status

    def evicted_meanwhile(session: Any, workos_session_id: str) -> Any:
        status = resolve(session, workos_session_id)
        rt.bus.evict("session", "session_of_someone_else")
        return status

    rt.introspector.session_status = evicted_meanwhile
    rt.identities.cache.clear()
    assert _me(client, ADDRESSES[0], token)[0] == 200
    assert len(rt.identities.cache) == 0, "an identity resolved across an eviction was remembered"
    rt.introspector.session_status = resolve
    resolutions.clear()
    assert _me(client, ADDRESSES[0], token)[0] == 200
    assert resolutions == [sid]
    assert len(rt.identities.cache) == 1


@pytest.mark.parametrize(("rule", "seconds", "refusal"), [("idle_timeout", 300, "session_idle_timeout"),
                                                          ("absolute_lifetime", 240, "session_expired")])
def test_the_memo_lapses_at_the_policys_instant(app: Flask, clock: list[float], resolutions: list[str],
                                                 rule: str, seconds: int, refusal: str) -> None:
    """Just before the instant a rule of time ends the session, the memo answers; just after, the session is
    refused as it is with the memo emptied (no last-seen write moves the instant: it is never due)."""
    sync_organizations(app)
    rt = app.extensions["hatidata_auth"]
    rt.last_seen.interval = 10**7
    client = app.test_client()
    token, sid = _signed_in(app, client)
    org_id = client.get("/api/v1/me").get_json()["organization_id"]
    caller = app.test_client(use_cookies=False)
    _apply(app, clock, org_id, sid, {}, (rule, seconds))
    signed_in = clock[0]
    key = rt.identities.key(b"b", token)
    for _ in range(100):  # on Redis the policy change's eviction arrives on the listener thread, maybe later
        assert _me(caller, ADDRESSES[0], token)[0] == 200
        time.sleep(0.05)
        if rt.identities.get(key, ADDRESSES[0]) is not None:
            break
    resolutions.clear()
    clock[0] = signed_in + seconds - 5
    assert _me(caller, ADDRESSES[0], token)[0] == 200, "the memo lapsed early"
    assert resolutions == [], "the memo lapsed early"
    clock[0] = signed_in + seconds + 1
    assert _me(caller, ADDRESSES[0], token) == (401, refusal), "the memo answered past the policy's instant"


# --- the property ------------------------------------------------------------------------------------------------

OPERATIONS = st.one_of(
    st.tuples(st.just("advance"), st.sampled_from([0, 20, 61, 299, 301, 3600, 90_000])),
    st.tuples(st.just("idle_timeout"), st.sampled_from([300, 3600, 86_400])),
    st.tuples(st.just("absolute_lifetime"), st.sampled_from([None, 240, 7200])),
    st.tuples(st.just("allowlist"), st.sampled_from([None, ["10.0.0.0/8"], ["127.0.0.1", "10.0.0.0/8"]])),
    st.tuples(st.just("address"), st.sampled_from(ADDRESSES)),
    st.tuples(st.just("role"), st.sampled_from(["viewer", "developer"])),  # never the only admin
    st.tuples(st.just("evict_other"), st.just(None)),
    st.tuples(st.just("revoke"), st.just(None)),
)


def _apply(app: Flask, clock: list[float], org_id: str, sid: str, state: dict[str, Any], op: tuple[str, Any]) -> None:
    kind, value = op
    session = db.session()
    if kind == "advance":
        clock[0] += value
    elif kind == "address":
        state["address"] = value
    elif kind == "evict_other":
        app.extensions["hatidata_auth"].bus.evict("session", "session_of_someone_else")  # not published: see above
    elif kind == "revoke":
        record = session.scalars(select(AuthSession).where(AuthSession.workos_session_id == sid)).one()
        sessions.revoke_session(session, None, organization_id=org_id, session_id=record.id,
                                cause=Cause.by(Actor.system()))
    elif kind == "role":
        membership = session.scalars(select(Membership).join(User, User.id == Membership.user_id).where(
            Membership.organization_id == org_id, User.email == SUBJECT)).one()
        tenant_admin.change_member_role(session, app.extensions["hatidata_workos"].client, organization_id=org_id,
                                        membership_id=membership.id, role=value, cause=Cause.by(Actor.system()))
    else:
        org = session.get(Organization, org_id)
        assert org is not None
        column = {"idle_timeout": "session_active_ttl", "absolute_lifetime": "session_absolute_ttl",
                  "allowlist": "ip_allowlist"}[kind]
        setattr(org, column, access_policy.parse_allowlist(value) if kind == "allowlist" else value)
    session.commit()


@pytest.mark.parametrize("touch_interval", [60, 10**7], ids=["touch-each-minute", "touch-never"])
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(operations=st.lists(OPERATIONS, min_size=1, max_size=8))
def test_the_memo_answers_as_resolving_again_would(app: Flask, clock: list[float], touch_interval: int,
                                                   operations: list[tuple[str, Any]]) -> None:
    """With last-seen writes each minute (most steps of time then resolve again anyway) and never (the memo's
    own instants decide)."""
    sync_organizations(app)
    clock[0] = time.time()  # each example signs in now
    rt = app.extensions["hatidata_auth"]
    rt.last_seen.interval = touch_interval
    client = app.test_client()
    token, sid = _signed_in(app, client)
    org_id = client.get("/api/v1/me").get_json()["organization_id"]
    cookie = cookie_value(client)
    caller = app.test_client(use_cookies=False)  # the same credential every time (a refusal clears the cookie)
    state = {"address": ADDRESSES[0]}
    assert _me(caller, ADDRESSES[0], bearer=token)[0] == _me(caller, ADDRESSES[0], cookie=cookie)[0] == 200
    try:
        for step, op in enumerate([("advance", 0), *operations]):
            _apply(app, clock, org_id, sid, state, op)
            for kind, credential in ((b"b", {"bearer": token}), (b"c", {"cookie": cookie})):
                key = rt.identities.key(kind, token if kind == b"b" else cookie)
                if step == 0:
                    assert rt.identities.cache.get(key) is not None, "the memo holds nothing to answer with"
                remembered = _me(caller, state["address"], **credential)
                rt.identities.cache.pop(key)  # this credential's only: the other's stays for the next step
                assert remembered == _me(caller, state["address"], **credential), (op, list(credential))
    finally:  # the next example starts from the organization's defaults
        org = db.session().get(Organization, org_id)
        assert org is not None
        org.session_active_ttl = org.session_absolute_ttl = org.ip_allowlist = None
        db.session().commit()


# --- the policy's instant ----------------------------------------------------------------------------------------

INSTANTS = st.floats(min_value=0, max_value=10_000, allow_nan=False)


@given(idle=st.integers(1, 5000), lifetime=st.one_of(st.none(), st.integers(1, 5000)), remembered=st.booleans(),
       created=INSTANTS, seen=st.one_of(st.none(), INSTANTS), signed_in=st.one_of(st.none(), INSTANTS),
       now=INSTANTS, later=st.floats(0, 20_000, allow_nan=False))
def test_the_policy_refuses_nothing_new_before_its_instant(idle: int, lifetime: int | None, remembered: bool,
                                                          created: float, seen: float | None,
                                                          signed_in: float | None, now: float, later: float) -> None:
    policy = AccessPolicy("org", idle, lifetime, 3600, (), (), False, 600)
    times = {"created_at": created, "last_seen_at": seen, "remembered": remembered, "authenticated_at": signed_in}
    until = session_allowed_until(policy, **times)

    def refused(at: float) -> str | None:
        return session_refusal(policy, address=None, now=at, **times)

    if refused(now) is None and now + later < until:
        assert refused(now + later) is None
    if until != float("inf"):
        assert refused(until + 1e-3) is not None  # tight, not merely safe (to the float rounding of the sums)

