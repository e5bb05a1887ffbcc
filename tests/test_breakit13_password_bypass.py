"""Break-it (issue #13): the hosted page's ``login_hint`` shortcut signs in a user AuthKit must authenticate itself
(a password user, a member of Hooli only) without any password or code.

docs/emulator.md: "``login_hint`` never skips the password" and "the organization-less picker ... never lists nor
signs in a user AuthKit authenticates itself". ``hosted.idp_submit`` applies that rule (``_authkit_only``), but
``hosted.begin_authorization``'s ``login_hint`` auto-completion does not: with a ``provider`` other than
``authkit``, or for a member of several organizations, it completes the organization-less picker for the hinted
email. Anyone who knows an email rewrites the authorize URL the app hands out and the app signs them in as that
user, recorded as a ``password`` sign-in.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx2
import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.auth_support import callback_path, cookie_value, start_login, sync_organizations

HOOLI = "org_01HTDQ8A500000000000000001"
ACME = "org_01HTDQ8A100000000000000001"
OWNER = "owner@hooli.test"
API = {"Authorization": "Bearer sk_test_emulator"}


def _rewrite(url: str, drop: tuple[str, ...], **add: str) -> str:
    parts = urlsplit(url)
    params = [(k, v) for k, v in parse_qsl(parts.query) if k not in drop and k not in add]
    return urlunsplit(parts._replace(query=urlencode([*params, *add.items()])))


def _authorize(url: str) -> httpx2.Response:
    with httpx2.Client(follow_redirects=False, timeout=10) as browser:
        return browser.get(url)


@pytest.mark.usefixtures("emulator")
def test_a_rewritten_authorize_url_never_signs_in_a_password_user_without_the_password(
        app: Flask, client: FlaskClient) -> None:
    sync_organizations(app)
    url = start_login(client, email=OWNER)  # the app pins Hooli: the hosted page asks for the password
    forged = _rewrite(url, ("organization_id", "connection_id", "provider"), provider="GoogleOAuth")
    answer = _authorize(forged)
    signed_in = False
    if answer.status_code == 302 and "code=" in answer.headers["location"]:
        signed_in = client.get(callback_path(answer.headers["location"])).status_code == 302 and bool(
            cookie_value(client))
    assert not signed_in, "an anonymous browser became owner@hooli.test (Hooli's admin) without a password"


def test_login_hint_never_skips_the_password_of_a_member_of_several_organizations(emulator: Any) -> None:
    http = httpx2.Client(base_url=emulator.url, headers=API, timeout=10)
    email = "quinn@contractors.example"
    user = http.post("/user_management/users", json={"email": email, "password": "quinn-secret-9",
                                                     "email_verified": True}).json()
    for org in (HOOLI, ACME):
        assert http.post("/user_management/organization_memberships",
                         json={"user_id": user["id"], "organization_id": org, "role_slug": "viewer"}).status_code == 201
    answer = _authorize(f"{emulator.url}/user_management/authorize?" + urlencode({
        "client_id": "client_emulator", "redirect_uri": "http://localhost:5000/auth/callback",
        "response_type": "code", "provider": "authkit", "login_hint": email, "state": "s"}))
    assert answer.status_code == 200, f"signed in without a password: {answer.headers.get('location')}"
