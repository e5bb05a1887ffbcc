"""Break-it round 2 (issue #13): the emulator's code exchange and organization selection, from outside (real
HTTP, own organizations and users)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import jwt
import pytest

API = {"Authorization": "Bearer sk_test_emulator"}
CLIENT_ID = "client_emulator"
SELECT = "urn:workos:oauth:grant-type:organization-selection"


def _api(emulator: Any) -> httpx2.Client:
    return httpx2.Client(base_url=emulator.url, headers=API, timeout=10)


def _created(response: httpx2.Response) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


def test_a_code_issued_without_pkce_needs_the_client_secret(emulator: Any) -> None:
    with _api(emulator) as http:
        org = _created(http.post("/organizations", json={"name": "Tamarind Freight"}))
        user = _created(http.post("/user_management/users",
                                  json={"email": "odile.marchetti@tamarind-freight.test", "email_verified": True}))
        _created(http.post("/user_management/organization_memberships",
                           json={"user_id": user["id"], "organization_id": org["id"], "role_slug": "viewer"}))
        code = _created(http.post("/_emulator/impersonations",
                                  json={"user_id": user["id"], "organization_id": org["id"],
                                        "impersonator_email": "support@vendor.test"}))["code"]
    # Whoever reads the code (a redirect URL in a log, a browser history) exchanges it without the secret.
    stolen = httpx2.post(f"{emulator.url}/user_management/authenticate", timeout=10,
                         json={"grant_type": "authorization_code", "client_id": CLIENT_ID, "code": code,
                               "code_verifier": "made-up-verifier-" + "x" * 40})
    assert stolen.status_code == 400, stolen.text[:300]
    assert "access_token" not in stolen.text


def test_a_pending_domain_claim_does_not_force_sso_on_the_domains_users(emulator: Any) -> None:
    with _api(emulator) as http:
        own = _created(http.post("/organizations", json={"name": "Kestrel Optics"}))
        user = _created(http.post("/user_management/users",
                                  json={"email": "ines.varga@freelance-box.test", "email_verified": True,
                                        "password": "Zq8-lantern-orbit"}))
        _created(http.post("/user_management/organization_memberships",
                           json={"user_id": user["id"], "organization_id": own["id"], "role_slug": "viewer"}))
        claimer = _created(http.post("/organizations", json={
            "name": "Mallory Holdings", "domain_data": [{"domain": "freelance-box.test", "state": "pending"}]}))
        _created(http.post("/connections", json={"organization_id": claimer["id"],
                                                 "saml_options": {"idp_sso_url": "https://idp.mallory.test/sso"}}))
        signed_in = http.post("/user_management/authenticate", json={
            "grant_type": "password", "client_id": CLIENT_ID, "client_secret": "sk_test_emulator",
            "email": "ines.varga@freelance-box.test", "password": "Zq8-lantern-orbit"})
    assert signed_in.status_code == 200, signed_in.text[:300]
    assert signed_in.json()["organization_id"] == own["id"]


def test_authorize_refuses_an_unregistered_redirect_uri(emulator: Any) -> None:
    response = httpx2.get(f"{emulator.url}/user_management/authorize", timeout=10, follow_redirects=False, params={
        "client_id": CLIENT_ID, "redirect_uri": "https://collector.evil.test/cb", "response_type": "code",
        "provider": "authkit", "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "code_challenge_method": "S256", "login_hint": "admin@acme.test"})
    assert response.status_code in (400, 422), (response.status_code, response.headers.get("location"))


def test_logout_returns_only_to_a_configured_sign_out_redirect(emulator: Any) -> None:
    with _api(emulator) as http:
        org = _created(http.post("/organizations", json={"name": "Umber Lantern"}))
        user = _created(http.post("/user_management/users", json={
            "email": "noor.haddad@umber-lantern.test", "email_verified": True, "password": "Zq8-lantern-orbit"}))
        _created(http.post("/user_management/organization_memberships",
                           json={"user_id": user["id"], "organization_id": org["id"], "role_slug": "viewer"}))
        signed_in = http.post("/user_management/authenticate", json={
            "grant_type": "password", "client_id": CLIENT_ID, "client_secret": "sk_test_emulator",
            "email": "noor.haddad@umber-lantern.test", "password": "Zq8-lantern-orbit"})
        assert signed_in.status_code == 200, signed_in.text[:300]
        token = signed_in.json()["access_token"]
    session_id = jwt.decode(token, options={"verify_signature": False})["sid"]
    response = httpx2.get(f"{emulator.url}/user_management/sessions/logout", timeout=10, follow_redirects=False,
                          params={"session_id": session_id, "return_to": "https://phish.evil.test/login"})
    assert not str(response.headers.get("location", "")).startswith("https://phish.evil.test"), response.status_code


# ---- the classes behind the four faults: every token endpoint, every code-issuing entry point, every key file ----
TOKEN_ENDPOINTS = {"authkit": "/user_management/authenticate", "sso": "/sso/token"}
VERIFIER = "a-genuine-verifier-" + "v" * 40
CHALLENGE = base64.urlsafe_b64encode(hashlib.sha256(VERIFIER.encode()).digest()).rstrip(b"=").decode()
CALLBACK = "http://localhost:5000/auth/callback"  # the demo seed's registered redirect URI


def _code(emulator: Any, kind: str, *, pkce: bool) -> str:
    """A code for admin@acme.test through the ``login_hint`` shortcut, with or without a PKCE challenge."""
    params = {"client_id": CLIENT_ID, "redirect_uri": CALLBACK, "response_type": "code",
              "login_hint": "admin@acme.test", "organization" if kind == "sso" else "organization_id":
              "org_01HTDQ8A100000000000000001"}
    if kind == "authkit":
        params["provider"] = "authkit"
    if pkce:
        params.update(code_challenge=CHALLENGE, code_challenge_method="S256")
    response = httpx2.get(f"{emulator.url}/{'sso' if kind == 'sso' else 'user_management'}/authorize",
                          params=params, timeout=10, follow_redirects=False)
    assert response.status_code == 302, response.text[:300]
    return parse_qs(urlsplit(response.headers["location"]).query)["code"][0]


def _redeem(emulator: Any, kind: str, code: str, **proof: str) -> httpx2.Response:
    body = {"grant_type": "authorization_code", "client_id": CLIENT_ID, "code": code, **proof}
    return httpx2.post(emulator.url + TOKEN_ENDPOINTS[kind], json=body, timeout=10)


@pytest.mark.parametrize("kind", sorted(TOKEN_ENDPOINTS))
def test_a_code_is_redeemed_with_its_verifier_or_else_the_client_secret(emulator: Any, kind: str) -> None:
    assert _redeem(emulator, kind, _code(emulator, kind, pkce=False), code_verifier=VERIFIER).status_code == 400
    assert _redeem(emulator, kind, _code(emulator, kind, pkce=False)).status_code == 400
    assert _redeem(emulator, kind, _code(emulator, kind, pkce=False),
                   client_secret="sk_test_emulator").status_code == 200
    assert _redeem(emulator, kind, _code(emulator, kind, pkce=True),
                   code_verifier="not-the-verifier-" + "x" * 40).status_code == 400
    assert _redeem(emulator, kind, _code(emulator, kind, pkce=True), client_secret="sk_test_emulator").status_code \
        == 400
    assert _redeem(emulator, kind, _code(emulator, kind, pkce=True), code_verifier=VERIFIER).status_code == 200
    # A refused attempt spends the code: it cannot be retried with the right proof.
    code = _code(emulator, kind, pkce=False)
    assert _redeem(emulator, kind, code, code_verifier=VERIFIER).status_code == 400
    assert _redeem(emulator, kind, code, client_secret="sk_test_emulator").status_code == 400


def test_the_sdk_redeems_an_impersonation_code_with_its_api_key(emulator: Any) -> None:
    from workos import WorkOSClient

    with _api(emulator) as http:
        code = _created(http.post("/_emulator/impersonations", json={
            "user_id": "user_01HTDQ8G100000000000000001", "impersonator_email": "support@vendor.test"}))["code"]
    sdk = WorkOSClient(api_key="sk_test_emulator", client_id=CLIENT_ID, base_url=emulator.url)
    signed_in = sdk.user_management.authenticate_with_code(code=code, code_verifier=VERIFIER)
    assert signed_in.authentication_method == "Impersonation"


def test_only_a_verified_domain_routes_and_enforces_sso(emulator: Any) -> None:
    with _api(emulator) as http:
        claimer = _created(http.post("/organizations", json={
            "name": "Mallory Holdings", "domain_data": [{"domain": "freelance-box.test", "state": "pending"}]}))
        _created(http.post("/connections", json={"organization_id": claimer["id"],
                                                 "saml_options": {"idp_sso_url": "https://idp.mallory.test/sso"}}))
        user = _created(http.post("/user_management/users", json={
            "email": "ines.varga@freelance-box.test", "email_verified": True, "password": "Zq8-lantern-orbit"}))
        own = _created(http.post("/organizations", json={"name": "Kestrel Optics"}))
        _created(http.post("/user_management/organization_memberships",
                           json={"user_id": user["id"], "organization_id": own["id"], "role_slug": "viewer"}))
        sign_in = {"grant_type": "password", "client_id": CLIENT_ID, "client_secret": "sk_test_emulator",
                   "email": user["email"], "password": "Zq8-lantern-orbit"}
        # Home-realm discovery on the hosted page does not send the domain's users to the claimer's IdP either.
        page = httpx2.get(f"{emulator.url}/user_management/authorize", timeout=10, follow_redirects=False, params={
            "client_id": CLIENT_ID, "redirect_uri": CALLBACK, "response_type": "code", "provider": "authkit",
            "login_hint": user["email"]})
        assert "Mallory" not in page.text
        assert "idp.mallory.test" not in page.headers.get("location", "")
        assert http.post("/user_management/authenticate", json=sign_in).status_code == 200
        domain = http.get(f"/organizations/{claimer['id']}").json()["domains"][0]
        assert http.post(f"/_emulator/organization_domains/{domain['id']}/state",
                         json={"state": "verified"}).status_code == 200
        refused = http.post("/user_management/authenticate", json=sign_in)
    assert refused.status_code == 400, refused.text[:300]
    assert refused.json()["error"] == "sso_required"


def _entry_points(emulator: Any, redirect_uri: str) -> dict[str, httpx2.Response]:
    """Every way a code is sent to a redirect URI: both authorize endpoints, the hosted organization page and the
    impersonation control route."""
    common = {"client_id": CLIENT_ID, "redirect_uri": redirect_uri, "response_type": "code",
              "login_hint": "admin@acme.test"}
    get = {"follow_redirects": False, "timeout": 10}
    return {
        "authkit": httpx2.get(f"{emulator.url}/user_management/authorize",
                              params={**common, "provider": "authkit"}, **get),
        "sso": httpx2.get(f"{emulator.url}/sso/authorize",
                          params={**common, "organization": "org_01HTDQ8A100000000000000001"}, **get),
        "hosted": httpx2.get(f"{emulator.url}/login/org_01HTDQ8A100000000000000001",
                             params={"redirect_uri": redirect_uri}, **get),
        "impersonation": httpx2.post(f"{emulator.url}/_emulator/impersonations", headers=API, timeout=10, json={
            "user_id": "user_01HTDQ8G100000000000000001", "impersonator_email": "support@vendor.test",
            "redirect_uri": redirect_uri}),
    }


def test_no_entry_point_sends_a_code_to_an_unregistered_redirect_uri(emulator: Any) -> None:
    for uri in ("https://collector.evil.test/cb", "https://app.example.test/auth/callback"):
        answers = {name: r.status_code for name, r in _entry_points(emulator, uri).items()}
        assert set(answers.values()) == {400}, (uri, answers)
    with _api(emulator) as http:
        assert http.post("/_emulator/redirect_uris",
                         json={"uri": "https://app.example.test/auth/callback"}).status_code == 201
        assert http.post("/_emulator/redirect_uris",
                         json={"uri": "https://app.example.test/auth/callback"}).status_code == 200
        assert http.post("/_emulator/redirect_uris", json={"uri": "http://app.example.test/cb"}).status_code == 422
    answers = {name: r.status_code for name, r in _entry_points(emulator, "https://app.example.test/auth/callback")
               .items()}
    assert answers == {"authkit": 302, "sso": 302, "hosted": 200, "impersonation": 201}, answers
    # The development default: any loopback URI (free ports in tests, `make run`).
    loopback = {name: r.status_code for name, r in _entry_points(emulator, "http://127.0.0.1:8765/cb").items()}
    assert 400 not in loopback.values(), loopback


def test_without_the_loopback_default_only_registered_uris_receive_codes(tmp_path: Path) -> None:
    from workos_emulator import demo_seed_path
    from workos_emulator.seed import load_seed_file
    from workos_emulator.testing import EmulatorServer

    seed = load_seed_file(demo_seed_path())
    seed["application"] = {**seed["application"], "loopback_redirects": False}
    (tmp_path / "seed.json").write_text(json.dumps(seed), encoding="utf-8")
    with EmulatorServer(str(tmp_path / "seed.json"), data_dir=str(tmp_path / "emu")) as server:
        answers = {name: r.status_code for name, r in _entry_points(server, "http://127.0.0.1:8765/cb").items()}
        assert set(answers.values()) == {400}, answers
        assert {r.status_code for r in _entry_points(server, CALLBACK).values()} <= {200, 201, 302}


def _signed_in_session(emulator: Any) -> str:
    with _api(emulator) as http:
        response = http.post("/_emulator/impersonations", json={
            "user_id": "user_01HTDQ8G100000000000000001", "impersonator_email": "support@vendor.test"})
        code = _created(response)["code"]
        tokens = http.post("/user_management/authenticate", json={
            "grant_type": "authorization_code", "client_id": CLIENT_ID, "client_secret": "sk_test_emulator",
            "code": code})
    assert tokens.status_code == 200, tokens.text[:300]
    return str(jwt.decode(tokens.json()["access_token"], options={"verify_signature": False})["sid"])


def test_logout_returns_only_to_a_registered_sign_out_redirect(emulator: Any) -> None:
    from workos import WorkOSClient

    sdk = WorkOSClient(api_key="sk_test_emulator", client_id=CLIENT_ID, base_url=emulator.url)
    session_id = _signed_in_session(emulator)
    refused = httpx2.get(sdk.user_management.get_logout_url(session_id=session_id,
                                                            return_to="https://phish.evil.test/login"),
                         timeout=10, follow_redirects=False)
    assert refused.status_code == 422, refused.text[:300]
    # Refused as a whole: the session lives on, and a registered return ends it.
    with _api(emulator) as http:
        assert http.post("/_emulator/redirect_uris",
                         json={"kind": "logout", "uri": "https://app.example.test/signed-out"}).status_code == 201
    done = httpx2.get(sdk.user_management.get_logout_url(session_id=session_id,
                                                         return_to="https://app.example.test/signed-out"),
                      timeout=10, follow_redirects=False)
    assert done.status_code == 302
    assert done.headers["location"] == "https://app.example.test/signed-out"
    default = httpx2.get(f"{emulator.url}/user_management/sessions/logout", timeout=10, follow_redirects=False,
                         params={"session_id": _signed_in_session(emulator)})
    assert default.status_code == 302
    assert default.headers["location"] == "http://localhost:5000/"


def test_key_files_are_owner_only_from_the_start_and_tightened_when_found_open(tmp_path: Path) -> None:
    from workos_emulator.testing import EmulatorServer

    data = tmp_path / "emu"
    old = os.umask(0)  # a permissive umask must not leave the key readable, even for an instant
    try:
        with EmulatorServer(data_dir=str(data)):
            pass
    finally:
        os.umask(old)
    assert stat.S_IMODE((data / "signing_key.pem").stat().st_mode) == 0o600
    for name in ("signing_key.pem", "seed_passwords.json"):
        os.chmod(data / name, 0o644)
    with EmulatorServer(data_dir=str(data)):
        pass
    for name in ("signing_key.pem", "seed_passwords.json", "state.sqlite3"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name
