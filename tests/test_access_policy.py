"""Per-organization access policy (issue #16, item 1): validation, enforcement on cookie, bearer and API key,
IP allowlists (IPv4 and IPv6, per-key overrides), the lock-out guard, audit, tenant isolation, eviction."""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import event, select

from hatidata_auth.extensions import db
from hatidata_auth.models import AuditEvent, Organization
from hatidata_auth.services import access_policy
from hatidata_auth.services.access_policy import AccessPolicy, address_allowed, parse_allowlist, session_refusal
from tests.auth_support import access_token, csrf_headers, login, sync_organizations

POLICY = "/api/v1/organization/policy"
OUTSIDE_V4, OUTSIDE_V6 = "198.51.100.7", "2001:db8:ffff::7"


@pytest.fixture
def app_config(app_config: dict[str, Any], tmp_path: Any) -> dict[str, Any]:
    """Without Redis, the embedded default: the file cache and its revocation log, so policies live in memory."""
    if not app_config.get("REDIS_URL"):
        app_config["CACHE_TYPE"] = "FileSystemCache"
        app_config["CACHE_DIR"] = str(tmp_path / "shared-cache")
    return app_config


@pytest.fixture
def admin(app: Flask, client: FlaskClient) -> FlaskClient:
    sync_organizations(app)
    assert login(client, "admin@acme.test").status_code == 302
    return client


def _patch(client: FlaskClient, body: dict[str, Any], address: str = "127.0.0.1") -> Any:
    return client.patch(POLICY, json=body, headers=csrf_headers(client), environ_base={"REMOTE_ADDR": address})


def _me(client: FlaskClient, address: str = "127.0.0.1", **headers: str) -> Any:
    return client.get("/api/v1/me", headers=headers, environ_base={"REMOTE_ADDR": address})


def _key(client: FlaskClient, **body: Any) -> dict[str, Any]:
    response = client.post("/api/v1/api-keys", json={"name": "agent", "scopes": ["data:read"], **body},
                           headers=csrf_headers(client))
    assert response.status_code == 201, response.get_json()
    return dict(response.get_json())


# --- validation ------------------------------------------------------------------------------------------


def test_get_returns_the_defaults(admin: FlaskClient) -> None:
    body = admin.get(POLICY).get_json()
    assert body["idle_timeout"] == 24 * 3600
    assert body["remembered_lifetime"] == 7 * 24 * 3600
    assert body["absolute_lifetime"] is None
    assert body["ip_allowlist"] == []
    assert body["step_up_window"] == 600
    assert body["ip_allowlist_applies_to_api_keys"] is False
    assert body["allowed_methods"] == ["sso", "password", "magicauth", "oauth", "passkey"]


@pytest.mark.parametrize("name", sorted(access_policy.BOUNDS))
def test_every_duration_is_bounded_and_named(admin: FlaskClient, name: str) -> None:
    low, high = access_policy.BOUNDS[name]
    for bad in (low - 1, high + 1, "600", True, 1.5):
        response = _patch(admin, {name: bad})
        assert response.status_code == 422, (name, bad)
        assert name in str(response.get_json()["error"]["details"]), (name, bad)
    for good in (low, high):
        response = _patch(admin, {name: good})
        assert response.status_code == 200
        assert response.get_json()[name] == good
    assert _patch(admin, {name: None}).status_code == 200


@pytest.mark.parametrize("body", [{"ip_allowlist": ["10.0.0.0/33"]}, {"ip_allowlist": ["nope"]},
                                  {"ip_allowlist": "10.0.0.0/8"}, {"ip_allowlist": [""]},
                                  {"allowed_methods": ["telepathy"]}, {"allowed_methods": []},
                                  {"ip_allowlist_applies_to_api_keys": "yes"}, {"colour": "blue"}])
def test_invalid_fields_are_named(admin: FlaskClient, body: dict[str, Any]) -> None:
    response = _patch(admin, body)
    assert response.status_code == 422
    assert next(iter(body)) in str(response.get_json()["error"]["details"])


@given(st.text(max_size=40))
@settings(max_examples=300, deadline=None)
def test_parse_allowlist_accepts_exactly_what_ipaddress_accepts(text: str) -> None:
    try:
        expected: list[str] | None = [str(ipaddress.ip_network(text.strip(), strict=False))]
    except ValueError:
        expected = None
    if expected is None or not text.strip():
        with pytest.raises(Exception, match="Invalid access policy"):
            parse_allowlist([text])
    else:
        assert parse_allowlist([text]) == expected


