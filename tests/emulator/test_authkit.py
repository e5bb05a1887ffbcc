"""AuthKit flows: login_hint, hosted pages, PKCE, single-use codes, refresh rotation, sessions, JWT claims."""

from __future__ import annotations

import base64
import hashlib
import re
import time

import httpx2
import jwt
import pytest
from cryptography.fernet import Fernet
from workos import BadRequestError, WorkOSClient
from workos.session import seal_session_from_auth_response

from workos_emulator.testing import EmulatorServer

from .conftest import ACME, CLIENT_ID, GLOBEX, INITECH, REDIRECT_URI
from .helpers import code_from, follow_authorize


def _login(workos: WorkOSClient, email: str, org: str | None = None, **kw: str) -> str:
    url = workos.user_management.get_authorization_url(
        redirect_uri=REDIRECT_URI, provider="authkit", organization_id=org, login_hint=email, state="st", **kw)
    resp = follow_authorize(url)
    assert resp.status_code == 302, resp.text
    assert resp.headers["location"].startswith(REDIRECT_URI + "?")
    return code_from(resp.headers["location"])[0]


def test_login_hint_member_of_org(workos: WorkOSClient) -> None:
    code = _login(workos, "consultant@partners.test", GLOBEX)
    auth = workos.user_management.authenticate_with_code(code=code)
    assert auth.organization_id == GLOBEX
    assert auth.user.email == "consultant@partners.test"


def test_login_hint_non_member_shows_page(workos: WorkOSClient) -> None:
    url = workos.user_management.get_authorization_url(
        redirect_uri=REDIRECT_URI, provider="authkit", organization_id=INITECH, login_hint="admin@acme.test")
    resp = follow_authorize(url)
    assert resp.status_code == 200
    assert "Sign in with Google Workspace" in resp.text


def test_inactive_directory_user_cannot_sign_in(workos: WorkOSClient) -> None:
    url = workos.user_management.get_authorization_url(
        redirect_uri=REDIRECT_URI, provider="authkit", login_hint="former@acme.test")
    resp = follow_authorize(url)
    assert resp.status_code == 200
    assert "former@acme.test" in resp.text


def test_hosted_page_flow(emu: EmulatorServer, workos: WorkOSClient) -> None:
    url = workos.user_management.get_authorization_url(redirect_uri=REDIRECT_URI, provider="authkit", state="abc")
    with httpx2.Client(follow_redirects=False, timeout=10) as browser:
        page = browser.get(url)
        assert page.status_code == 200
        assert '<label for="email">Email</label>' in page.text
        action = re.search(r'action="([^"]+)"', page.text).group(1)
        bad = browser.post(emu.url + action, data={"email": "nobody@unknown.test"})
        assert bad.status_code == 422
        assert "No organization" in bad.text
        step = browser.post(emu.url + action, data={"email": "dev@acme.test"})
        assert step.status_code == 303
        picker = browser.get(emu.url + step.headers["location"])
        assert "Sign in with Okta" in picker.text
        assert "viewer@acme.test" in picker.text
        assert "former@acme.test" not in picker.text
        action = re.search(r'action="([^"]+)"', picker.text).group(1)
        done = browser.post(emu.url + action, data={"email": "dev@acme.test"})
        assert done.status_code == 302
        code, state = code_from(done.headers["location"])
        assert state == "abc"
        # the authorization request is single use
        assert browser.post(emu.url + action, data={"email": "dev@acme.test"}).status_code == 400
    auth = workos.user_management.authenticate_with_code(code=code)
    assert auth.organization_id == ACME
    assert auth.user.email == "dev@acme.test"


def test_hosted_choose_org_for_multi_org_user(emu: EmulatorServer, workos: WorkOSClient) -> None:
    url = workos.user_management.get_authorization_url(redirect_uri=REDIRECT_URI, provider="authkit")
    with httpx2.Client(follow_redirects=False, timeout=10) as browser:
        page = browser.get(url)
        action = re.search(r'action="([^"]+)"', page.text).group(1)
        choose = browser.post(emu.url + action, data={"email": "consultant@partners.test"})
        assert choose.status_code == 200
        assert "Acme Corp" in choose.text
        assert "Globex" in choose.text


