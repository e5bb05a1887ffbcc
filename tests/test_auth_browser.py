"""The full login in headless Chromium through the emulator's hosted page, into the embedded dashboard."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import playwright.sync_api as sync_api  # a locked dependency: missing is a failure, never a skip
import pytest
from flask import Flask
from werkzeug.serving import make_server

from tests.support.browser import CHROMIUM_ARGS, click_and_wait
from tests.test_embedded_example import dashboard as dashboard  # fixture

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def served(dashboard: Flask) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, dashboard, threaded=True)
    dashboard.config["HATIDATA_PUBLIC_URL"] = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=5)


def test_login_through_hosted_page_sets_a_safe_cookie(served: str, emulator: Any) -> None:
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            page = context.new_page()
            page.goto(f"{served}/")  # not signed in: sent to /auth/login, then to the emulator
            page.wait_for_url(f"{emulator.url}/**")
            page.fill("#email", "dev@acme.test")
            click_and_wait(page, "button[type=submit]")
            if page.url.startswith(emulator.url):  # the simulated IdP's account picker
                click_and_wait(page, "button[value='dev@acme.test']")
            page.wait_for_url(f"{served}/")
            assert "Signed in as dev@acme.test (developer)" in page.inner_text("#who")
            cookies = {c["name"]: c for c in context.cookies(served)}
            session = cookies["hatidata_session"]
            assert session["httpOnly"] is True
            assert session["sameSite"] == "Lax"
            assert session["secure"] is False  # testing profile; production sets Secure
            assert session["expires"] == -1  # not remembered: ends with the browser
            assert page.evaluate("document.cookie").find("hatidata_session") == -1  # invisible to scripts
            click_and_wait(page, "#logout")
            assert "hatidata_session" not in {c["name"] for c in context.cookies(served)}
            page.goto(f"{served}/data")  # signed out: back to the sign-in page
            assert page.url.startswith(f"{emulator.url}/user_management/authorize")
        finally:
            browser.close()


def _control(emulator: Any, path: str, **params: str) -> Any:
    import httpx2

    response = httpx2.get(f"{emulator.url}/_emulator/{path}", params=params,
                          headers={"Authorization": "Bearer sk_test_emulator"}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def _hosted_sign_in_page(sync_api: Any, p: Any, served: str, emulator: Any, email: str) -> tuple[Any, Any]:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
    page = browser.new_context().new_page()
    page.goto(f"{served}/")
    page.wait_for_url(f"{emulator.url}/**")
    page.fill("#email", email)
    click_and_wait(page, "button[type=submit]")
    return browser, page


def test_hooli_signs_in_with_a_password_and_with_a_magic_code(served: str, emulator: Any) -> None:
    password = _control(emulator, "seed_passwords")["owner@hooli.test"]
    with sync_api.sync_playwright() as p:
        browser, page = _hosted_sign_in_page(sync_api, p, served, emulator, "owner@hooli.test")
        try:
            assert page.locator("button[value='owner@hooli.test']").count() == 0  # no IdP picker: no SSO
            assert page.input_value("#password-email") == "owner@hooli.test"
            page.fill("#password", password)
            page.click("#password-sign-in button[type=submit]")
            page.wait_for_url(f"{served}/")
            assert "Signed in as owner@hooli.test (admin)" in page.inner_text("#who")
        finally:
            browser.close()
        browser, page = _hosted_sign_in_page(sync_api, p, served, emulator, "member@hooli.test")
        try:
            page.click("#magic-auth button[type=submit]")
            page.wait_for_selector("#code")
            code = _control(emulator, "magic_auth", email="member@hooli.test")["data"][0]["code"]
            page.fill("#code", code)
            page.click("button[type=submit]")
            page.wait_for_url(f"{served}/")
            assert "Signed in as member@hooli.test (viewer)" in page.inner_text("#who")
        finally:
            browser.close()


def test_an_sso_organization_is_never_offered_a_password(served: str, emulator: Any) -> None:
    with sync_api.sync_playwright() as p:
        browser, page = _hosted_sign_in_page(sync_api, p, served, emulator, "dev@acme.test")
        try:
            page.wait_for_selector("button[value='dev@acme.test']")  # the simulated Okta picker
            assert page.locator("input[type=password]").count() == 0
            assert "Email me a code" not in page.content()
        finally:
            browser.close()
