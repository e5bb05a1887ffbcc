"""Done-when of issue #17 item 1, in headless Chromium against the emulator through a real server: Globex's
admin follows WorkOS's renewal alert to "Rotate certificate", uploads the IdP's new metadata, and while the IdP
switches to the new certificate users keep signing in (a thread signs in over and over: no sign-in fails); the
test sign-in after the switch retires the old certificate at WorkOS and resolves the alert. Every page of the
flow passes axe-core at 1280 and 390 px without scrolling sideways."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from hatidata_auth.extensions import db
from hatidata_auth.models import OrganizationAlert
from tests.rotation_support import GLOBEX_CONN, metadata_with, pem_and_b64, sso_code
from tests.support.browser import assert_accessible, chromium, click_and_wait
from tests.support.dsync import deliver
from tests.support.servers import EmulatorControl

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as instance:
        yield instance


class SignIns:
    """Users of Globex signing in through the emulator's IdP, over and over, in a thread."""

    def __init__(self, emulator_url: str) -> None:
        self.url = emulator_url
        self.ok = 0
        self.failures: list[dict[str, list[str]]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            query = sso_code(self.url, "dev@globex.test")
            if "code" in query:
                self.ok += 1
            else:
                self.failures.append(query)

    def wait_for(self, count: int) -> None:
        target = self.ok + count
        while self.ok < target and not self.failures:
            self.stop.wait(0.01)


def check(page: Any) -> None:
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 900})
        assert_accessible(page)
        assert page.evaluate("document.documentElement.scrollWidth") <= width


def test_rotate_globex_certificate_with_no_failed_sign_in(browser: Any, server: str, app: Flask,
                                                          emulator: Any) -> None:
    control = EmulatorControl(emulator.url)
    client = app.extensions["hatidata_workos"].client
    old_pem, _ = pem_and_b64(25, "old.globex.test")
    old = client.sso.create_connection_saml_idp_signing_cert(GLOBEX_CONN, value=old_pem)
    control.ctl("POST", f"/connections/{GLOBEX_CONN}/certificate", {"kind": "renewal_required"})
    warning = control.events()[-1]
    assert warning["event"] == "connection.saml_certificate_renewal_required"
    assert deliver(app.test_client(), app, warning) == "applied"
    new_pem, new_b64 = pem_and_b64(400, "new.globex.test")

    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    users = SignIns(emulator.url)
    try:
        page.goto(f"{server}/auth/login?email=admin@globex.test&return_to=/admin/sso/")
        assert page.url.endswith("/admin/sso/"), page.url
        click_and_wait(page, "#alerts .rotate-link")  # from the alert
        assert page.inner_text("#rotation-state") == "not started"
        assert page.is_visible("#rotation-alert")
        assert "Make certificate active" in page.inner_text("main")  # Entra's own steps
        check(page)
        page.set_input_files("#metadata_file", files=[{"name": "globex.xml", "mimeType": "application/xml",
                                                       "buffer": metadata_with(new_b64)}])
        click_and_wait(page, "#rotation-start")
        assert page.get_attribute("#rotation-state", "data-state") == "both_trusted"
        check(page)

        users.thread.start()
        users.wait_for(5)
        control.ctl("PUT", f"/connections/{GLOBEX_CONN}/idp_signing", {"pem": new_pem})  # the IdP switches
        users.wait_for(5)
        click_and_wait(page, "#rotation-switched")
        assert page.get_attribute("#rotation-state", "data-state") == "switched"
        check(page)
        page.fill("#login_hint", "dev@globex.test")
        page.click("#rotation-test")
        page.wait_for_selector("#rotation-state[data-state=retired]")
        users.wait_for(5)
        users.stop.set()
        users.thread.join(timeout=10)
        assert users.failures == []
        assert users.ok >= 15
        assert "dev@globex.test" in page.inner_text("main")
        check(page)
    finally:
        users.stop.set()
        context.close()

    held = client.sso.list_connection_saml_idp_signing_certs(GLOBEX_CONN).data
    assert [c.id for c in held] != [old.id]
    assert len(held) == 1
    counts = {c["id"]: c["verified_sign_ins"] for c in control.ctl(
        "GET", f"/connections/{GLOBEX_CONN}/idp_signing")["certificates"]}
    assert counts[held[0].id] >= 6  # sign-ins after the switch and the test sign-in, verified by the new one
    with app.app_context():
        alert = db.session.scalar(select(OrganizationAlert).where(OrganizationAlert.kind == "saml_certificate_renewal",
                                                                  OrganizationAlert.target_id == GLOBEX_CONN))
        assert alert is not None
        assert (alert.resolved_at is not None, alert.resolution) == (True, "certificate_rotated")
    # Once the old certificate is gone, a response signed with it fails: the retirement is real.
    control.ctl("PUT", f"/connections/{GLOBEX_CONN}/idp_signing", {"pem": old_pem})
    assert "code" not in sso_code(emulator.url, "dev@globex.test")
