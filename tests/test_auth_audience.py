"""The access token's audience: the emulator mints ``aud``/``client_id`` as AuthKit does, and the app accepts
tokens for its own client only (a token WorkOS minted for another application of the same environment, signed
by the same key, is refused)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient
from workos import WorkOSClient

from hatidata_auth.services.introspection import Unauthenticated
from tests.auth_support import access_token, login, sync_organizations
from workos_emulator.keys import CERT_FILE, KEY_FILE
from workos_emulator.testing import EmulatorServer

from .emulator.helpers import code_from, follow_authorize

OTHER_CLIENT = "client_other_application"


def test_the_apps_tokens_carry_its_client_and_are_accepted(app: Flask, client: FlaskClient) -> None:
    sync_organizations(app)
    assert login(client, "admin@acme.test").status_code == 302
    token = access_token(app, client)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["aud"] == app.config["WORKOS_CLIENT_ID"]
    assert claims["client_id"] == app.config["WORKOS_CLIENT_ID"]
    response = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.get_json()


def test_a_token_for_another_client_is_refused(app: Flask, client: FlaskClient, emulator: Any,
                                               tmp_path: Path) -> None:
    # Another application of the same WorkOS environment: same signing key and issuer, its own client id.
    data_dir = tmp_path / "other"
    data_dir.mkdir()
    for name in (KEY_FILE, CERT_FILE):
        shutil.copy(Path(emulator.emulator.config.data_dir) / name, data_dir / name)
    other = EmulatorServer(data_dir=str(data_dir), client_id=OTHER_CLIENT, public_url=emulator.url)
    with other, WorkOSClient(api_key="sk_test_emulator", client_id=OTHER_CLIENT, base_url=other.url,
                             max_retries=0) as workos:
        url = workos.user_management.get_authorization_url(
            redirect_uri="http://localhost:5000/auth/callback", provider="authkit",
            organization_id="org_01HTDQ8A100000000000000001", login_hint="admin@acme.test")
        code, _ = code_from(follow_authorize(url).headers["location"])
        token = workos.user_management.authenticate_with_code(code=code).access_token
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (claims["aud"], claims["client_id"], claims["iss"]) == (OTHER_CLIENT, OTHER_CLIENT, emulator.url)
    with pytest.raises(Unauthenticated) as refused:
        app.extensions["hatidata_auth"].verifier.verify(token)
    assert refused.value.reason == "audience"
    response = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401, response.get_json()
    assert response.get_json()["error"]["code"] == "unauthenticated"
