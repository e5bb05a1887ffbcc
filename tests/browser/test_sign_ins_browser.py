"""The sign-in diagnostics in headless Chromium (issue #15, items 4 and 5): an admin runs failed test sign-ins in
the Okta wizard (a user the IdP has not assigned to the app, a user whose assertion lacks an attribute), then reads
why each failed and the fix on ``/admin/sso/sign-ins``, reveals one attempt's attributes and checks the SSO index's
connection health; axe-core reports no violation on either page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from tests.support.browser import assert_accessible, chromium, click_and_wait
from tests.test_sign_ins_api import _control, _deliver_events
from tests.test_sso_wizard import OKTA_URL

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _to_the_test_step(page: Any, server: str) -> None:
    page.goto(f"{server}/auth/login?email=admin@acme.test&return_to=/admin/sso/")
    assert page.url.endswith("/admin/sso/"), page.url
    page.check("#plugin-okta")
    click_and_wait(page, "text=Start or resume setup")
    if page.locator("#protocol-saml").count():
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
    page.fill("#metadata_url", OKTA_URL)
    click_and_wait(page, "button[value=next]")
    click_and_wait(page, "button[value=preview]")
    click_and_wait(page, "button[value=next]")


def _test_sign_in(page: Any, email: str) -> None:
    page.fill("#login_hint", email)
    click_and_wait(page, "#start-test-login")


def test_failed_test_sign_ins_are_explained(app: Flask, client: Any, emulator: Any, server: str,
                                            tmp_path: Path) -> None:
    _control(emulator, "POST", "/sign_in_failures", {"email": "viewer@acme.test", "kind": "not_assigned"})
    _control(emulator, "POST", "/sign_in_failures", {"email": "dev@acme.test", "kind": "missing_attribute",
                                                     "attribute": "first_name"})
    with chromium() as browser:
        context = browser.new_context()
        page = context.new_page()
        page.set_default_timeout(15_000)
        try:
            _to_the_test_step(page, server)
            _test_sign_in(page, "viewer@acme.test")
            assert "User is not assigned to the client application." in page.inner_text("main")
            page.goto(f"{server}/admin/sso/okta/wizard/test-login")
            _test_sign_in(page, "dev@acme.test")
            _deliver_events(emulator, client, app, "authentication.sso_failed")

            page.goto(f"{server}/admin/sso/sign-ins/")
            unassigned = page.locator("li.attempt[data-reason=not_assigned_to_app]")
            assert unassigned.count() == 1
            assert "viewer@acme.test" in unassigned.inner_text()
            assert "Applications → Applications → HatiData → Assignments" in unassigned.locator(".fix").inner_text()
            assert "HatiData and WorkOS" in unassigned.inner_text()
            missing = page.locator("li.attempt[data-reason=missing_attribute]")
            assert "firstName" in missing.locator(".fix").inner_text()
            assert "[redacted]" in missing.inner_text()
            assert_accessible(page)

            click_and_wait(page, missing.get_by_role("button", name="Reveal"))
            missing = page.locator("li.attempt[data-reason=missing_attribute]")
            assert "dev@acme.test" in missing.locator(".attributes").inner_text()
            assert missing.get_by_role("button", name="Reveal").count() == 0
            assert_accessible(page)

            page.select_option("#filter-reason", "not_assigned_to_app")
            click_and_wait(page, page.get_by_role("button", name="Filter"))
            assert page.locator("li.attempt").count() == 1

            page.goto(f"{server}/admin/sso/")
            assert page.locator("#health-connection code").count() == 1
            assert page.locator("#health-last-sign-in time").count() == 1  # the admin's own sign-in
            assert page.locator("#health-directory code").count() == 1
            assert page.inner_text("#health-alerts").startswith("none")
            assert_accessible(page)
            click_and_wait(page, "#sign-ins-link")
            assert page.url.endswith("/admin/sso/sign-ins/")
        except Exception:
            page.screenshot(path=str(tmp_path / "sign-ins.png"))
            raise
        finally:
            context.close()
