"""The rule behind break-it 13's faults, as a class: no path of the hosted page issues a code for a user AuthKit
authenticates itself without that user's proof; every grant that lands a password / magic-code sign-in in an
organization applies the SSO-only rule; the hosted page's answers reveal no membership."""

from __future__ import annotations

import re
from urllib.parse import urlencode

import httpx2
import pytest
from workos import WorkOSClient

from workos_emulator.testing import EmulatorServer

from .conftest import ACME, CLIENT_ID, REDIRECT_URI
from .helpers import code_from

HOOLI = "org_01HTDQ8A500000000000000001"
OWNER = "owner@hooli.test"  # a password, Hooli only (no SSO)
MEMBER = "member@hooli.test"  # no password, Hooli only: AuthKit sends them a code
SEVERAL = "quinn@contractors.example"  # a password, Hooli and Acme
SECRET = {"client_id": CLIENT_ID, "client_secret": "sk_test_emulator"}


@pytest.fixture
def several(http: httpx2.Client) -> str:
    user = http.post("/user_management/users", json={"email": SEVERAL, "password": "quinn-secret-9",
                                                     "email_verified": True}).json()
    for org in (HOOLI, ACME):
        made = http.post("/user_management/organization_memberships",
                         json={"user_id": user["id"], "organization_id": org, "role_slug": "viewer"})
        assert made.status_code == 201, made.text
    return SEVERAL


def _authorize(emu: EmulatorServer, **params: str) -> httpx2.Response:
    query = urlencode({"client_id": CLIENT_ID, "redirect_uri": REDIRECT_URI, "response_type": "code", **params})
    with httpx2.Client(follow_redirects=False, timeout=10) as browser:
        return browser.get(f"{emu.url}/user_management/authorize?{query}")


@pytest.mark.parametrize("email", [OWNER, MEMBER, SEVERAL])
def test_no_entry_point_of_the_hosted_page_signs_in_without_authkit_s_proof(
        emu: EmulatorServer, several: str, email: str) -> None:
    issued = []
    for params in ({"provider": "authkit"}, {"provider": "GoogleOAuth"}, {"provider": "MicrosoftOAuth"},
                   {"provider": "authkit", "organization_id": HOOLI}):
        answer = _authorize(emu, login_hint=email, state="s", **params)
        if answer.status_code == 302 and "code=" in answer.headers["location"]:
            issued.append(("login_hint", params))
    page = _authorize(emu, provider="authkit")
    areq = re.search(r"/hosted/(areq_[A-Za-z0-9]+)/email", page.text).group(1)  # type: ignore[union-attr]
    for org in ("-", HOOLI):
        picker = httpx2.get(f"{emu.url}/hosted/{areq}/idp/{org}", timeout=10)
        if re.search(rf'value="{re.escape(email)}"', picker.text):
            issued.append(("listed by the picker", org))
        posted = httpx2.post(f"{emu.url}/hosted/{areq}/idp/{org}", data={"email": email}, timeout=10)
        if posted.status_code == 302:
            issued.append(("picker", org))
    assert not issued, f"{email} got a code without a password or a code: {issued}"


def test_the_organization_less_picker_never_reports_a_password(emu: EmulatorServer, workos: WorkOSClient) -> None:
    page = _authorize(emu, provider="authkit")
    areq = re.search(r"/hosted/(areq_[A-Za-z0-9]+)/email", page.text).group(1)  # type: ignore[union-attr]
    done = httpx2.post(f"{emu.url}/hosted/{areq}/idp/-", data={"email": "admin@acme.test"}, timeout=10)
    assert done.status_code == 302
    auth = workos.user_management.authenticate_with_code(code=code_from(done.headers["location"])[0])
    assert auth.authentication_method is not None
    assert auth.authentication_method.value not in ("Password", "MagicAuth")


def test_a_magic_code_session_never_switches_into_an_organization_with_active_sso(
        http: httpx2.Client, several: str) -> None:
    code = http.post("/user_management/magic_auth", json={"email": several}).json()["code"]
    pending = http.post("/user_management/authenticate", json={
        **SECRET, "grant_type": "urn:workos:oauth:grant-type:magic-auth:code", "email": several, "code": code}).json()
    hooli = http.post("/user_management/authenticate", json={
        **SECRET, "grant_type": "urn:workos:oauth:grant-type:organization-selection", "organization_id": HOOLI,
        "pending_authentication_token": pending["pending_authentication_token"]})
    assert hooli.status_code == 200, hooli.text
    switched = http.post("/user_management/authenticate", json={
        **SECRET, "grant_type": "refresh_token", "refresh_token": hooli.json()["refresh_token"],
        "organization_id": ACME})
    assert switched.status_code == 400
    assert switched.json()["error"] == "sso_required"
    stayed = http.post("/user_management/authenticate", json={
        **SECRET, "grant_type": "refresh_token", "refresh_token": hooli.json()["refresh_token"]})
    assert stayed.status_code == 200, "a refused switch must leave the refresh token usable"


def test_a_seed_password_file_deleted_while_running_still_shows_a_password_that_signs_in(
        emu: EmulatorServer, http: httpx2.Client) -> None:
    from pathlib import Path

    (Path(emu.emulator.config.data_dir) / "seed_passwords.json").unlink()
    password = http.get("/_emulator/seed_passwords").json()[OWNER]
    answer = http.post("/user_management/authenticate",
                       json={**SECRET, "grant_type": "password", "email": OWNER, "password": password})
    assert answer.status_code == 200, answer.text
