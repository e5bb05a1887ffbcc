"""Helpers for driving the SSO setup wizard with the Flask test client against the emulator."""

from __future__ import annotations

import re
from html import unescape
from io import BytesIO
from typing import Any

from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tests.auth_support import authorize, callback_path

UMBRELLA = "org_01HTDQ8A400000000000000001"
ENTRA_GROUPS = {"admin": "5581e43f-6096-41d4-8ffa-04e560bab39d", "developer": "7b2d9c14-3e6a-4f85-a1c0-9d8e2f4b6a17",
                "viewer": "d3f6a8b2-9c41-4e7d-8b35-1f0e6c2a9d58"}
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_from(html: str) -> str:
    """The CSRF token in a rendered form."""
    match = _CSRF.search(html)
    assert match, html[:500]
    return unescape(match.group(1))


class Wizard:
    """Drive one plugin's wizard as a signed-in admin."""

    def __init__(self, client: FlaskClient, plugin: str) -> None:
        self.client = client
        self.plugin = plugin
        self.token = ""

    def url(self, key: str) -> str:
        return f"/admin/sso/{self.plugin}/wizard/{key}"

    def start(self) -> TestResponse:
        page = self.client.get("/admin/sso/")
        assert page.status_code == 200, page.get_data(as_text=True)[:300]
        self.token = csrf_from(page.get_data(as_text=True))
        return self.client.post("/admin/sso/start", data={"plugin": self.plugin, "csrf_token": self.token})

    def get(self, key: str) -> TestResponse:
        response = self.client.get(self.url(key))
        if response.status_code == 200:
            self.token = csrf_from(response.get_data(as_text=True))
        return response

    def post(self, key: str, data: dict[str, Any], file: bytes | None = None) -> TestResponse:
        if not self.token:
            self.get(key)
        body: dict[str, Any] = {"csrf_token": self.token, **data}
        if file is not None:
            body["metadata_file"] = (BytesIO(file), "metadata.xml")
        return self.client.post(self.url(key), data=body, content_type="multipart/form-data")

    def test_login(self, email: str) -> TestResponse:
        """Run a test sign-in through the emulator and return the step page showing the result."""
        started = self.post("test-login", {"action": "start", "login_hint": email})
        assert started.status_code == 302, started.get_data(as_text=True)[:500]
        back = self.client.get(callback_path(authorize(started.headers["Location"])))
        assert back.status_code == 302, back.get_data(as_text=True)[:500]
        return self.get("test-login")


def mapping_form(rows: list[tuple[str, str, str]], default_role: str = "viewer",
                 action: str = "next") -> dict[str, str]:
    """The role-mapping step's form for (label, identifier, role) rows."""
    data = {"action": action, "default_role": default_role}
    for i, (label, identifier, role) in enumerate(rows):
        data.update({f"rows-{i}-label": label, f"rows-{i}-identifier": identifier, f"rows-{i}-role": role})
    return data