NETWORKS = st.one_of(
    st.tuples(st.ip_addresses(v=4), st.integers(0, 32)), st.tuples(st.ip_addresses(v=6), st.integers(0, 128)))


@given(st.lists(NETWORKS, max_size=5), st.ip_addresses())
@settings(max_examples=300, deadline=None)
def test_allowlist_membership_matches_ipaddress(nets: list[tuple[Any, int]], address: Any) -> None:
    cidrs = [f"{ip}/{prefix}" for ip, prefix in nets]
    stored = parse_allowlist(cidrs)
    parsed = access_policy.networks(tuple(stored or ()))
    assert (stored or []) == list(dict.fromkeys(str(ipaddress.ip_network(c, strict=False)) for c in cidrs))
    mapped = getattr(address, "ipv4_mapped", None)  # an IPv4-mapped IPv6 address is its IPv4 address
    effective = mapped if mapped is not None else address
    expected = not parsed or any(effective.version == n.version and effective in n for n in parsed)
    assert address_allowed(str(address), parsed) == expected
    if isinstance(address, ipaddress.IPv4Address):
        assert address_allowed(f"::ffff:{address}", parsed) == expected


# --- enforcement -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("credential", ["cookie", "bearer"])
def test_idle_timeout_ends_a_session(app: Flask, admin: FlaskClient, clock: list[float], credential: str) -> None:
    assert _patch(admin, {"idle_timeout": 600}).status_code == 200
    caller = admin if credential == "cookie" else app.test_client()
    headers = {} if credential == "cookie" else {"Authorization": f"Bearer {access_token(app, admin)}"}
    assert _me(caller, **headers).status_code == 200
    clock[0] += 590
    assert _me(caller, **headers).status_code == 200  # used: the idle time starts again
    app.extensions["hatidata_auth"].last_seen.flush()
    clock[0] += 599
    assert _me(caller, **headers).status_code == 200
    app.extensions["hatidata_auth"].last_seen.flush()
    clock[0] += 601
    response = _me(caller, **headers)
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "session_idle_timeout"


@pytest.mark.parametrize("credential", ["cookie", "bearer"])
def test_absolute_lifetime_is_not_extended_by_use(app: Flask, admin: FlaskClient, clock: list[float],
                                                  credential: str) -> None:
    assert _patch(admin, {"absolute_lifetime": 3600, "idle_timeout": 1800}).status_code == 200
    caller = admin if credential == "cookie" else app.test_client()
    headers = {} if credential == "cookie" else {"Authorization": f"Bearer {access_token(app, admin)}"}
    for _ in range(3):  # in use all along: the idle timeout never triggers
        clock[0] += 1000
        assert _me(caller, **headers).status_code == 200
        app.extensions["hatidata_auth"].last_seen.flush()
    clock[0] += 700
    response = _me(caller, **headers)
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "session_expired"


def test_session_limits_do_not_end_api_keys(app: Flask, admin: FlaskClient, clock: list[float]) -> None:
    secret = _key(admin)["secret"]
    assert _patch(admin, {"absolute_lifetime": 300, "idle_timeout": 300}).status_code == 200
    clock[0] += 10_000
    assert _me(app.test_client(), Authorization=f"Bearer {secret}").status_code == 200


@pytest.mark.parametrize(("network", "inside", "outside"), [("127.0.0.0/8", "127.9.9.9", OUTSIDE_V4),
                                                            ("2001:db8::/48", "2001:db8::1", OUTSIDE_V6)])
def test_allowlist_binds_sessions(app: Flask, admin: FlaskClient, network: str, inside: str,
                                  outside: str) -> None:
    response = _patch(admin, {"ip_allowlist": [network]}, address=inside)
    assert response.status_code == 200, response.get_json()
    bearer = {"Authorization": f"Bearer {access_token(app, admin)}"}
    for caller, headers in ((admin, {}), (app.test_client(), bearer)):
        assert _me(caller, inside, **headers).status_code == 200
        refused = _me(caller, outside, **headers)
        assert refused.status_code == 403
        assert refused.get_json()["error"]["code"] == "ip_not_allowed"
    with app.app_context():
        rows = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "auth.access_policy.refused")).all()
        assert len(rows) == 1  # two refusals, one rate-limited summary


