"""Step-up re-authentication (issue #16, item 2): every sensitive route needs a sign-in within the organization's
``step_up_window`` (cookie and bearer alike; API keys by their scopes), the 401 carries a usable re-authentication
URL, the emulator honours AuthKit's ``max_age`` and keeps ``auth_time`` across refreshes, a re-authentication comes
back to the page as the same person in the same organization. Time moves with the introspector's clock."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx2
import jwt
import pytest
from flask import Blueprint, Flask
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st

from hatidata_auth import step_up
from hatidata_auth.auth.flow import safe_return_to
from hatidata_auth.sso_wizard.views import admin_only
from plugins.okta import OktaPlugin
from tests.auth_support import access_token, csrf_headers, login, start_login, sync_organizations
from tests.credential_support import bearer

POLICY = "/api/v1/organization/policy"
WINDOW = step_up.DEFAULT_STEP_UP_WINDOW
SKIPPED_METHODS = {"HEAD", "OPTIONS"}
PAGES = {"sso_wizard", "policy_page", "sso_sign_ins", "sso_rotation"}  # HTML blueprints (form posts carry a CSRF token)
PROBE_PREFIX = "/admin/probe-idp"  # deliberately outside /admin/sso: the plugin convention alone must cover it


class StepProbe(OktaPlugin):
    """An IdP plugin that mounts its own setup routes (a page and a form post), as plugins may."""

    name = "stepprobe"

    def create_blueprint(self) -> Blueprint:
        blueprint = Blueprint(self.blueprint_name, __name__, url_prefix=PROBE_PREFIX)

        @admin_only
        def connect() -> str:
            return "connected"

        blueprint.add_url_rule("/connect", endpoint="connect", view_func=connect, methods=["GET", "POST"])
        return blueprint


def _is_page(endpoint: str) -> bool:
    blueprint = endpoint.rpartition(".")[0]
    return blueprint in PAGES or blueprint.startswith(step_up.PLUGIN_BLUEPRINT_PREFIX)


@pytest.fixture
def app_config(app_config: dict[str, Any], tmp_path: Any) -> dict[str, Any]:
    """Without Redis, the embedded default: the file cache and its revocation log, so policies live in memory."""
    if not app_config.get("REDIS_URL"):
        app_config["CACHE_TYPE"] = "FileSystemCache"
        app_config["CACHE_DIR"] = str(tmp_path / "shared-cache")
    return {**app_config, "HATIDATA_LOCAL_PLUGINS": {"stepprobe": StepProbe}}


@pytest.fixture
def clock(app: Flask) -> Iterator[list[float]]:
    """The introspector's clock (the step-up guard's), moved by the test (no sleeps)."""
    rt = app.extensions["hatidata_auth"]
    now = [time.time()]
    saved = rt.introspector.clock
    rt.introspector.clock = lambda: now[0]
    yield now
    rt.introspector.clock = saved


@pytest.fixture
def admin(app: Flask, client: FlaskClient) -> FlaskClient:
    sync_organizations(app)
    assert login(client, "admin@acme.test").status_code == 302
    return client


def _sample(argument: str, converter: Any) -> str:
    if type(converter).__name__ == "IntegerConverter":
        return "1"
    return "okta" if argument == "plugin" else "step-up-probe"


def _routes(app: Flask) -> list[tuple[str, str, str, bool]]:
    """Every (path, method, endpoint, sensitive) the app serves, paths filled with probe values."""
    found = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.endswith(".static"):
            continue
        view = app.view_functions[rule.endpoint]
        permissions = getattr(view, "hatidata_permissions", ())
        path = rule.rule
        for argument, converter in rule._converters.items():
            path = re.sub(rf"<(?:[^:>]+:)?{argument}>", _sample(argument, converter), path)
        for method in sorted((rule.methods or set()) - SKIPPED_METHODS):
            found.append((path, method, rule.endpoint,
                          step_up.is_sensitive(rule.endpoint, method, permissions, rule.rule)))
    return found


def _call(client: FlaskClient, path: str, method: str, headers: dict[str, str]) -> Any:
    return client.open(path, method=method, json={} if method not in step_up.SAFE_METHODS else None,
                       headers={"Accept": "application/json", **headers})


def _code(response: Any) -> str | None:
    body = response.get_json(silent=True) or {}
    return (body.get("error") or {}).get("code")


# --- the class of sensitive routes ------------------------------------------------------------------------


def test_the_class_holds_every_operation_the_issue_names(app: Flask) -> None:
    sensitive = {(path, method) for path, method, _, is_sensitive in _routes(app) if is_sensitive}
    for needed in [("/api/v1/organization/policy", "PATCH"), ("/api/v1/organization/settings", "PATCH"),
                   ("/api/v1/api-keys/step-up-probe/ip-allowlist", "PUT"), ("/api/v1/role-mappings", "POST"),
                   ("/api/v1/role-mappings", "PUT"), ("/api/v1/role-mappings/step-up-probe", "PATCH"),
                   ("/api/v1/role-mappings/step-up-probe", "DELETE"), ("/api/v1/members/step-up-probe", "PATCH"),
                   ("/api/v1/members/step-up-probe", "DELETE"), ("/api/v1/audit-events/export", "GET"),
                   ("/admin/policy", "GET"), ("/admin/policy", "POST"), ("/admin/sso/", "GET"),
                   ("/admin/sso/start", "POST"), ("/admin/sso/okta/wizard/step-up-probe", "POST"),
                   ("/admin/sso/idp/okta/guide", "GET"), (f"{PROBE_PREFIX}/connect", "GET"),
                   (f"{PROBE_PREFIX}/connect", "POST"), ("/api/v1/organization/audit-streams", "POST"),
                   ("/api/v1/organization/audit-streams/step-up-probe", "PATCH"),
                   ("/api/v1/organization/audit-streams/step-up-probe", "DELETE"),
                   ("/api/v1/organization/audit-streams/step-up-probe/retry", "POST")]:
        assert needed in sensitive, needed
    for ordinary in [("/api/v1/me", "GET"), ("/api/v1/organization/policy", "GET"), ("/api/v1/members", "GET"),
                     ("/auth/logout", "POST"), ("/api/v1/api-keys", "GET"),
                     ("/api/v1/organization/audit-streams", "GET")]:
        assert ordinary not in sensitive, ordinary


@pytest.mark.parametrize("credential", ["cookie", "bearer"])
def test_every_sensitive_route_refuses_an_old_sign_in(app: Flask, admin: FlaskClient, clock: list[float],
                                                      credential: str) -> None:
    """Walks the url map: a route of the class answers 401 with a usable URL once the sign-in is older than the
    window, whichever route it is (a new route in the class cannot forget the guard)."""
    client, headers = admin, csrf_headers(admin)
    if credential == "bearer":
        client, headers = app.test_client(), bearer(access_token(app, admin))
    clock[0] = time.time() + WINDOW + 5
    routes = [r for r in _routes(app) if r[3]]
    assert len(routes) >= 20
    for path, method, endpoint, _ in routes:
        response = _call(client, path, method, headers)
        if credential == "bearer" and _is_page(endpoint):
            # pages are for browser sessions: a bearer token may be refused there before the guard, never served
            assert response.status_code in (400, 401, 403), (endpoint, method, response.status_code)
            continue
        seen = (endpoint, method, response.status_code, response.get_data(as_text=True)[:300])
        assert response.status_code == 401, seen
        assert _code(response) == "reauthentication_required", seen
        details = response.get_json()["error"]["details"]
        assert details["step_up_window"] == WINDOW
        assert abs(details["authenticated_at"] - time.time()) < 120
        url = details["reauthenticate_url"]
        assert url.startswith("/auth/login?")
        assert not urlsplit(url).netloc
        params = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        assert params["max_age"] == "0"
        assert params["organization_id"]
        assert safe_return_to(params["return_to"]) == \
            params["return_to"]


def test_a_fresh_sign_in_passes_every_sensitive_route(app: Flask, admin: FlaskClient, clock: list[float]) -> None:
    clock[0] = time.time() + WINDOW - 30
    headers = csrf_headers(admin)
    for path, method, endpoint, _ in [r for r in _routes(app) if r[3]]:
        response = _call(admin, path, method, headers)
        assert _code(response) != "reauthentication_required", (endpoint, method)
        assert response.status_code != 401, (endpoint, method, response.get_data(as_text=True)[:300])


def test_ordinary_routes_ignore_the_age_of_the_sign_in(admin: FlaskClient, clock: list[float]) -> None:
    clock[0] = time.time() + 20 * 3600  # within the idle timeout (24 h)
    assert admin.get("/api/v1/me").status_code == 200
    assert admin.get(POLICY).status_code == 200


def test_the_window_is_the_organization_policy(admin: FlaskClient, clock: list[float]) -> None:
    signed_in = time.time()
    assert admin.patch(POLICY, json={"step_up_window": 120}, headers=csrf_headers(admin)).status_code == 200
    clock[0] = signed_in + 100
    assert admin.patch(POLICY, json={}, headers=csrf_headers(admin)).status_code == 200
    clock[0] = signed_in + 130
    response = admin.patch(POLICY, json={}, headers=csrf_headers(admin))
    assert response.status_code == 401
    assert response.get_json()["error"]["details"]["step_up_window"] == 120


@given(authenticated_ago=st.floats(0, 48 * 3600), window=st.integers(60, 24 * 3600))
@settings(max_examples=300, deadline=None)
def test_the_rule_is_exactly_the_window(authenticated_ago: float, window: int) -> None:
    now = 1_900_000_000.0
    try:
        step_up.check(authenticated_at=now - authenticated_ago, window=window, now=now, organization_id="org",
                      return_to="/")
        passed = True
    except step_up.ReauthenticationRequired:
        passed = False
    assert passed == (authenticated_ago <= window)


def test_a_token_without_auth_time_must_re_authenticate() -> None:
    with pytest.raises(step_up.ReauthenticationRequired):
        step_up.check(authenticated_at=None, window=600, now=time.time(), organization_id="org", return_to="/")


# --- API keys -------------------------------------------------------------------------------------------------


def test_keys_with_admin_scopes_need_a_recent_sign_in_and_then_act_on_their_scopes(
        app: Flask, admin: FlaskClient, clock: list[float]) -> None:
    created = admin.post("/api/v1/api-keys", json={"name": "ops", "scopes": ["sso:manage"]},
                         headers=csrf_headers(admin))
    assert created.status_code == 201
    secret, key_id = created.get_json()["secret"], created.get_json()["key"]["id"]
    clock[0] = time.time() + 20 * 3600
    # the key may do what its scopes allow: it cannot re-authenticate, and it took a recent sign-in to create
    assert app.test_client().patch(POLICY, json={}, headers=bearer(secret)).status_code == 200
    # a stale session may not create or rotate a key with an admin scope ...
    for scopes in (["sso:manage"], ["members:write", "data:read"], ["audit:read"]):
        response = admin.post("/api/v1/api-keys", json={"name": "more", "scopes": scopes},
                              headers=csrf_headers(admin))
        assert response.status_code == 401, scopes
        assert _code(response) == "reauthentication_required", scopes
    response = admin.post(f"/api/v1/api-keys/{key_id}/rotate", json={}, headers=csrf_headers(admin))
    assert response.status_code == 401
    assert _code(response) == "reauthentication_required"
    # ... but may create and rotate keys a developer could hold
    plain = admin.post("/api/v1/api-keys", json={"name": "agent", "scopes": ["data:read", "keys:write"]},
                       headers=csrf_headers(admin))
    assert plain.status_code == 201
    rotated = admin.post(f"/api/v1/api-keys/{plain.get_json()['key']['id']}/rotate", json={},
                         headers=csrf_headers(admin))
    assert rotated.status_code == 201


def test_admin_scopes_are_the_ones_only_admins_hold() -> None:
    assert {"members:read", "members:write", "sessions:write", "keys:manage", "sso:manage",
                                    "audit:read", "audit:manage"} == step_up.ADMIN_SCOPES


# --- pages -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("page", ["/admin/policy", "/admin/sso/"])
def test_a_page_sends_the_browser_to_re_authenticate_and_back(admin: FlaskClient, clock: list[float],
                                                              page: str) -> None:
    clock[0] = time.time() + WINDOW + 5
    response = admin.get(page, headers={"Accept": "text/html"})
    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.startswith("/auth/login?")
    assert parse_qs(urlsplit(location).query)["return_to"] == [page]


@pytest.mark.parametrize(("referrer", "back_to"), [("{base}/admin/policy?tab=ip", "/admin/policy?tab=ip"),
                                                   ("https://evil.test/admin/policy", "/"), (None, "/")])
def test_a_form_post_goes_to_re_authenticate_then_back_to_its_page(
        app: Flask, admin: FlaskClient, clock: list[float], referrer: str | None, back_to: str) -> None:
    clock[0] = time.time() + WINDOW + 5
    headers = {"Accept": "text/html", **csrf_headers(admin)}
    if referrer is not None:
        headers["Referer"] = referrer.format(base=app.config["HATIDATA_PUBLIC_URL"].rstrip("/"))
    response = admin.post("/admin/policy", data={"idle_timeout": ""}, headers=headers)
    assert response.status_code == 303
    assert parse_qs(urlsplit(response.headers["Location"]).query)["return_to"] == [back_to]


def test_every_sso_setup_route_is_sensitive_whoever_registers_it(app: Flask) -> None:
    """SSO setup is the class, not a list of blueprints: every route under /admin/sso and every plugin blueprint's
    route is sensitive, whatever its method; the read-only sign-in diagnostics only for the reveal."""
    seen = {"plugin": 0, "setup": 0, "diagnostics": 0}
    for path, method, endpoint, sensitive in _routes(app):
        blueprint = endpoint.rpartition(".")[0]
        if blueprint == "sso_sign_ins":
            seen["diagnostics"] += 1
            assert sensitive == (endpoint == "sso_sign_ins.reveal"), (path, method, endpoint)
        elif blueprint.startswith("idp_") or path == "/admin/sso" or path.startswith("/admin/sso/"):
            seen["plugin" if blueprint.startswith("idp_") else "setup"] += 1
            assert sensitive, (path, method, endpoint)
    assert seen["plugin"] >= 3, seen
    assert seen["setup"] >= 5, seen
    assert seen["diagnostics"] >= 2, seen


@given(st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"]),
       st.from_regex(r"/[a-z0-9_/-]{0,20}", fullmatch=True), st.from_regex(r"[a-z_]{1,12}", fullmatch=True))
def test_a_route_under_the_sso_setup_prefix_is_sensitive_in_any_blueprint(method: str, tail: str,
                                                                          blueprint: str) -> None:
    endpoint = f"{blueprint}.view"
    sensitive = step_up.is_sensitive(endpoint, method, (), "/admin/sso" + tail)
    assert sensitive == (blueprint not in step_up.READ_ONLY_BLUEPRINTS)
    assert step_up.is_sensitive(f"idp_{blueprint}.view", method, (), tail)


# --- the emulator: max_age and auth_time -------------------------------------------------------------------


def _authorize(http: httpx2.Client, url: str) -> httpx2.Response:
    return http.get(url, follow_redirects=False)


def _sign_in_on_page(http: httpx2.Client, page: httpx2.Response, email: str) -> str:
    """Pick *email* on the emulator's IdP page (an active authentication); the callback URL."""
    action = re.search(r'action="([^"]*/idp/[^"]*)"', page.text)
    assert action, page.text[:500]
    response = http.post(urljoin(str(page.url), action.group(1)), data={"email": email}, follow_redirects=False)
    assert response.status_code == 302, response.text[:300]
    return str(response.headers["location"])


