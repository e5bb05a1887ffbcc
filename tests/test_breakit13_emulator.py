"""Break-it (issue #13): the emulator's AuthKit password and Magic Auth rules, from outside (real HTTP, own users
and organizations), and its state folder."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2

HOOLI = "org_01HTDQ8A500000000000000001"
ACME = "org_01HTDQ8A100000000000000001"
API = {"Authorization": "Bearer sk_test_emulator"}
SECRET = {"client_id": "client_emulator", "client_secret": "sk_test_emulator"}
MAGIC = "urn:workos:oauth:grant-type:magic-auth:code"
SELECT = "urn:workos:oauth:grant-type:organization-selection"
REDIRECT = "http://localhost:5000/auth/callback"


def _api(emulator: Any) -> httpx2.Client:
    return httpx2.Client(base_url=emulator.url, headers=API, timeout=10)


def _authenticate(http: httpx2.Client, **body: Any) -> httpx2.Response:
    return http.post("/user_management/authenticate", json={**SECRET, **body})


def _member_of(http: httpx2.Client, email: str, password: str | None, *orgs: str) -> str:
    body: dict[str, Any] = {"email": email, "email_verified": True}
    if password:
        body["password"] = password
    user = http.post("/user_management/users", json=body)
    assert user.status_code == 201, user.text
    for org in orgs:
        made = http.post("/user_management/organization_memberships",
                         json={"user_id": user.json()["id"], "organization_id": org, "role_slug": "viewer"})
        assert made.status_code == 201, made.text
    return str(user.json()["id"])


def test_five_wrong_codes_end_every_outstanding_code(emulator: Any) -> None:
    http = _api(emulator)
    email = "pat@hooli.test"
    _member_of(http, email, None, HOOLI)
    first = http.post("/user_management/magic_auth", json={"email": email}).json()["code"]
    second = http.post("/user_management/magic_auth", json={"email": email}).json()["code"]
    wrong = next(c for c in ("000000", "111111", "222222") if c not in (first, second))
    for _ in range(5):
        assert _authenticate(http, grant_type=MAGIC, email=email, code=wrong).json()["code"] == "invalid_one_time_code"
    late = _authenticate(http, grant_type=MAGIC, email=email, code=first)
    assert late.status_code == 400, "a code was accepted after 5 wrong codes (docs: too_many_attempts)"


def test_a_password_or_code_sign_in_never_lands_in_an_organization_with_active_sso(emulator: Any) -> None:
    http = _api(emulator)
    email, password = "rio@freelance.example", "rio-password-42"
    _member_of(http, email, password, HOOLI, ACME)
    # The hosted page refuses it (Acme has an active connection: SSO only) ...
    outcomes = []
    pending = _authenticate(http, grant_type="password", email=email, password=password).json()
    chosen = _authenticate(http, grant_type=SELECT, organization_id=ACME,
                           pending_authentication_token=pending["pending_authentication_token"])
    outcomes.append(("password + selection", chosen.status_code, chosen.json().get("organization_id")))
    code = http.post("/user_management/magic_auth", json={"email": email}).json()["code"]
    pending = _authenticate(http, grant_type=MAGIC, email=email, code=code).json()
    chosen = _authenticate(http, grant_type=SELECT, organization_id=ACME,
                           pending_authentication_token=pending["pending_authentication_token"])
    outcomes.append(("magic + selection", chosen.status_code, chosen.json().get("organization_id")))
    pending = _authenticate(http, grant_type="password", email=email, password=password).json()
    hooli = _authenticate(http, grant_type=SELECT, organization_id=HOOLI,
                          pending_authentication_token=pending["pending_authentication_token"]).json()
    switched = _authenticate(http, grant_type="refresh_token", refresh_token=hooli["refresh_token"],
                             organization_id=ACME)
    outcomes.append(("refresh switch", switched.status_code, switched.json().get("organization_id")))
    landed = [o for o in outcomes if o[1] == 200]
    assert not landed, f"a Password/MagicAuth session in Acme (SSO only): {landed}"


def _hosted_magic_action(emulator: Any) -> tuple[httpx2.Client, str]:
    browser = httpx2.Client(base_url=emulator.url, timeout=10, follow_redirects=False)
    page = browser.get("/user_management/authorize", params={
        "client_id": "client_emulator", "redirect_uri": REDIRECT, "response_type": "code", "organization_id": HOOLI})
    assert page.status_code == 200, page.text[:200]
    return browser, next(a for a in re.findall(r'action="([^"]+)"', page.text) if "/magic/" in a)


def test_email_me_a_code_reveals_no_membership(emulator: Any) -> None:
    _member_of(_api(emulator), "sam@hooli.test", None, HOOLI)
    browser, action = _hosted_magic_action(emulator)
    answers = {email: [browser.post(action, data={"email": email}).status_code for _ in range(4)]
               for email in ("sam@hooli.test", "nobody-here@hooli.test")}
    assert answers["sam@hooli.test"] == answers["nobody-here@hooli.test"], answers


def test_the_state_file_is_owner_only(tmp_path: Path) -> None:
    from workos_emulator.testing import EmulatorServer

    data = tmp_path / "emu"
    with EmulatorServer(data_dir=str(data)) as server:
        httpx2.post(f"{server.url}/user_management/magic_auth", json={"email": "member@hooli.test"}, headers=API)
    assert stat.S_IMODE((data / "seed_passwords.json").stat().st_mode) == 0o600
    leaked = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in data.iterdir()
              if p.name.startswith("state.sqlite3") and stat.S_IMODE(p.stat().st_mode) & 0o077}
    assert not leaked, f"readable by other local users: {leaked}"


def test_a_corrupted_state_file_is_named_not_a_traceback(tmp_path: Path) -> None:
    data = tmp_path / "emu"
    data.mkdir()
    (data / "state.sqlite3").write_bytes(os.urandom(4096))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    run = subprocess.run([sys.executable, "-m", "workos_emulator", "--port", "1", "--data-dir", str(data)],
                         capture_output=True, text=True, timeout=60, env=env, check=False)
    out = run.stdout + run.stderr
    assert "Traceback" not in out, out[-800:]
    assert "state.sqlite3" in out, out[-800:]


def test_the_printed_seed_password_always_signs_in(tmp_path: Path) -> None:
    from workos_emulator.testing import EmulatorServer

    data = tmp_path / "emu"
    with EmulatorServer(data_dir=str(data)):
        pass
    (data / "seed_passwords.json").unlink()
    with EmulatorServer(data_dir=str(data)) as server:
        http = httpx2.Client(base_url=server.url, headers=API, timeout=10)
        password = http.get("/_emulator/seed_passwords").json()["owner@hooli.test"]
        answer = _authenticate(http, grant_type="password", email="owner@hooli.test", password=password)
    assert answer.status_code == 200, answer.text


def test_email_verification_guesses_count_against_the_authenticate_limit(emulator: Any) -> None:
    http = _api(emulator)
    email, password = "uma@unverified.example", "uma-password-7"
    assert http.post("/user_management/users", json={"email": email, "password": password}).status_code == 201
    answered = 0
    for _ in range(3):
        started = _authenticate(http, grant_type="password", email=email, password=password)
        if started.status_code == 429:
            break
        answered += 1
        token = started.json()["pending_authentication_token"]
        for guess in ("000001", "000002", "000003", "000004", "000005"):
            tried = _authenticate(http, grant_type="urn:workos:oauth:grant-type:email-verification:code",
                                  pending_authentication_token=token, code=guess)
            if tried.status_code == 429:
                break
            answered += 1
    assert answered <= 10, f"{answered} authenticate calls for one email answered within a minute"