def test_index_and_org_login_page(emu: EmulatorServer, workos: WorkOSClient) -> None:
    with httpx2.Client(follow_redirects=False, timeout=10) as browser:
        index = browser.get(emu.url + "/")
        assert index.status_code == 200
        assert f"/login/{ACME}" in index.text
        assert "Umbrella" in index.text
        page = browser.get(f"{emu.url}/login/{GLOBEX}")
        assert page.status_code == 200
        assert "Microsoft Entra ID" in page.text
        action = re.search(r'action="([^"]+)"', page.text).group(1)
        done = browser.post(emu.url + action, data={"email": "viewer@globex.test"})
        assert done.status_code == 302
        assert done.headers["location"].startswith(REDIRECT_URI)
    auth = workos.user_management.authenticate_with_code(code=code_from(done.headers["location"])[0])
    claims = jwt.decode(auth.access_token, options={"verify_signature": False})
    assert claims["role"] == "viewer"
    assert claims["permissions"] == ["data:read"]


def _pkce() -> tuple[str, str]:
    verifier = base64.urlsafe_b64encode(b"v" * 40).rstrip(b"=").decode()
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def test_pkce(workos: WorkOSClient) -> None:
    verifier, challenge = _pkce()
    code = _login(workos, "admin@acme.test", ACME, code_challenge=challenge, code_challenge_method="S256")
    with pytest.raises(BadRequestError) as err:
        workos.user_management.authenticate_with_code(code=code, code_verifier="wrong-verifier")
    assert err.value.error == "invalid_grant"
    assert err.value.request_id
    code = _login(workos, "admin@acme.test", ACME, code_challenge=challenge, code_challenge_method="S256")
    with pytest.raises(BadRequestError):
        workos.user_management.authenticate_with_code(code=code)  # verifier missing
    code = _login(workos, "admin@acme.test", ACME, code_challenge=challenge, code_challenge_method="S256")
    assert workos.user_management.authenticate_with_code(code=code, code_verifier=verifier).user.email


def test_code_is_single_use(workos: WorkOSClient) -> None:
    code = _login(workos, "admin@acme.test", ACME)
    workos.user_management.authenticate_with_code(code=code)
    with pytest.raises(BadRequestError) as err:
        workos.user_management.authenticate_with_code(code=code)
    assert err.value.error == "invalid_grant"


def test_refresh_rotation_and_revocation(emu: EmulatorServer, workos: WorkOSClient, http: httpx2.Client) -> None:
    auth = workos.user_management.authenticate_with_code(code=_login(workos, "dev@acme.test", ACME))
    new = workos.user_management.authenticate_with_refresh_token(refresh_token=auth.refresh_token)
    with pytest.raises(BadRequestError) as err:
        workos.user_management.authenticate_with_refresh_token(refresh_token=auth.refresh_token)
    assert err.value.error == "invalid_grant"
    sid = jwt.decode(new.access_token, options={"verify_signature": False})["sid"]
    workos.user_management.revoke_session(session_id=sid)
    with pytest.raises(BadRequestError) as err:
        workos.user_management.authenticate_with_refresh_token(refresh_token=new.refresh_token)
    assert err.value.error == "invalid_grant"
    # expired session
    auth = workos.user_management.authenticate_with_code(code=_login(workos, "dev@acme.test", ACME))
    sid = jwt.decode(auth.access_token, options={"verify_signature": False})["sid"]
    assert http.post(f"/_emulator/sessions/{sid}/expire").status_code == 200
    with pytest.raises(BadRequestError):
        workos.user_management.authenticate_with_refresh_token(refresh_token=auth.refresh_token)
    assert workos.user_management.list_sessions(auth.user.id).data[0].status.value == "expired"


def test_org_switch_on_refresh(workos: WorkOSClient) -> None:
    auth = workos.user_management.authenticate_with_code(code=_login(workos, "consultant@partners.test", ACME))
    switched = workos.user_management.authenticate_with_refresh_token(refresh_token=auth.refresh_token,
                                                                      organization_id=GLOBEX)
    claims = jwt.decode(switched.access_token, options={"verify_signature": False})
    assert switched.organization_id == GLOBEX
    assert claims["org_id"] == GLOBEX
    assert claims["role"] == "developer"
    with pytest.raises(BadRequestError) as err:
        workos.user_management.authenticate_with_refresh_token(refresh_token=switched.refresh_token,
                                                               organization_id=INITECH)
    assert err.value.error == "organization_membership_not_found"