def _finish(client: FlaskClient, callback_url: str) -> Any:
    parts = urlsplit(callback_url)
    return client.get(f"{parts.path}?{parts.query}")


def _auth_time(app: Flask, client: FlaskClient) -> int:
    return int(jwt.decode(access_token(app, client), options={"verify_signature": False})["auth_time"])


def test_max_age_zero_forces_a_new_sign_in_and_a_large_one_passes_through(
        app: Flask, client: FlaskClient) -> None:
    sync_organizations(app)
    with httpx2.Client(timeout=10) as http:
        first = _authorize(http, start_login(client, email="admin@acme.test"))
        assert first.status_code == 302  # the login_hint shortcut: the IdP vouched (an active authentication)
        assert _finish(client, str(first.headers["location"])).status_code == 302
        signed_in = _auth_time(app, client)
        # max_age=0: the page again, even with the hint and the browser's AuthKit session
        forced = _authorize(http, start_login(client, email="admin@acme.test", max_age=0))
        assert forced.status_code == 200
        assert "/idp/" in forced.text
        # a large max_age: straight through, keeping the instant of the last active authentication
        passed = _authorize(http, start_login(client, email="admin@acme.test", max_age=3600))
        assert passed.status_code == 302
        assert _finish(client, str(passed.headers["location"])).status_code == 302
        assert _auth_time(app, client) == signed_in