def test_allowlist_binds_api_keys_only_when_asked_and_a_key_list_overrides(app: Flask, admin: FlaskClient) -> None:
    created = _key(admin)
    secret, key_id = created["secret"], created["key"]["id"]
    assert _patch(admin, {"ip_allowlist": ["127.0.0.0/8", "2001:db8::/32"]}).status_code == 200
    agent = app.test_client()
    bearer = f"Bearer {secret}"
    assert _me(agent, OUTSIDE_V4, Authorization=bearer).status_code == 200  # keys not bound yet
    assert _patch(admin, {"ip_allowlist_applies_to_api_keys": True}).status_code == 200
    assert _me(agent, OUTSIDE_V4, Authorization=bearer).status_code == 403
    assert _me(agent, "2001:db8:1::1", Authorization=bearer).status_code == 200
    # the key's own list replaces the organization's
    response = admin.put(f"/api/v1/api-keys/{key_id}/ip-allowlist", json={"ip_allowlist": ["198.51.100.0/24"]},
                         headers=csrf_headers(admin))
    assert response.status_code == 200
    assert response.get_json()["ip_allowlist"] == ["198.51.100.0/24"]
    assert _me(agent, OUTSIDE_V4, Authorization=bearer).status_code == 200
    assert _me(agent, "127.0.0.1", Authorization=bearer).status_code == 403
    with app.app_context():
        assert db.session.scalar(select(AuditEvent).where(AuditEvent.action == "api_key.ip_allowlist_updated"))
    admin.put(f"/api/v1/api-keys/{key_id}/ip-allowlist", json={"ip_allowlist": None}, headers=csrf_headers(admin))
    assert _me(agent, OUTSIDE_V4, Authorization=bearer).status_code == 403


# --- lock-out, audit, isolation ---------------------------------------------------------------------------------


def test_an_allowlist_without_the_callers_address_is_refused(admin: FlaskClient) -> None:
    for network in ("10.0.0.0/8", "2001:db8::/32"):
        response = _patch(admin, {"ip_allowlist": [network]})
        assert response.status_code == 409
        error = response.get_json()["error"]
        assert error["code"] == "policy_lockout"
        assert "127.0.0.1" in error["message"]
    assert admin.get(POLICY).get_json()["ip_allowlist"] == []


def test_methods_excluding_the_callers_own_are_refused(app: Flask, admin: FlaskClient) -> None:
    response = _patch(admin, {"allowed_methods": ["password", "magicauth"]})
    assert response.status_code == 409
    assert response.get_json()["error"]["details"] == {"field": "allowed_methods", "your_method": "sso"}
    assert _patch(admin, {"allowed_methods": ["sso", "password"]}).status_code == 200


def test_a_change_is_audited_with_before_and_after(app: Flask, admin: FlaskClient) -> None:
    assert _patch(admin, {"idle_timeout": 900, "ip_allowlist": ["127.0.0.1", "127.0.0.1/32"]}).status_code == 200
    assert _patch(admin, {"idle_timeout": 900}).status_code == 200  # no change: no row
    with app.app_context():
        rows = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "organization.policy_updated")).all()
        assert len(rows) == 1
        assert rows[0].details["changes"] == {
            "idle_timeout": {"from": 24 * 3600, "to": 900},
            "ip_allowlist": {"from": [], "to": ["127.0.0.1/32"]}}
        assert rows[0].actor_email == "admin@acme.test"


def test_policy_needs_an_admin(app: Flask, admin: FlaskClient) -> None:
    dev = app.test_client()
    assert login(dev, "dev@acme.test").status_code == 302
    assert dev.get(POLICY).status_code == 403
    assert _patch(dev, {"idle_timeout": 900}).status_code == 403
    assert admin.patch(POLICY, json={"idle_timeout": 900}).status_code in (400, 403)  # no CSRF token


def test_another_organizations_policy_never_applies_or_leaks(app: Flask, admin: FlaskClient) -> None:
    globex = app.test_client()
    assert login(globex, "admin@globex.test").status_code == 302
    assert _patch(globex, {"ip_allowlist": ["127.0.0.0/8"], "ip_allowlist_applies_to_api_keys": True,
                           "absolute_lifetime": 300}).status_code == 200
    assert admin.get(POLICY).get_json()["ip_allowlist"] == []
    assert _me(admin, OUTSIDE_V4).status_code == 200
    key = _key(admin)
    assert _me(app.test_client(), OUTSIDE_V4, Authorization=f"Bearer {key['secret']}").status_code == 200
    response = globex.put(f"/api/v1/api-keys/{key['key']['id']}/ip-allowlist",
                          json={"ip_allowlist": ["10.0.0.0/8"]}, headers=csrf_headers(globex))
    assert response.status_code == 404


