"""Each of the four IdP wizards walked end to end in headless Chromium against the emulator, through a real server:
sign in as the organization's admin, every step, the test sign-in and the role it resolves, then activation."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import make_server

from hatidata_auth.idp.testing import saml_metadata
from tests.auth_support import sync_organizations
from tests.sso_wizard_support import ENTRA_GROUPS

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

CASES = {
    "okta": {"domain": "acme.test", "user": "admin@acme.test", "role": "admin",
             "url": "https://acme.okta.com/app/exkaell8gidiiUWrg5d7/sso/saml/metadata"},
    "azure": {"domain": "globex.test", "user": "dev@globex.test", "role": "developer",
              "url": "https://login.microsoftonline.com/9c2f6d41-6a7e-4c1b-8b4e-3f0a5c7d2e19/federationmetadata/"
                     "2007-06/federationmetadata.xml?appid=2a1f6b0e-3c4d-4e5f-8a9b-0c1d2e3f4a5b"},
    "google": {"domain": "initech.test", "user": "viewer@initech.test", "role": "viewer",
               "file": saml_metadata("https://accounts.google.com/o/saml2?idpid=C01234567",
                                     "https://accounts.google.com/o/saml2/idp?idpid=C01234567")},
    "onelogin": {"domain": "umbrella.test", "user": "admin@umbrella.test", "role": "admin",
                 "file": saml_metadata("https://app.onelogin.com/saml/metadata/3f1a2b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b",
                                       "https://umbrella.onelogin.com/trust/saml2/http-post/sso/3f1a2b4c")},
}


@pytest.fixture
def wizard_server(app: Flask) -> Iterator[str]:
    """The app served over real HTTP in a thread."""
    sync_organizations(app)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    app.config["HATIDATA_PUBLIC_URL"] = f"http://127.0.0.1:{server.server_port}"  # redirect URIs come from it
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=5)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    import playwright.sync_api as playwright_api

    # `make test` installs Debian's chromium first; a missing browser is a failure, never a skip.
    assert Path("/usr/bin/chromium").exists(), "Debian chromium is not installed: apt-get install chromium"
    with playwright_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.mark.parametrize("plugin", list(CASES))
def test_wizard_in_the_browser(browser: Any, wizard_server: str, plugin: str, tmp_path: Path) -> None:
    case = CASES[plugin]
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        admin = "admin@" + str(case["domain"])
        page.goto(f"{wizard_server}/auth/login?email={admin}&return_to=/admin/sso/")
        assert page.url.endswith("/admin/sso/"), page.url
        # Keyboard: the skip link is the first stop and is visibly focused.
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.className") == "skip"
        page.check(f"#plugin-{plugin}")
        page.click("text=Start or resume setup")

        page.check("#protocol-saml") if page.locator("#protocol-saml").count() else None
        page.check("#confirm")
        page.click("button[value=next]")

        assert page.locator("code", has_text="/sso/saml/acs/").count() >= 1
        assert page.locator("button.copy").count() >= 2
        page.check("#confirm")
        page.click("button[value=next]")

        for box in page.locator("input[type=checkbox][name^=attr_]").all():
            box.check()
        page.click("button[value=next]")

        if "url" in case:
            if page.locator("#source-url").count():
                page.check("#source-url")
            page.fill("#metadata_url", "https://wrong.example.test/metadata")
            page.click("button[value=next]")
            assert page.locator(".error-summary").is_visible()
            page.fill("#metadata_url", str(case["url"]))
        else:
            if page.locator("#source-xml").count():
                page.check("#source-xml")
            page.set_input_files("#metadata_file", files=[
                {"name": "metadata.xml", "mimeType": "text/xml", "buffer": case["file"]}])
        page.click("button[value=next]")
        assert "Map groups to roles" in page.inner_text("h2#step-title")

        if plugin == "azure":
            page.fill("#rows-0-identifier", "HatiData Admins")
            page.click("button[value=next]")
            assert "is not a group object ID" in page.inner_text(".error-summary")
            for i, role in enumerate(("admin", "developer", "viewer")):
                page.fill(f"#rows-{i}-identifier", ENTRA_GROUPS[role])
        page.click("button[value=preview]")
        assert page.locator("#preview-h").is_visible()
        page.click("button[value=next]")

        page.fill("#login_hint", str(case["user"]))
        page.click("#start-test-login")
        page.wait_for_selector("#test-login-role")
        assert f"Profile received for {case['user']}" in page.inner_text("#result-h")
        assert page.inner_text("#test-login-role strong") == case["role"]
        page.click("button[value=next]")

        if page.locator("h2#step-title", has_text="Directory sync").count():
            page.click("button[value=next]")
        page.check("#enforce_sso")
        page.click("button[value=next]")
        assert "Single sign-on is active and enforced" in page.inner_text("main")
    except Exception:
        page.screenshot(path=str(tmp_path / f"{plugin}.png"))
        raise
    finally:
        context.close()
