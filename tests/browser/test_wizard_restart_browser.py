"""A restart of `make run` keeps a wizard-created connection (issue 13): in headless Chromium against a real `make run`
(fresh instance folder, free ports), an admin signs in through the hosted login and takes the Okta wizard as far as
creating the WorkOS connection; `make run` is stopped with Ctrl-C and started again on the same instance folder; the
admin signs in again, resumes the wizard, signs in through that very connection on the test step and activates it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.test_sso_wizard_browser import CASES
from tests.support import make_run
from tests.support.browser import chromium, click_and_wait
from tests.support.processes import free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ACME = "org_01HTDQ8A100000000000000001"
ADMIN = "admin@acme.test"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as instance:
        yield instance


def _sign_in(page: Any, app_url: str, emulator_url: str) -> None:
    """The sign-in page, as a new user uses it: the email, then the emulator's hosted login."""
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(f"{app_url}/")
    page.fill("#email", ADMIN)
    click_and_wait(page, "button[type=submit]")
    assert page.locator("#who-email").inner_text() == ADMIN, page.url
    assert any(url.startswith(f"{emulator_url}/") for url in requested), requested  # the hosted login


def _open_wizard(page: Any, app_url: str) -> None:
    page.goto(f"{app_url}/admin/sso/")
    page.check("#plugin-okta")
    click_and_wait(page, "text=Start or resume setup")


def _connection_ids(emulator_port: int) -> set[str]:
    listed = make_run.emulator_api(emulator_port, "GET", f"/connections?organization_id={ACME}&limit=100")
    data = listed["data"]
    assert isinstance(data, list)
    return {str(connection["id"]) for connection in data}


def _create_connection_in_the_wizard(page: Any) -> None:
    page.check("#protocol-saml")
    page.check("#confirm")
    click_and_wait(page, "button[value=next]")
    page.check("#confirm")
    click_and_wait(page, "button[value=next]")
    for box in page.locator("input[type=checkbox][name^=attr_]").all():
        box.check()
    click_and_wait(page, "button[value=next]")
    if page.locator("#source-url").count():
        page.check("#source-url")
    page.check("#connection_choice-new")  # beside the organization's seeded connection, offered for editing
    page.fill("#metadata_url", str(CASES["okta"]["url"]))
    click_and_wait(page, "button[value=next]")
    expect(page.locator("h2#step-title")).to_contain_text("Map groups to roles")


def _finish_the_wizard(page: Any, connection_id: str) -> None:
    click_and_wait(page, "button[value=preview]")
    expect(page.locator("#preview-h")).to_be_visible()
    click_and_wait(page, "button[value=next]")

    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.fill("#login_hint", ADMIN)
    page.click("#start-test-login")
    # A forgetful emulator answers the authorization with its JSON error instead of signing in.
    page.locator("#test-login-role").or_(page.get_by_text("Connection not found")).first.wait_for()
    assert "Connection not found" not in page.content()
    assert f"connection={connection_id}" in " ".join(requested), requested  # signed in through that connection
    assert f"Profile received for {ADMIN}" in page.inner_text("#result-h")
    assert page.inner_text("#test-login-role strong") == "admin"
    click_and_wait(page, "button[value=next]")

    directory = page.locator("h2#step-title", has_text="Directory sync")
    directory.or_(page.locator("#enforce_sso")).first.wait_for()  # the step after the test, once it has loaded
    if directory.count():
        click_and_wait(page, "button[value=next]")
    page.check("#enforce_sso")
    click_and_wait(page, "button[value=next]")
    expect(page.locator("main")).to_contain_text("Single sign-on is active and enforced")


def test_restart_of_make_run_keeps_the_wizard_created_connection(browser: Any, tmp_path: Path) -> None:
    app_port, emulator_port = free_port(), free_port()
    app_url, emulator_url = f"http://127.0.0.1:{app_port}", f"http://127.0.0.1:{emulator_port}"

    proc, _log = make_run.start(tmp_path, app_port, emulator_port)
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        seeded = _connection_ids(emulator_port)
        _sign_in(page, app_url, emulator_url)
        _open_wizard(page, app_url)
        _create_connection_in_the_wizard(page)
        created = _connection_ids(emulator_port) - seeded
        assert len(created) == 1, created
        connection_id = created.pop()
    except Exception:
        page.screenshot(path=str(tmp_path / "before-restart.png"))
        raise
    finally:
        context.close()
        code = make_run.stop(proc)
    assert code == 0, _log.read_text()[-3000:]

    proc, _log = make_run.start(tmp_path, app_port, emulator_port)
    context = browser.new_context()  # a new browser: the admin signs in again
    page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        _sign_in(page, app_url, emulator_url)
        _open_wizard(page, app_url)
        # The wizard resumes where it stopped.
        expect(page.locator("h2#step-title")).to_contain_text("Map groups to roles")
        kept = make_run.emulator_api(emulator_port, "GET", f"/connections/{connection_id}")
        assert kept["state"] == "active", kept
        _finish_the_wizard(page, connection_id)
    except Exception:
        page.screenshot(path=str(tmp_path / "after-restart.png"))
        raise
    finally:
        context.close()
        assert make_run.stop(proc) == 0
