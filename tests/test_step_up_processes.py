"""Step-up across two app instances (gunicorn, 2 workers each, one database, one Redis): a sign-in older than the
window is refused by both; after a re-authentication through one, the other accepts the very next request (the
authentication time travels in the token, so no instance holds a stale one)."""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import urljoin

import httpx2
import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient
from workos.session import unseal_data

from tests.auth_support import login, sync_organizations
from tests.support.processes import AppProcess
from tests.test_instances import app_config as app_config
from tests.test_instances import instances as instances
from tests.test_instances import redis_url as redis_url

pytestmark = pytest.mark.slow

POLICY = "/api/v1/organization/policy"


def _patch(url: str, token: str) -> httpx2.Response:
    return httpx2.patch(f"{url}{POLICY}", json={}, headers={"Authorization": f"Bearer {token}"}, timeout=10)


def _old_token(app: Flask, client: FlaskClient, emulator: Any) -> str:
    """An access token of a session whose user last actively authenticated an hour ago (AuthKit's record of it
    moved back, then a refresh: refreshes keep ``auth_time``)."""
    data = unseal_data(client.get_cookie(app.config["HATIDATA_COOKIE_NAME"]).value, app.config["HATIDATA_COOKIE_KEY"])
    sid = jwt.decode(data["access_token"], options={"verify_signature": False})["sid"]
    store = emulator.emulator.store
    with store.lock:
        store.sessions[sid]["_auth_time"] = int(time.time()) - 3600
    refreshed = httpx2.post(f"{emulator.url}/user_management/authenticate", timeout=10, json={
        "grant_type": "refresh_token", "client_id": "client_emulator", "client_secret": "sk_test_emulator",
        "refresh_token": data["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.text
    return str(refreshed.json()["access_token"])


def test_re_authentication_through_one_instance_is_seen_by_the_other_at_once(
        app: Flask, client: FlaskClient, emulator: Any, instances: tuple[AppProcess, AppProcess]) -> None:
    a, b = instances
    sync_organizations(app)
    assert login(client, "admin@acme.test").status_code == 302
    old = _old_token(app, client, emulator)
    for instance in (a, b):
        refused = _patch(instance.url, old)
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"]["code"] == "reauthentication_required"
    url = refused.json()["error"]["details"]["reauthenticate_url"]
    with httpx2.Client(timeout=10) as browser:  # one cookie jar: cookies are per host, not per port
        authorize = browser.get(urljoin(a.url, url), follow_redirects=False)
        page = browser.get(authorize.headers["location"], follow_redirects=False)
        assert page.status_code == 200  # max_age=0: AuthKit asks again
        action = re.search(r'action="([^"]*/idp/[^"]*)"', page.text)
        assert action
        picked = browser.post(urljoin(str(page.url), action.group(1)), data={"email": "admin@acme.test"},
                              follow_redirects=False)
        back = browser.get(picked.headers["location"], follow_redirects=False)  # the callback, on instance a
        assert back.status_code == 302, back.text
        csrf = browser.get(f"{b.url}/auth/csrf").json()["csrf_token"]
        fresh = browser.patch(f"{b.url}{POLICY}", json={}, headers={"X-CSRFToken": csrf})
        assert fresh.status_code == 200, fresh.text  # instance b's first request with the new sign-in
        token = unseal_data(browser.cookies[app.config["HATIDATA_COOKIE_NAME"]],
                            app.config["HATIDATA_COOKIE_KEY"])["access_token"]
    for instance in (a, b):
        assert _patch(instance.url, token).status_code == 200
        assert _patch(instance.url, old).status_code == 401