def test_every_writer_of_a_policy_column_evicts_the_cached_policy(app: Flask, admin: FlaskClient) -> None:
    """The settings API (another writer of the same columns) evicts the policy too: the rule is the flush."""
    org_id = admin.get(POLICY).get_json()["organization_id"]
    rt = app.extensions["hatidata_auth"]
    with app.app_context():
        rt.bus.policies.set(org_id, "cached", 1e12)
        for column in sorted(access_policy.POLICY_COLUMNS - {"sso_enforced", "auth_methods"}):
            rt.bus.policies.set(org_id, "cached", 1e12)
            org = db.session.get(Organization, org_id)
            assert org is not None
            setattr(org, column, [] if column == "ip_allowlist" else (True if "api_keys" in column else 999))
            db.session.commit()
            assert rt.bus.policies.get(org_id) is None, column


def test_session_refusal_order_and_remembered_sessions() -> None:
    policy = AccessPolicy("org", idle_timeout=600, absolute_lifetime=3600, remembered_lifetime=7200,
                          allowed_methods=("sso",), ip_allowlist=access_policy.networks(("10.0.0.0/8",)),
                          ip_allowlist_applies_to_api_keys=False, step_up_window=600)
    refuse = session_refusal
    assert refuse(policy, created_at=0, last_seen_at=0, remembered=False, address="10.1.1.1", now=599) is None
    assert refuse(policy, created_at=0, last_seen_at=0, remembered=False, address="10.1.1.1", now=600) == \
        "session_idle_timeout"
    assert refuse(policy, created_at=0, last_seen_at=0, remembered=True, address="10.1.1.1", now=3599) is None
    assert refuse(policy, created_at=0, last_seen_at=3599, remembered=True, address="10.1.1.1", now=3600) == \
        "session_expired"
    assert refuse(policy, created_at=0, last_seen_at=0, remembered=True, address="1.1.1.1", now=1) == \
        "ip_not_allowed"
    assert refuse(policy, created_at=0, last_seen_at=0, remembered=True, address=None, now=1) == "ip_not_allowed"


def test_the_cached_policy_spares_the_database(app: Flask, admin: FlaskClient) -> None:
    """With the revocation bus live, a request reads its organization's policy from memory."""
    rt = app.extensions["hatidata_auth"]
    assert rt.bus.wait_until_ready()
    org_id = admin.get(POLICY).get_json()["organization_id"]
    first = rt.introspector.policy(db.session, org_id)
    assert rt.introspector.policy(db.session, org_id) is first
    assert _patch(admin, {"idle_timeout": 1200}).status_code == 200
    assert rt.introspector.policy(db.session, org_id).idle_timeout == 1200
    statements: list[str] = []
    with app.app_context():
        engine = db.engine

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    assert _me(admin).status_code == 200  # warm: the session's status and the new policy are in memory
    event.listen(engine, "before_cursor_execute", seen)
    try:
        for _ in range(5):
            assert _me(admin).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert statements == []


def test_a_key_cannot_shut_itself_out(app: Flask, admin: FlaskClient) -> None:
    created = admin.post("/api/v1/api-keys", json={"name": "ops", "scopes": ["keys:manage", "keys:read"]},
                         headers=csrf_headers(admin)).get_json()
    path = f"/api/v1/api-keys/{created['key']['id']}/ip-allowlist"
    agent = app.test_client()
    bearer = {"Authorization": f"Bearer {created['secret']}"}
    response = agent.put(path, json={"ip_allowlist": ["10.0.0.0/8"]}, headers=bearer)
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "policy_lockout"
    assert agent.put(path, json={"ip_allowlist": ["127.0.0.0/8"]}, headers=bearer).status_code == 200


# --- the admin page ---------------------------------------------------------------------------------------------


def _form(client: FlaskClient, **fields: str) -> Any:
    page = client.get("/admin/policy")
    token = page.get_data(as_text=True).split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    data = {"csrf_token": token, "idle_timeout": "86400", "remembered_lifetime": "604800", "absolute_lifetime": "",
            "step_up_window": "600", **{f"method_{m}": "1" for m in ("sso", "password", "magicauth", "oauth",
                                                                      "passkey")}, **fields}
    return client.post("/admin/policy", data={k: v for k, v in data.items() if v is not None})


