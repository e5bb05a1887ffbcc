"""The "Rotate certificate" pages (test client, real emulator): the flow end to end, and every refusal answers a
page naming the problem with the right status and changes nothing: bad or old metadata, steps out of order, a
missing CSRF token, a non-admin, a forged callback state, a test sign-in the IdP refuses (recorded)."""

from __future__ import annotations

import io
from typing import Any
from urllib.parse import urlsplit

import httpx2
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from hatidata_auth.extensions import db
from hatidata_auth.models import CertificateRotation, Organization, SignInAttempt
from tests.auth_support import GLOBEX, csrf_headers, login, sync_organizations
from tests.rotation_support import GLOBEX_CONN, metadata_with, pem_and_b64, signed_in_globex_admin
from tests.support.servers import EmulatorControl

PAGE = "/admin/sso/rotation/"


@pytest.fixture
def admin(app: Flask, client: FlaskClient, emulator: Any) -> FlaskClient:
    return signed_in_globex_admin(app, client)


def post(client: FlaskClient, path: str, data: dict[str, Any] | None = None) -> Any:
    token = csrf_headers(client)["X-CSRFToken"]
    return client.post(PAGE + path, data={"csrf_token": token, **(data or {})},
                       content_type="multipart/form-data", headers={"Accept": "text/html"})


def upload(client: FlaskClient, document: bytes) -> Any:
    return post(client, "start", {"metadata_file": (io.BytesIO(document), "metadata.xml")})


def rotations(app: Flask) -> list[tuple[str, str]]:
    with app.app_context():
        return [(r.connection_id, r.state) for r in db.session.scalars(select(CertificateRotation))]


def follow_test(client: FlaskClient, emulator: Any, email: str) -> Any:
    started = post(client, "test", {"login_hint": email})
    assert started.status_code == 302, started.get_data(as_text=True)[:400]
    at_idp = httpx2.get(started.headers["Location"], follow_redirects=False)
    assert at_idp.status_code == 302
    target = urlsplit(at_idp.headers["location"])
    return client.get(f"{target.path}?{target.query}", headers={"Accept": "text/html"})


def test_the_flow_end_to_end(app: Flask, admin: FlaskClient, emulator: Any) -> None:
    page = admin.get(PAGE).get_data(as_text=True)
    assert "Make certificate active" in page  # Globex's connection is Entra's: its steps
    new_pem, new_b64 = pem_and_b64(400, "new.globex.test")
    assert upload(admin, metadata_with(new_b64)).status_code == 303
    assert rotations(app) == [(GLOBEX_CONN, "both_trusted")]
    EmulatorControl(emulator.url).ctl("PUT", f"/connections/{GLOBEX_CONN}/idp_signing", {"pem": new_pem})
    assert post(admin, "switched").status_code == 303
    done = follow_test(admin, emulator, "dev@globex.test")
    assert done.status_code == 303, done.get_data(as_text=True)[:400]
    assert rotations(app) == [(GLOBEX_CONN, "retired")]
    assert 'data-state="retired"' in admin.get(PAGE).get_data(as_text=True)


@pytest.mark.parametrize(("document", "status", "words"), [
    (None, 422, "Upload the new metadata"),
    (b"<not xml", 422, ""),
    (b"<!DOCTYPE x [<!ENTITY e SYSTEM 'file:///etc/passwd'>]><x>&e;</x>", 422, ""),
])
def test_bad_metadata_is_refused_with_a_page(app: Flask, admin: FlaskClient, document: bytes | None, status: int,
                                             words: str) -> None:
    answer = post(admin, "start") if document is None else upload(admin, document)
    assert answer.status_code == status
    body = answer.get_data(as_text=True)
    assert 'role="alert"' in body
    assert words in body
    assert rotations(app) == []


def test_the_old_certificate_again_and_a_private_url_are_refused(app: Flask, admin: FlaskClient) -> None:
    held = app.extensions["hatidata_workos"].client.sso.list_connection_saml_idp_signing_certs(GLOBEX_CONN).data
    old_b64 = "".join(held[0].value.strip().splitlines()[1:-1])
    stale = upload(admin, metadata_with(old_b64))
    assert stale.status_code == 422
    assert "no certificate newer than the ones the connection trusts" in stale.get_data(as_text=True)
    private = post(admin, "start", {"metadata_url": "https://127.0.0.1/metadata.xml"})
    assert private.status_code == 422
    assert rotations(app) == []


def test_steps_out_of_order_are_refused(app: Flask, admin: FlaskClient) -> None:
    assert post(admin, "switched").status_code == 404
    assert post(admin, "test").status_code == 404
    _, new_b64 = pem_and_b64(400, "new.globex.test")
    assert upload(admin, metadata_with(new_b64)).status_code == 303
    assert post(admin, "test").status_code == 409
    _, other_b64 = pem_and_b64(300, "other.globex.test")
    assert upload(admin, metadata_with(other_b64)).status_code == 409
    assert rotations(app) == [(GLOBEX_CONN, "both_trusted")]


def test_csrf_non_admin_and_forged_state_are_refused(app: Flask, client: FlaskClient, emulator: Any) -> None:
    sync_organizations(app)
    assert login(client, "dev@globex.test").status_code == 302
    assert client.get(PAGE, headers={"Accept": "text/html"}).status_code == 403
    assert login(client, "admin@globex.test").status_code == 302
    _, new_b64 = pem_and_b64(400, "new.globex.test")
    no_token = client.post(PAGE + "start", data={"metadata_file": (io.BytesIO(metadata_with(new_b64)), "m.xml")},
                           content_type="multipart/form-data")
    assert no_token.status_code == 400
    forged = client.get(PAGE + "callback?code=x&state=forged", headers={"Accept": "text/html"})
    assert forged.status_code == 400
    assert "state mismatch" in forged.get_data(as_text=True)
    assert rotations(app) == []


def test_a_refused_test_sign_in_is_recorded_and_retires_nothing(app: Flask, admin: FlaskClient,
                                                                emulator: Any) -> None:
    _, new_b64 = pem_and_b64(400, "new.globex.test")
    assert upload(admin, metadata_with(new_b64)).status_code == 303
    assert post(admin, "switched").status_code == 303
    # The IdP still signs with a certificate the connection does not trust (say, a third one): the test fails.
    rogue_pem, _ = pem_and_b64(400, "rogue.globex.test")
    EmulatorControl(emulator.url).ctl("PUT", f"/connections/{GLOBEX_CONN}/idp_signing", {"pem": rogue_pem})
    failed = follow_test(admin, emulator, "dev@globex.test")
    assert failed.status_code == 400
    assert "expired or not trusted" in failed.get_data(as_text=True)
    assert "still signs with the old certificate" in failed.get_data(as_text=True)
    assert rotations(app) == [(GLOBEX_CONN, "both_trusted")]  # the old certificate was restored at once
    with app.app_context():
        org_id = db.session.scalar(select(Organization.id).where(Organization.workos_organization_id == GLOBEX))
        reasons = [a.reason for a in db.session.scalars(select(SignInAttempt).where(
            SignInAttempt.organization_id == org_id, SignInAttempt.outcome == "failure"))]
    assert reasons == ["certificate_expired"]
    held = app.extensions["hatidata_workos"].client.sso.list_connection_saml_idp_signing_certs(GLOBEX_CONN).data
    assert len(held) == 2
