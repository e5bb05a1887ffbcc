"""The rotation's proof and its way back (issue #17 item 1, break-it fixes), against the emulator over real HTTP:
only a test sign-in the NEW certificate verified retires the old one; one that fails or is abandoned restores it
at WorkOS, so the certificate the IdP signs with is never left untrusted; a rotation that is not retired can be
cancelled, in every state, from the page and the API, and leaves WorkOS as it was before it started."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from hatidata_auth.causes import Cause
from hatidata_auth.extensions import db
from hatidata_auth.models import AuditEvent, utcnow
from hatidata_auth.services import cert_rotation, rotation_proof
from tests.auth_support import csrf_headers
from tests.rotation_support import (
    GLOBEX_CONN,
    metadata_with,
    open_test_window,
    pem_and_b64,
    signed_in_globex_admin,
    sso_code,
)
from tests.support.dsync import mirror_organizations
from tests.support.servers import EmulatorControl
from tests.test_cert_rotation import parsed
from tests.test_rotation_views import PAGE, follow_test, post, rotations, upload

CAUSE = Cause.system("test")
API = "/api/v1/organization/sso/certificate-rotation"


@pytest.fixture
def admin(app: Flask, client: FlaskClient, emulator: Any) -> FlaskClient:
    return signed_in_globex_admin(app, client)


@pytest.fixture
def globex(app: Flask, db_session: Any, workos_client: Any, emulator: Any) -> Any:
    """Globex mirrored, its connection trusting one old certificate (20 days left) that the IdP signs with."""
    org = mirror_organizations(db_session, workos_client)["globex.test"]
    workos_client.sso.create_connection_saml_idp_signing_cert(GLOBEX_CONN, value=pem_and_b64(20, "old.globex.test")[0])
    db_session.commit()
    return org


def fingerprints(app: Flask) -> set[str]:
    held = cert_rotation.held_certificates(app.extensions["hatidata_workos"].client, GLOBEX_CONN)
    return {h.fingerprint for h in held}


def actions(app: Flask) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(select(AuditEvent.action).where(
            AuditEvent.action.like("sso.certificate_rotation.%")).order_by(AuditEvent.seq)))


def test_an_early_switch_click_restores_the_old_certificate_at_once(app: Flask, admin: FlaskClient,
                                                                   emulator: Any) -> None:
    before = fingerprints(app)  # the old certificate, which the IdP keeps signing with
    _, new_b64 = pem_and_b64(400, "new.globex.test")
    assert upload(admin, metadata_with(new_b64)).status_code == 303
    assert post(admin, "switched").status_code == 303  # too early: the IdP did not switch
    failed = follow_test(admin, emulator, "dev@globex.test")
    body = failed.get_data(as_text=True)
    assert failed.status_code == 400
    assert "still signs with the old certificate" in body
    assert rotations(app) == [(GLOBEX_CONN, "both_trusted")]
    assert before < fingerprints(app)  # the old one trusted again beside the new one
    assert "code" in sso_code(emulator.url, "dev@globex.test")  # users sign in again
    assert actions(app)[-2:] == ["sso.certificate_rotation.test_started", "sso.certificate_rotation.test_failed"]
    signing = EmulatorControl(emulator.url).ctl("GET", f"/connections/{GLOBEX_CONN}/idp_signing")
    assert signing["signing_fingerprint"] in fingerprints(app)


def test_a_callback_that_does_not_match_the_test_restores_the_old_certificate_at_once(
        app: Flask, admin: FlaskClient, emulator: Any) -> None:
    before = fingerprints(app)
    _, new_b64 = pem_and_b64(400, "new.globex.test")
    assert upload(admin, metadata_with(new_b64)).status_code == 303
    assert post(admin, "switched").status_code == 303
    started = post(admin, "test", {"login_hint": "dev@globex.test"})
    assert started.status_code == 302
    assert not before < fingerprints(app)  # the old certificate is set aside for the test
    stray = admin.get("/admin/sso/rotation/callback?state=not-the-one&code=x", headers={"Accept": "text/html"})
    assert stray.status_code == 400
    assert "state mismatch" in stray.get_data(as_text=True)
    assert rotations(app) == [(GLOBEX_CONN, "both_trusted")]
    assert before < fingerprints(app)  # trusted again at once, not after the window
    assert "code" in sso_code(emulator.url, "dev@globex.test")


def under_test(app: Flask, db_session: Any, workos_client: Any, org: Any) -> set[str]:
    """Rotate *org* to a new certificate, say it switched and start the test sign-in; the old fingerprints."""
    old = fingerprints(app)
    _, new_b64 = pem_and_b64(400, "new.globex.test")
    cert_rotation.start(db_session, workos_client, org, parsed(app, new_b64), "xml", CAUSE)
    cert_rotation.mark_switched(db_session, org, CAUSE)
    db_session.commit()
    open_test_window(db_session, workos_client, org, CAUSE)
    return old


def test_an_abandoned_test_sign_in_restores_the_old_certificate_after_the_window(
        app: Flask, db_session: Any, workos_client: Any, emulator: Any, globex: Any) -> None:
    old = under_test(app, db_session, workos_client, globex)
    assert not old & fingerprints(app)  # only the new certificate is trusted while the test runs
    inside = utcnow() + cert_rotation.TEST_WINDOW - timedelta(seconds=5)
    assert cert_rotation.restore_abandoned(db_session, workos_client, globex, CAUSE, now=inside) is None
    after = utcnow() + cert_rotation.TEST_WINDOW + timedelta(seconds=5)
    restored = cert_rotation.restore_abandoned(db_session, workos_client, globex, CAUSE, now=after)
    db_session.commit()
    assert restored is not None
    assert (restored.state, restored.test_started_at) == ("both_trusted", None)
    assert restored.notice
    assert old < fingerprints(app)
    assert len(restored.old_certificate_ids) == 1
    # A late callback of the abandoned test cannot retire anything: the rotation is no longer switched.
    code = sso_code(emulator.url, "dev@globex.test")["code"][0]
    with pytest.raises(cert_rotation.RotationError) as late:
        rotation_proof.finish_test_sign_in(db_session, workos_client, globex, code, CAUSE)
    assert late.value.code == "rotation_not_switched"


def test_a_repeated_test_start_keeps_the_old_certificate_it_set_aside(
        app: Flask, db_session: Any, workos_client: Any, emulator: Any, globex: Any) -> None:
    old = under_test(app, db_session, workos_client, globex)
    open_test_window(db_session, workos_client, globex, CAUSE)  # a double submit: WorkOS holds only the new one
    view = rotation_proof.fail_test_sign_in(db_session, workos_client, globex, CAUSE, "access_denied")
    db_session.commit()
    assert view.state == "both_trusted"
    assert old < fingerprints(app)


STATES = ["both_trusted", "switched", "test_under_way"]


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("route", ["api", "page"])
def test_a_rotation_is_cancelled_in_every_state_before_retired(app: Flask, admin: FlaskClient, emulator: Any,
                                                               state: str, route: str) -> None:
    before = fingerprints(app)
    _, new_b64 = pem_and_b64(400, "another-app.globex.test")
    assert upload(admin, metadata_with(new_b64)).status_code == 303
    if state != "both_trusted":
        assert post(admin, "switched").status_code == 303
    if state == "test_under_way":  # the admin left for the IdP's sign-in page and never came back
        assert post(admin, "test", {"login_hint": "dev@globex.test"}).status_code == 302
        assert not before & fingerprints(app)
    if route == "api":
        assert admin.delete(API, headers=csrf_headers(admin)).status_code == 204
        assert admin.get(API).status_code == 404
    else:
        assert post(admin, "cancel").status_code == 303
        assert 'data-state="none"' in admin.get(PAGE).get_data(as_text=True)
    assert fingerprints(app) == before  # WorkOS trusts what it trusted before the rotation
    assert rotations(app) == []
    assert actions(app)[-1] == "sso.certificate_rotation.cancelled"
    assert "code" in sso_code(emulator.url, "dev@globex.test")


def test_cancel_is_refused_once_retired_and_without_a_rotation(app: Flask, admin: FlaskClient,
                                                               emulator: Any) -> None:
    assert admin.delete(API, headers=csrf_headers(admin)).status_code == 404
    assert admin.delete(API).status_code in (400, 403)  # no CSRF token
    new_pem, new_b64 = pem_and_b64(400, "new.globex.test")
    assert upload(admin, metadata_with(new_b64)).status_code == 303
    EmulatorControl(emulator.url).ctl("PUT", f"/connections/{GLOBEX_CONN}/idp_signing", {"pem": new_pem})
    assert post(admin, "switched").status_code == 303
    assert follow_test(admin, emulator, "dev@globex.test").status_code == 303
    refused = admin.delete(API, headers=csrf_headers(admin))
    assert (refused.status_code, refused.get_json()["error"]["code"]) == (409, "rotation_finished")
    assert rotations(app) == [(GLOBEX_CONN, "retired")]


def test_cancel_leaves_a_new_certificate_workos_trusted_before_the_rotation(app: Flask, admin: FlaskClient,
                                                                           emulator: Any) -> None:
    new_pem, new_b64 = pem_and_b64(400, "new.globex.test")
    app.extensions["hatidata_workos"].client.sso.create_connection_saml_idp_signing_cert(GLOBEX_CONN, value=new_pem)
    before = fingerprints(app)
    started = admin.post(API, json={"metadata_xml": metadata_with(new_b64).decode()}, headers=csrf_headers(admin))
    assert started.status_code == 201, started.get_json()
    assert admin.delete(API, headers=csrf_headers(admin)).status_code == 204
    assert fingerprints(app) == before
