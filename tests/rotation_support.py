"""Shared pieces of the certificate-rotation tests: PEM certificates, metadata documents, a test sign-in code."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2

from hatidata_auth.idp.testing import certificate_b64, saml_metadata

GLOBEX_CONN = "conn_01HTDQ8C200000000000000001"
REDIRECT_URI = "http://localhost:5000/auth/callback"


def pem_and_b64(days: int, name: str) -> tuple[str, str]:
    """A self-signed certificate valid *days* more days: (PEM, base64 DER)."""
    b64 = certificate_b64(datetime.now(UTC) + timedelta(days=days), common_name=name)
    return f"-----BEGIN CERTIFICATE-----\n{chr(10).join(textwrap.wrap(b64, 64))}\n-----END CERTIFICATE-----\n", b64


def metadata_with(b64: str, entity_id: str = "https://sts.windows.net/globex/",
                  sso_url: str = "https://login.microsoftonline.com/globex/saml2") -> bytes:
    """SAML metadata whose signing certificate is *b64*."""
    return saml_metadata(entity_id, sso_url, certificate=b64)


def sso_code(emulator_url: str, email: str, connection_id: str = GLOBEX_CONN) -> dict[str, list[str]]:
    """Sign *email* in through the emulator's IdP for *connection_id*; the redirect's query."""
    answer = httpx2.get(f"{emulator_url}/sso/authorize", params={
        "client_id": "client_emulator", "redirect_uri": REDIRECT_URI, "response_type": "code", "state": "s",
        "connection": connection_id, "login_hint": email}, follow_redirects=False)
    assert answer.status_code == 302, answer.text
    return parse_qs(urlsplit(answer.headers["location"]).query)


def signed_in_globex_admin(app: Any, client: Any) -> Any:
    """Globex mirrored, its connection trusting one old certificate (20 days left), *client* signed in as its
    admin (recently: the step-up window holds)."""
    from tests.auth_support import login, sync_organizations

    sync_organizations(app)
    old_pem, _ = pem_and_b64(20, "old.globex.test")
    app.extensions["hatidata_workos"].client.sso.create_connection_saml_idp_signing_cert(GLOBEX_CONN, value=old_pem)
    assert login(client, "admin@globex.test").status_code == 302
    return client


def open_test_window(db_session: Any, workos_client: Any, org: Any, cause: Any) -> None:
    """What ``POST /admin/sso/rotation/test`` does before the redirect: keep the old certificates' PEMs (committed),
    then set them aside at WorkOS so only the new certificate verifies the test sign-in."""
    from hatidata_auth.services import rotation_proof

    rotation_proof.begin_test_sign_in(db_session, workos_client, org, cause)
    db_session.commit()
    rotation_proof.set_aside_old(db_session, workos_client, org)
    db_session.commit()
