"""The per-request plumbing (``request_hooks``): the security headers on every answer (a view's own value wins,
no header twice), ``Cache-Control: no-store`` on every answer to a credential, and Flask's session cookie opened
as Flask opens it, only without building its signer for a request that carries no session cookie."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask, Response, session
from flask.sessions import SecureCookieSessionInterface
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from hatidata_auth.request_hooks import HSTS, SECURITY_HEADERS, CookieSessionInterface, add_missing, mark_private
from tests.auth_support import login, sync_organizations
from tests.test_no_leaks import _get_routes

NAMES = [name for name, _ in SECURITY_HEADERS] + ["X-Request-ID", HSTS[0], "Content-Security-Policy"]


def _count(response: Response, name: str) -> int:
    return sum(1 for key, _ in response.headers if key.lower() == name.lower())


@pytest.mark.parametrize("secure", [False, True])
def test_every_answer_carries_each_security_header_once(app: Flask, client: FlaskClient, secure: bool) -> None:
    app.config["SESSION_COOKIE_SECURE"] = secure
    sync_organizations(app)
    assert login(client, "admin@acme.test").status_code == 302
    answers = 0
    for path in _get_routes(app):
        for who in (app.test_client(), client):
            response = who.get(path, headers={"Accept": "text/html", "X-Request-ID": "req-0123456789"})
            response.close()
            answers += 1
            for name, value in SECURITY_HEADERS:
                assert response.headers.getlist(name) == [value], (path, name)
            assert response.headers.getlist("X-Request-ID") == ["req-0123456789"], path
            assert _count(response, HSTS[0]) == (1 if secure else 0), path
            assert _count(response, "Content-Security-Policy") == (1 if response.mimetype == "text/html" else 0)
    assert answers > 20


@settings(max_examples=60, deadline=None)
@given(own=st.dictionaries(st.sampled_from(NAMES), st.text("abcdefgh; =-", min_size=1, max_size=12), max_size=4),
       casing=st.sampled_from([str.lower, str.upper, str]), html=st.booleans())
def test_a_views_own_header_wins_whatever_its_casing(own: dict[str, str], casing: Any, html: bool) -> None:
    wanted = [("X-Request-ID", "r1"), *SECURITY_HEADERS, HSTS]
    if html:
        wanted.append(("Content-Security-Policy", "default-src 'self'"))
    response = Response("x", mimetype="text/html" if html else "application/json",
                        headers=[(casing(name), value) for name, value in own.items()])
    add_missing(response, wanted)
    own_lower = {name.lower(): value for name, value in own.items()}
    for name, value in wanted:
        assert [v for k, v in response.headers if k.lower() == name.lower()] == [own_lower.get(name.lower(), value)]


@pytest.mark.parametrize(("headers", "cookies", "private"), [
    ({}, {}, False),
    ({}, {"theme": "dark"}, False),
    ({"Authorization": "Bearer nothing-valid"}, {}, True),
    ({}, {"theme": "dark", "hatidata_session": "sealed-but-invalid"}, True),
    ({}, {"hatidata_session": ""}, True),
])
def test_an_answer_to_any_presented_credential_is_never_cached(app: Flask, headers: dict[str, str],
                                                               cookies: dict[str, str], private: bool) -> None:
    for path in ("/healthz", "/api/v1/me", "/"):
        client = app.test_client()  # its cookie jar, not a Cookie header: Werkzeug's client replaces that
        for name, value in cookies.items():
            client.set_cookie(name, value)
        response = client.get(path, headers=headers)
        assert (response.headers.get("Cache-Control") == "no-store") is private, (path, headers, cookies)
        if private:
            assert {"Cookie", "Authorization"} <= set(response.vary), path


@settings(max_examples=80, deadline=None)
@given(cache=st.none() | st.sampled_from(["public, max-age=60", "private", "no-cache"]),
       vary=st.none() | st.lists(st.sampled_from(["Accept", "Origin", "Cookie", "accept-encoding"]), min_size=1,
                                 max_size=3),
       casing=st.sampled_from([str.lower, str.upper, str]),
       credential=st.sampled_from([{"HTTP_AUTHORIZATION": "Bearer x"}, {"HTTP_COOKIE": "hatidata_session=s"}]))
def test_a_credentialed_answer_is_private_whatever_headers_the_view_set(
        cache: str | None, vary: list[str] | None, casing: Any, credential: dict[str, str]) -> None:
    own = ([(casing("Cache-Control"), cache)] if cache else []) + ([(casing("Vary"), ", ".join(vary))] if vary else [])
    with Flask(__name__).test_request_context("/healthz", environ_base=credential):
        response = mark_private(Response("x", headers=own))
    assert response.headers.getlist("Cache-Control") == ["no-store"]
    assert _count(response, "Vary") == 1
    assert {v.lower() for v in response.vary} == {v.lower() for v in (vary or [])} | {"cookie", "authorization"}


def _session_app(interface: SecureCookieSessionInterface, secret: str | None) -> Flask:
    bare = Flask(__name__)
    bare.secret_key = secret
    bare.session_interface = interface

    @bare.get("/read")
    def read() -> Any:
        return {"session": dict(session), "null": bool(getattr(session, "null", False))}

    @bare.post("/write")
    def write() -> Any:
        session["n"] = session.get("n", 0) + 1
        return {"n": session["n"]}

    return bare


def _answers(bare: Flask, cookie: str | None, other: str | None) -> tuple[Any, ...]:
    client = bare.test_client()
    if cookie is not None:
        client.set_cookie("session", cookie)
    if other is not None:
        client.set_cookie("theme", other)
    read = client.get("/read")
    try:
        written = client.post("/write")
        wrote = (written.status_code, written.get_json(), written.headers.getlist("Set-Cookie") != [])
    except RuntimeError as exc:  # Flask's null session refuses a write without a secret key
        wrote = ("refused", str(exc)[:40], False)
    return read.status_code, read.get_json(), wrote


@settings(max_examples=80, deadline=None)
@given(data=st.data(), secret=st.sampled_from([None, "k" * 32]),
       other=st.none() | st.text("abc", max_size=4))
def test_the_session_opens_as_flasks_own_whatever_the_cookie(data: st.DataObject, secret: str | None,
                                                             other: str | None) -> None:
    signed = SecureCookieSessionInterface().get_signing_serializer(_session_app(
        SecureCookieSessionInterface(), "k" * 32))
    assert signed is not None
    valid = signed.dumps({"n": 41})
    cookie = data.draw(st.sampled_from([None, "", valid, valid[:-2] + "xx", "garbage"]))
    ours = _answers(_session_app(CookieSessionInterface(), secret), cookie, other)
    flasks = _answers(_session_app(SecureCookieSessionInterface(), secret), cookie, other)
    assert ours == flasks


def test_the_app_uses_the_cookie_session_interface(app: Flask) -> None:
    assert isinstance(app.session_interface, CookieSessionInterface)


def test_each_answered_request_is_counted_once_under_its_rule(app: Flask) -> None:
    def count() -> float:
        labels = {"method": "GET", "endpoint": "/healthz", "status": "200"}
        return REGISTRY.get_sample_value("hatidata_http_requests_total", labels) or 0.0

    def observed() -> float:
        labels = {"method": "GET", "endpoint": "/healthz"}
        return REGISTRY.get_sample_value("hatidata_http_request_duration_seconds_count", labels) or 0.0

    before = count(), observed()
    for _ in range(3):
        assert app.test_client().get("/healthz").status_code == 200
    assert (count(), observed()) == (before[0] + 3, before[1] + 3)
