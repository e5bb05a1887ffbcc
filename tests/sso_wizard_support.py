"""Helpers for driving the SSO setup wizard with the Flask test client against the emulator."""

from __future__ import annotations

import re
from html import unescape
from html.parser import HTMLParser
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


class _Labels(HTMLParser):
    """Each form control's label text (``<label for>``, or a fieldset's ``<legend>``) and the error summary."""

    def __init__(self) -> None:
        super().__init__()
        self.labels: dict[str, str] = {}
        self.ids: set[str] = set()
        self.errors: list[tuple[str, str]] = []
        self._label: str | None = None
        self._fieldsets: list[str | None] = []
        self._legend: str | None = None
        self._summary_link: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(str(a["id"]))
        if tag == "label" and a.get("for"):
            self._label, self._text = str(a["for"]), []
        elif tag == "fieldset":
            self._fieldsets.append(a.get("id"))
        elif tag == "legend" and self._fieldsets and self._fieldsets[-1]:
            self._legend, self._text = self._fieldsets[-1], []
        elif tag == "a" and str(a.get("href", "")).startswith("#") and self._in_summary:
            self._summary_link, self._text = str(a["href"])[1:], []
        if tag == "div" and "error-summary" in str(a.get("class", "")):
            self._in_summary = True

    _in_summary = False

    def handle_endtag(self, tag: str) -> None:
        text = " ".join("".join(self._text).split())
        if tag == "label" and self._label:
            self.labels[self._label] = text
            self._label = None
        elif tag == "legend" and self._legend:
            self.labels[self._legend] = text
            self._legend = None
        elif tag == "fieldset" and self._fieldsets:
            self._fieldsets.pop()
        elif tag == "a" and self._summary_link is not None:
            self.errors.append((self._summary_link, text))
            self._summary_link = None
        elif tag == "div" and self._in_summary and self._summary_link is None:
            self._in_summary = False

    def handle_data(self, data: str) -> None:
        self._text.append(data)


def summary_errors(html: str) -> list[tuple[str, str, str | None, bool]]:
    """The error summary's entries: (target id, message, the target's label or legend, whether the target exists)."""
    parser = _Labels()
    parser.feed(html)
    return [(target, message, parser.labels.get(target), target in parser.ids) for target, message in parser.errors]


def resync_directory(app: Any, organization_id: str) -> None:
    """Mirror the organization's directory (users, groups) from the emulator, as an admin's resync does."""
    from hatidata_auth.causes import Cause
    from hatidata_auth.extensions import db
    from hatidata_auth.services import organization_admin

    with app.app_context():
        organization_admin.resync_directory(db.session(), app.extensions["hatidata_workos"].client,
                                            organization_id=organization_id, cause=Cause.system("test resync"))
        db.session.remove()
