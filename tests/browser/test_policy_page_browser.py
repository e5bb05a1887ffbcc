"""The access-policy admin page in headless Chromium: axe-clean, usable at 390 px, saves and explains a lock-out."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.browser import assert_accessible, chromium, click_and_wait

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _no_horizontal_scroll(page: Any) -> None:
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), "the page scrolls sideways"


def test_policy_page_in_the_browser(server: str) -> None:
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 390, "height": 844})
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.goto(f"{server}/auth/login?email=admin@acme.test&return_to=/admin/policy")
        assert page.url.endswith("/admin/policy"), page.url
        assert_accessible(page)
        _no_horizontal_scroll(page)
        page.fill("#idle_timeout", "1800")
        page.fill("#ip_allowlist", "127.0.0.0/8\n::1/128")
        click_and_wait(page, "text=Save policy")
        assert page.url.endswith("/admin/policy?saved=1"), page.url
        assert page.locator("[role=status]").inner_text().startswith("Saved")
        assert page.input_value("#idle_timeout") == "1800"
        assert_accessible(page)
        page.fill("#ip_allowlist", "10.0.0.0/8")
        click_and_wait(page, "text=Save policy")
        assert "your own address" in page.locator("[role=alert]").inner_text()
        assert_accessible(page)  # the error state too
        _no_horizontal_scroll(page)
        page.fill("#ip_allowlist", "not a network")
        click_and_wait(page, "text=Save policy")
        assert page.locator("#ip_allowlist").get_attribute("aria-invalid") == "true"
        assert_accessible(page)
        context.close()