def test_the_admin_page_saves_audits_and_refuses_a_lockout(app: Flask, admin: FlaskClient) -> None:
    page = admin.get("/admin/policy")
    assert page.status_code == 200
    assert 'name="idle_timeout"' in page.get_data(as_text=True)
    saved = _form(admin, idle_timeout="900", ip_allowlist="127.0.0.0/8\n2001:db8::/32\n")
    assert saved.status_code == 303
    assert saved.headers["Location"] == "/admin/policy?saved=1"
    body = admin.get(POLICY).get_json()
    assert body["idle_timeout"] == 900
    assert body["ip_allowlist"] == ["127.0.0.0/8", "2001:db8::/32"]
    assert body["remembered_lifetime"] == 7 * 24 * 3600
    with app.app_context():
        row = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "organization.policy_updated"))
        assert row is not None
        assert set(row.details["changes"]) == {"idle_timeout", "ip_allowlist"}  # the defaults were not pinned
    locked = _form(admin, idle_timeout="900", ip_allowlist="10.0.0.0/8")
    assert locked.status_code == 409
    assert "your own address" in locked.get_data(as_text=True)
    invalid = _form(admin, idle_timeout="ten minutes", step_up_window="5")
    assert invalid.status_code == 422
    assert 'id="idle_timeout-error"' in invalid.get_data(as_text=True)
    assert admin.post("/admin/policy", data={"idle_timeout": "900"}).status_code == 400  # no CSRF token
    assert admin.get(POLICY).get_json()["idle_timeout"] == 900


def test_the_admin_page_is_for_admins_with_a_browser_session(app: Flask, admin: FlaskClient) -> None:
    dev = app.test_client()
    assert login(dev, "dev@acme.test").status_code == 302
    assert dev.get("/admin/policy").status_code == 403
    signed_out = app.test_client().get("/admin/policy", headers={"Accept": "text/html"})
    assert signed_out.status_code == 302
    assert signed_out.headers["Location"].startswith("/auth/login?")
    bearer = app.test_client().get("/admin/policy", headers={"Authorization": f"Bearer {access_token(app, admin)}"})
    assert bearer.status_code == 403


def test_use_seen_by_another_worker_keeps_the_session(app: Flask, admin: FlaskClient, clock: list[float]) -> None:
    """This worker's cached last-seen time is old, another worker's write is newer: the session stays, and the
    status read to decide it is kept, so the next request makes no SQL statement."""
    from datetime import UTC, datetime

    from sqlalchemy import update

    from hatidata_auth.models import AuthSession

    assert _patch(admin, {"idle_timeout": 600}).status_code == 200
    assert _me(admin).status_code == 200
    app.extensions["hatidata_auth"].last_seen.flush()
    clock[0] += 601
    with app.app_context():
        db.session.execute(update(AuthSession).values(last_seen_at=datetime.fromtimestamp(clock[0] - 30, UTC)))
        db.session.commit()
        engine = db.engine
    assert _me(admin).status_code == 200
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        assert _me(admin).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert statements == []


@given(st.integers(0, 10_000), st.integers(0, 10_000), st.integers(0, 20_000), st.integers(300, 5_000))
def test_the_absolute_lifetime_counts_from_the_sign_in_whatever_the_session_row(
        created: int, authenticated: int, elapsed: int, lifetime: int) -> None:
    """A session row created later than its authentication (a login AuthKit passed through) ends when the
    authentication is *lifetime* old; a missing ``auth_time`` falls back to the row."""
    policy = AccessPolicy("org", idle_timeout=10**9, absolute_lifetime=lifetime, remembered_lifetime=7200,
                          allowed_methods=("sso",), ip_allowlist=(), ip_allowlist_applies_to_api_keys=False,
                          step_up_window=600)
    now = max(created, authenticated) + elapsed
    for auth_time, start in ((authenticated, min(created, authenticated)), (None, created)):
        refusal = session_refusal(policy, created_at=created, last_seen_at=now, remembered=True, address=None,
                                  now=now, authenticated_at=auth_time)
        assert (refusal == "session_expired") == (now - start >= lifetime), (auth_time, start, now)


def test_a_page_past_the_lifetime_sends_the_browser_to_a_fresh_sign_in(admin: FlaskClient, clock: list[float]) -> None:
    """Not to a plain login AuthKit could pass through on the same old authentication: ``max_age=0``."""
    assert _patch(admin, {"absolute_lifetime": 300}).status_code == 200
    clock[0] += 400
    page = admin.get("/admin/policy", headers={"Accept": "text/html"})
    assert page.status_code == 302
    location = urlsplit(page.headers["Location"])
    params = {k: v[0] for k, v in parse_qs(location.query).items()}
    assert location.path == "/auth/login"
    assert params["max_age"] == "0"
    assert params["return_to"] == "/admin/policy"
    assert params["organization_id"]