def test_jwt_verifies_against_jwks(emu: EmulatorServer, workos: WorkOSClient) -> None:
    auth = workos.user_management.authenticate_with_code(code=_login(workos, "admin@acme.test", ACME))
    jwks_client = jwt.PyJWKClient(workos.user_management.get_jwks_url())
    key = jwks_client.get_signing_key_from_jwt(auth.access_token)
    claims = jwt.decode(auth.access_token, key.key, algorithms=["RS256"], issuer=emu.url, audience=CLIENT_ID)
    assert claims["sub"] == auth.user.id
    assert claims["org_id"] == ACME
    assert claims["role"] == "admin"
    assert claims["roles"] == ["admin"]
    assert {"members:write", "keys:write", "sso:manage"} <= set(claims["permissions"])
    assert claims["exp"] - claims["iat"] == 300
    assert claims["iat"] <= time.time() + 1
    assert claims["sid"].startswith("session_")
    assert claims["jti"]
    assert jwt.get_unverified_header(auth.access_token)["kid"] == workos.user_management.get_jwks(
        CLIENT_ID).keys[0].kid
    # the SDK's own sealed-session validation accepts it
    cookie_key = Fernet.generate_key().decode()
    sealed = seal_session_from_auth_response(access_token=auth.access_token, refresh_token=auth.refresh_token,
                                             user=auth.user.to_dict(), cookie_password=cookie_key)
    session = workos.user_management.load_sealed_session(session_data=sealed, cookie_password=cookie_key)
    result = session.authenticate()
    assert result.authenticated
    assert result.organization_id == ACME
    assert result.role == "admin"
    logout_url = session.get_logout_url(return_to="http://localhost:5000/bye")
    resp = follow_authorize(logout_url)
    assert resp.status_code == 302
    assert resp.headers["location"] == "http://localhost:5000/bye"
    assert workos.user_management.list_sessions(auth.user.id).data[0].status.value == "revoked"


def test_signing_key_persists_across_restarts(tmp_path: object) -> None:
    data_dir = str(tmp_path)
    with EmulatorServer(data_dir=data_dir) as first:
        kid1 = first.emulator.keys.jwks()["keys"][0]
    with EmulatorServer(data_dir=data_dir) as second:
        kid2 = second.emulator.keys.jwks()["keys"][0]
    assert kid1 == kid2


def test_jit_provisioning_of_new_directory_user(workos: WorkOSClient, http: httpx2.Client) -> None:
    resp = http.post("/_emulator/directories/directory_01HTDQ8D100000000000000001/users",
                     json={"email": "newbie@acme.test", "first_name": "New", "last_name": "Bie",
                           "groups": ["HatiData Developers"]})
    assert resp.status_code == 201
    auth = workos.user_management.authenticate_with_code(code=_login(workos, "newbie@acme.test", ACME))
    claims = jwt.decode(auth.access_token, options={"verify_signature": False})
    assert auth.user.first_name == "New"
    assert claims["role"] == "developer"


def test_sso_hosted_picker_and_bad_code(emu: EmulatorServer, workos: WorkOSClient) -> None:
    url = workos.sso.get_authorization_url(redirect_uri=REDIRECT_URI, connection="conn_01HTDQ8C300000000000000001",
                                           state="x")
    with httpx2.Client(follow_redirects=False, timeout=10) as browser:
        page = browser.get(url)
        assert page.status_code == 200
        assert "Sign in with Google Workspace" in page.text
        action = re.search(r'action="([^"]+)"', page.text).group(1)
        done = browser.post(emu.url + action, data={"email": "admin@initech.test"})
    code, state = code_from(done.headers["location"])
    assert state == "x"
    profile = workos.sso.get_profile_and_token(code=code).profile
    assert profile.connection_id == "conn_01HTDQ8C300000000000000001"
    assert profile.groups == ["HatiData Admins"]
    with pytest.raises(BadRequestError) as err:
        workos.sso.get_profile_and_token(code=code)
    assert err.value.error == "invalid_grant"
