"""Step-up re-authentication in headless Chromium: an admin whose sign-in is older than the step-up window opens
/admin/policy, is sent to AuthKit (``max_age=0``: the IdP's page again, not the ``login_hint`` shortcut), signs in
and lands back on /admin/policy; the page it comes back to is axe-clean."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from hatidata_auth.step_up import DEFAULT_STEP_UP_WINDOW
from tests.support.browser import assert_accessible, chromium, click_and_wait

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def clock(app: Flask) -> Iterator[list[float]]:
    """The step-up guard's clock (the introspector's), moved by the test."""
    rt = app.extensions["hatidata_auth"]
    now = [time.time()]
    saved = rt.introspector.clock
    rt.introspector.clock = lambda: now[0]
    yield now
    rt.introspector.clock = saved


def test_an_old_sign_in_re_authenticates_and_comes_back(server: str, clock: list[float], emulator: Any) -> None:
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 390, "height": 844})
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.goto(f"{server}/auth/login?email=admin@acme.test&return_to=/admin/policy")
        assert page.url.endswith("/admin/policy"), page.url
        clock[0] = time.time() + DEFAULT_STEP_UP_WINDOW + 5
        page.goto(f"{server}/admin/policy")
        assert page.url.startswith(emulator.url), page.url  # AuthKit asks again (max_age=0)
        assert "max_age=0" in page.url
        # (WorkOS's page, played by the emulator: axe checks only our own pages)
        clock[0] = time.time() + 5  # the sign-in that follows is the recent one
        click_and_wait(page, "button[value='admin@acme.test']")
        assert page.url == f"{server}/admin/policy", page.url
        assert page.locator("#idle_timeout").is_visible()
        assert_accessible(page)
        context.close()