def test_a_browser_without_an_authkit_session_must_sign_in(app: Flask, client: FlaskClient) -> None:
    sync_organizations(app)
    with httpx2.Client(timeout=10) as http:
        page = _authorize(http, start_login(client, email="admin@acme.test", max_age=3600))
    assert page.status_code == 200
    assert "/idp/" in page.text


@pytest.mark.parametrize("bad", ["-1", "1.5", "ten", " "])
def test_the_emulator_refuses_a_malformed_max_age(app: Flask, client: FlaskClient, emulator: Any, bad: str) -> None:
    sync_organizations(app)
    url = start_login(client, email="admin@acme.test")
    response = httpx2.get(url + "&max_age=" + bad, follow_redirects=False, timeout=10)
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_request_parameters"


@pytest.mark.parametrize("bad", ["-1", "1.5", "ten", "99999999999"])
def test_the_app_refuses_a_malformed_max_age(app: Flask, client: FlaskClient, bad: str) -> None:
    response = client.get("/auth/login", query_string={"max_age": bad})
    assert response.status_code == 422


def test_auth_time_survives_a_refresh(app: Flask, admin: FlaskClient, emulator: Any) -> None:
    from workos.session import unseal_data

    data = unseal_data(admin.get_cookie(app.config["HATIDATA_COOKIE_NAME"]).value, app.config["HATIDATA_COOKIE_KEY"])
    signed_in = _auth_time(app, admin)
    response = httpx2.post(f"{emulator.url}/user_management/authenticate", timeout=10, json={
        "grant_type": "refresh_token", "client_id": "client_emulator", "client_secret": "sk_test_emulator",
        "refresh_token": data["refresh_token"]})
    assert response.status_code == 200, response.text
    claims = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    assert claims["auth_time"] == signed_in


