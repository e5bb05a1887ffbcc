"""Swagger UI's "Try it out" works with the dashboard's cookie session (issue #15 item 7): in headless Chromium a
signed-in admin creates an API key from the page itself, the CSRF token added by the page's request interceptor;
and the scopes it offers are the API's enum."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask

from tests.auth_support import sync_organizations
from tests.support.browser import chromium
from tests.support.servers import LiveServer

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_try_it_out_posts_with_the_cookie_session(app: Flask, emulator: Any) -> None:
    sync_organizations(app)
    with LiveServer(app) as server, chromium() as browser:
        app.config["HATIDATA_PUBLIC_URL"] = server.url
        context = browser.new_context()
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.goto(f"{server.url}/auth/login?email=admin@acme.test&return_to=/api/docs")
        assert page.url == f"{server.url}/api/docs", page.url
        sent: list[dict[str, str]] = []
        page.on("request", lambda r: sent.append(r.headers) if r.method == "POST" and "/api-keys" in r.url else None)

        operation = page.locator(".opblock-post").filter(has=page.locator('[data-path="/api/v1/api-keys"]')).first
        operation.locator(".opblock-summary").click()  # stays on the page
        operation.locator("button.try-out__btn").click()  # stays on the page
        body = operation.locator("textarea.body-param__text")
        body.fill(json.dumps({"name": "from swagger", "scopes": ["data:read"]}))
        operation.locator("button.execute").click()  # stays on the page: the response is awaited below
        status = operation.locator(".live-responses-table .response .response-col_status").first
        status.wait_for()
        assert status.inner_text().strip() == "201", operation.locator(".live-responses-table").inner_text()
        assert sent
        assert sent[-1].get("x-csrftoken"), sent[-1]
        assert "authorization" not in sent[-1]  # the cookie alone, as a person using the page
        context.close()
