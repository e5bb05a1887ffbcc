"""The emulator's SAML IdP signing certificates: WorkOS's list/create/delete endpoints through the SDK, the IdP's
signing certificate set by the control API, a sign-in refused (with a spec-valid ``authentication.sso_failed``)
when that certificate is not trusted or expired, and counted on the certificate that verified it."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from workos import WorkOSClient

from hatidata_auth.idp.testing import certificate_b64
from hatidata_auth.workos import WorkOSRejected, translate_errors
from tests.support.openapi import OpenAPIContract, RecordingHTTPClient

from .conftest import CLIENT_ID, GLOBEX_CONN, REDIRECT_URI

AUTHORIZE = {"client_id": CLIENT_ID, "redirect_uri": REDIRECT_URI, "response_type": "code", "state": "s1",
             "connection": GLOBEX_CONN, "login_hint": "dev@globex.test"}


def pem(days: int = 365, name: str = "idp.globex.test") -> str:
    """A self-signed PEM certificate valid for *days* more days."""
    body = "\n".join(textwrap.wrap(certificate_b64(datetime.now(UTC) + timedelta(days=days), common_name=name), 64))
    return f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n"


def sign_in(http: httpx2.Client) -> dict[str, list[str]]:
    answer = http.get("/sso/authorize", params=AUTHORIZE)
    assert answer.status_code == 302
    return parse_qs(urlsplit(answer.headers["location"]).query)


def test_both_certificates_are_trusted_until_the_old_one_is_deleted(workos: WorkOSClient,
                                                                    http: httpx2.Client) -> None:
    old_pem, new_pem = pem(20, "old.globex.test"), pem(400, "new.globex.test")
    old = workos.sso.create_connection_saml_idp_signing_cert(GLOBEX_CONN, value=old_pem)
    assert "code" in sign_in(http)  # the IdP signs with the first certificate
    new = workos.sso.create_connection_saml_idp_signing_cert(GLOBEX_CONN, value=new_pem)
    assert workos.sso.create_connection_saml_idp_signing_cert(GLOBEX_CONN, value=new_pem).id == new.id
    assert [c.id for c in workos.sso.list_connection_saml_idp_signing_certs(GLOBEX_CONN).data] == [old.id, new.id]
    assert new.not_after is not None
    assert new.not_after > datetime.now(UTC) + timedelta(days=390)
    switched = http.put(f"/_emulator/connections/{GLOBEX_CONN}/idp_signing", json={"certificate_id": new.id})
    assert switched.status_code == 200
    assert "code" in sign_in(http)
    seen = {c["id"]: c["verified_sign_ins"] for c in http.get(
        f"/_emulator/connections/{GLOBEX_CONN}/idp_signing").json()["certificates"]}
    assert seen == {old.id: 1, new.id: 1}
    workos.sso.delete_connection_saml_idp_signing_cert(GLOBEX_CONN, old.id)
    assert "code" in sign_in(http)
    with pytest.raises(WorkOSRejected), translate_errors():  # a connection keeps one certificate
        workos.sso.delete_connection_saml_idp_signing_cert(GLOBEX_CONN, new.id)


@pytest.mark.parametrize("case", ["untrusted", "expired"])
def test_a_response_signed_with_an_untrusted_or_expired_certificate_fails(
        workos: WorkOSClient, http: httpx2.Client, recorder: RecordingHTTPClient,
        openapi_contract: OpenAPIContract, case: str) -> None:
    trusted = pem(-1 if case == "expired" else 365)
    cert = workos.sso.create_connection_saml_idp_signing_cert(GLOBEX_CONN, value=trusted)
    body = {"certificate_id": cert.id} if case == "expired" else {"pem": pem(365, "rogue.test")}
    assert http.put(f"/_emulator/connections/{GLOBEX_CONN}/idp_signing", json=body).status_code == 200
    query = sign_in(http)
    assert "code" not in query
    assert query["error"] == ["server_error"]
    assert "expired or not trusted" in query["error_description"][0]
    events = workos.events.list_events(events=["authentication.sso_failed"]).data
    assert [e.data.error.code for e in events] == ["invalid_saml_response"]
    for ex in recorder.exchanges:
        if ex.path.startswith("/events"):
            openapi_contract.validate(ex.method, ex.path, ex.status, ex.body)


def test_bad_input_is_refused(workos: WorkOSClient, http: httpx2.Client) -> None:
    with pytest.raises(WorkOSRejected), translate_errors():
        workos.sso.create_connection_saml_idp_signing_cert(GLOBEX_CONN, value="not a certificate")
    assert http.put(f"/_emulator/connections/{GLOBEX_CONN}/idp_signing",
                    json={"certificate_id": "cert_nope"}).status_code == 422
    assert http.get("/_emulator/connections/conn_nope/idp_signing").status_code == 404


def test_renewal_required_warns_of_the_signing_certificate(workos: WorkOSClient, http: httpx2.Client,
                                                           recorder: RecordingHTTPClient,
                                                           openapi_contract: OpenAPIContract) -> None:
    workos.sso.create_connection_saml_idp_signing_cert(GLOBEX_CONN, value=pem(29))
    assert http.post(f"/_emulator/connections/{GLOBEX_CONN}/certificate", json={}).status_code == 201
    event = workos.events.list_events(events=["connection.saml_certificate_renewal_required"]).data[0]
    assert event.data.days_until_expiry in (28, 29)
    for ex in recorder.exchanges:
        if ex.path.startswith("/events"):
            openapi_contract.validate(ex.method, ex.path, ex.status, ex.body)
