"""Helpers for testing plugins: self-signed certificates and SAML metadata documents, good and hostile."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from html import escape

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

_KEY: rsa.RSAPrivateKey | None = None


def _key() -> rsa.RSAPrivateKey:
    global _KEY
    if _KEY is None:
        _KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return _KEY


def certificate_b64(not_after: datetime | None = None, not_before: datetime | None = None,
                    common_name: str = "idp.example.test") -> str:
    """A self-signed certificate, base64 DER (as in ``ds:X509Certificate``)."""
    now = datetime.now(UTC)
    not_before = not_before or now - timedelta(days=30)
    not_after = not_after or now + timedelta(days=365)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(_key().public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after)
            .sign(_key(), hashes.SHA256()))
    return base64.b64encode(cert.public_bytes(Encoding.DER)).decode()


def saml_metadata(entity_id: str, sso_url: str, *, not_after: datetime | None = None,
                  certificate: str | None = None, with_cert: bool = True) -> bytes:
    """An IdP metadata document (``md:EntityDescriptor`` with one signing key and one SSO service)."""
    cert = certificate if certificate is not None else certificate_b64(not_after)
    entity_id, sso_url = escape(entity_id, quote=True), escape(sso_url, quote=True)
    key = (f'<md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{cert}'
           f'</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>') if with_cert else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" '
        f'xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="{entity_id}">'
        '<md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">'
        f'{key}'
        '<md:NameIDFormat>urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress</md:NameIDFormat>'
        '<md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" '
        f'Location="{sso_url}"/>'
        '</md:IDPSSODescriptor></md:EntityDescriptor>'
    ).encode()


XML_BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="&lol3;"/>"""

XML_EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE md [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="&xxe;"/>"""

NOT_SAML_XML = b'<?xml version="1.0"?><rss version="2.0"><channel><title>News</title></channel></rss>'
NOT_XML = b"this is not xml at all {"