# --- the whole re-authentication -----------------------------------------------------------------------------


def _reauthenticate_url(admin: FlaskClient) -> str:
    response = admin.patch(POLICY, json={}, headers=csrf_headers(admin))
    assert response.status_code == 401
    return str(response.get_json()["error"]["details"]["reauthenticate_url"])


def test_re_authentication_restores_access_at_once(app: Flask, admin: FlaskClient, clock: list[float]) -> None:
    clock[0] = time.time() + WINDOW + 5
    replaced = access_token(app, admin)
    url = _reauthenticate_url(admin)
    with httpx2.Client(timeout=10) as http:
        page = _authorize(http, str(admin.get(url).headers["Location"]))
        assert page.status_code == 200  # AuthKit asks again (max_age=0)
        callback = _sign_in_on_page(http, page, "admin@acme.test")
    clock[0] = time.time() + 5  # the new sign-in is now
    finished = _finish(admin, callback)
    assert finished.status_code == 302
    assert finished.headers["Location"].endswith("/")
    assert admin.patch(POLICY, json={}, headers=csrf_headers(admin)).status_code == 200
    me = admin.get("/api/v1/me").get_json()
    assert me["email"] == "admin@acme.test"
    # the session it replaced has ended (no orphaned live session), audited as such
    assert app.test_client().get("/api/v1/me", headers=bearer(replaced)).status_code == 401
    with app.app_context():
        from sqlalchemy import select

        from hatidata_auth.extensions import db
        from hatidata_auth.models import AuditEvent

        reasons = [e.details.get("reason") for e in db.session.scalars(select(AuditEvent)) if
                   e.action == "session.revoked"]
        db.session.remove()
    assert "reauthenticated" in reasons, reasons


