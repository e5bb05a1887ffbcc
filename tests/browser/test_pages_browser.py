"""Every HTML page the app serves outside the SSO wizard, in headless Chromium (issue #15 item 8): axe-core reports
0 violations and nothing scrolls sideways at 390 px, signed out, as an admin and as a viewer, error pages included;
after a failed submit focus is on the error summary.

The pages come from ``app.url_map``: every GET route is either a page checked here (:data:`PAGES`), outside
the scope (:data:`NOT_PAGES`: JSON, assets and redirects, each checked not to answer a browser with HTML), or
the wizard's (``/admin/sso/``, walked by its own browser tests). A new route that is none of these fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from werkzeug.exceptions import default_exceptions

from tests.auth_support import sync_organizations
from tests.support.browser import assert_accessible, chromium
from tests.support.error_routes import add_error_routes
from tests.support.servers import LiveServer

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PAGES = {"/", "/api/docs", "/admin/policy"}
NOT_PAGES = {
    "/static/<path:filename>", "/healthz", "/readyz", "/metrics", "/auth/login", "/auth/callback", "/auth/csrf",
    "/auth/organizations", "/api/openapi.json", "/api/docs/init.js", "/api/docs/page.css", "/api/docs/assets/<name>",
}
WIZARD_PREFIX = "/admin/sso/"
ROLES = {"signed-out": None, "admin": "admin@acme.test", "viewer": "viewer@acme.test"}
WIDTHS = (1280, 390)
ERROR_STATUSES = sorted(code for code in default_exceptions if code >= 400)


def _get_rules(app: Flask) -> set[str]:
    return {rule.rule for rule in app.url_map.iter_rules()
            if "GET" in (rule.methods or ()) and not rule.rule.startswith("/_test/")}


@pytest.fixture
def served(app: Flask) -> Iterator[str]:
    """The app over HTTP, with two routes raising every error status (the error pages, as a browser meets them)."""
    sync_organizations(app)
    add_error_routes(app)
    with LiveServer(app) as server:
        app.config["HATIDATA_PUBLIC_URL"] = server.url
        yield server.url


def test_every_get_route_is_classified(app: Flask) -> None:
    for rule in _get_rules(app):
        assert rule in PAGES or rule in NOT_PAGES or rule.startswith(WIZARD_PREFIX) or rule.startswith("/api/v1/"), \
            f"{rule} is a new GET route: add it to PAGES (checked here) or NOT_PAGES"


def _context(browser: Any, url: str, email: str | None, width: int) -> Any:
    context = browser.new_context(viewport={"width": width, "height": 900})
    if email:
        page = context.new_page()
        page.goto(f"{url}/auth/login?email={email}")
        assert page.url == f"{url}/", page.url
        page.close()
    return context


def _check(page: Any, what: str, width: int) -> None:
    assert_accessible(page)
    scroll = page.evaluate("document.documentElement.scrollWidth")
    assert scroll <= width, f"{what} at {width}px scrolls sideways ({scroll}px wide)"


def _error_paths() -> list[str]:
    return [f"/_test/http/{s}" for s in ERROR_STATUSES] + [f"/_test/app/{s}" for s in (403, 409, 422, 429, 503)] \
        + ["/no/such/page", "/auth/logout", "/admin/sso/"]


@pytest.mark.parametrize("role", list(ROLES))
def test_every_page_is_accessible_and_fits_390px(served: str, role: str) -> None:
    with chromium() as browser:
        for width in WIDTHS:
            context = _context(browser, served, ROLES[role], width)
            page = context.new_page()
            page.set_default_timeout(20_000)
            for path in sorted(PAGES):
                page.goto(served + path)
                if path == "/api/docs":
                    page.wait_for_selector(".opblock")  # Swagger UI has rendered the operations
                _check(page, f"{path} as {role}", width)
            for path in _error_paths():
                response = page.goto(served + path)
                assert response is not None
                if path == "/admin/sso/" and role != "viewer":
                    continue  # the wizard's index itself (admin) or a sign-in redirect: not an error page here
                assert response.status >= 400, (path, response.status)
                assert page.locator("#error-summary").count() == 1, path
                _check(page, f"the error page of {path} as {role}", width)
            context.close()


def test_classified_routes_answer_a_browser_with_no_page(served: str) -> None:
    with chromium() as browser:
        context = _context(browser, served, ROLES["admin"], 1280)
        for rule in sorted(NOT_PAGES):
            if "<" in rule:
                continue
            response = context.request.get(served + rule, max_redirects=0,
                                            headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
            assert not (response.status == 200 and "text/html" in response.headers.get("content-type", "")), rule
        context.close()


def test_after_a_failed_submit_focus_is_on_the_error_summary(served: str) -> None:
    with chromium() as browser:
        context = _context(browser, served, ROLES["admin"], 390)
        page = context.new_page()
        page.goto(served + "/")
        # A form whose token has gone stale (e.g. the page was left open past its lifetime).
        page.evaluate("document.querySelectorAll('input[name=csrf_token]').forEach(i => i.value = 'stale')")
        page.click("button:has-text('Sign out')")
        page.wait_for_selector("#error-summary")
        assert page.evaluate("document.activeElement && document.activeElement.id") == "error-summary"
        _check(page, "the failed sign-out", 390)
        context.close()

        signed_out = browser.new_context(viewport={"width": 390, "height": 900})
        page = signed_out.new_page()
        page.goto(served + "/")
        page.click("button[type=submit]")  # stays on the page: no email, the browser points at the field
        assert page.evaluate("document.activeElement.id") == "email"
        signed_out.close()