def test_re_authentication_as_someone_else_is_refused(app: Flask, admin: FlaskClient, clock: list[float]) -> None:
    clock[0] = time.time() + WINDOW + 5
    url = _reauthenticate_url(admin)
    with httpx2.Client(timeout=10) as http:
        page = _authorize(http, str(admin.get(url).headers["Location"]))
        callback = _sign_in_on_page(http, page, "dev@acme.test")
    refused = _finish(admin, callback)
    assert refused.status_code == 403
    assert _code(refused) == "reauthentication_mismatch"
    assert admin.get("/api/v1/me").get_json()["email"] == "admin@acme.test"  # the browser's own session stays


HOSTILE = st.one_of(
    st.sampled_from(["//evil.test", "https://evil.test/", "/\\evil.test", "\\\\evil.test", "/%2F%2Fevil.test",
                     "javascript:alert(1)", "http:/evil.test", "/\t/evil.test", "///evil.test", " //evil.test"]),
    st.text(max_size=30).map(lambda s: "/" + s), st.text(max_size=30))


@given(HOSTILE)
@settings(max_examples=300, deadline=None)
def test_the_return_to_of_a_re_authentication_stays_on_our_site(value: str) -> None:
    url = step_up.reauthenticate_url("org_1", value)
    return_to = parse_qs(urlsplit(url).query, keep_blank_values=True)["return_to"][0]
    landed = urlsplit(urljoin("https://app.test/", safe_return_to(return_to)))
    assert landed.netloc == "app.test"
    assert landed.scheme == "https"
