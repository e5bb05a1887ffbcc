"""Validators plugins share: URLs, GUIDs and SAML metadata documents (parsed safely with defusedxml)."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from defusedxml import DefusedXmlException
from defusedxml import ElementTree as SafeET

from .hosts import url_label
from .values import CertificateInfo, SamlMetadata, ValidationResult

GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
MD_NS = "urn:oasis:names:tc:SAML:2.0:metadata"
DS_NS = "http://www.w3.org/2000/09/xmldsig#"
MAX_METADATA_BYTES = 512 * 1024
EXPIRY_WARNING = timedelta(days=30)


def is_guid(value: str) -> bool:
    """Whether *value* is an object-id GUID such as ``5581e43f-6096-41d4-8ffa-04e560bab39d``."""
    return bool(GUID_RE.match(value.strip()))


def validate_guid(field: str, value: str, what: str = "group object ID") -> ValidationResult:
    """Accept a GUID (lower-cased), refuse anything else with a message that says what to copy."""
    cleaned = value.strip()
    if not cleaned:
        return ValidationResult.failure(field, f"Enter the {what}.")
    if not is_guid(cleaned):
        return ValidationResult.failure(
            field, f"“{cleaned[:60]}” is not a {what}: paste the Object ID (a GUID like "
                   "5581e43f-6096-41d4-8ffa-04e560bab39d), not the group's name.")
    return ValidationResult.success(cleaned.lower())


def check_https_url(field: str, url: str, hosts: Iterable[str] | None = None,
                    host_pattern: re.Pattern[str] | None = None) -> tuple[str, str] | ValidationResult:
    """Check *url* is an absolute HTTPS URL on an allowed host; returns ``(host, path)`` or a failure.

    Never raises on bad input: an unparsable URL or port (``:abc``, ``:99999``) is a failure naming *field*.
    """
    url = url.strip()
    if not url:
        return ValidationResult.failure(field, f"Enter the {url_label(field)}.")
    try:
        parts = urlsplit(url)
        port = parts.port  # reads the port: a non-numeric or out-of-range one raises ValueError here
    except ValueError:
        return ValidationResult.failure(field,
                                        f"The {url_label(field)} is not a valid URL: check its host and port.")
    if parts.scheme != "https" or not parts.hostname:
        return ValidationResult.failure(field, f"The {url_label(field)} must be an absolute https:// URL.")
    if parts.username or parts.password or port not in (None, 443):
        return ValidationResult.failure(field, f"The {url_label(field)} must not carry credentials or a port.")
    host = parts.hostname.lower()
    allowed = {h.lower() for h in hosts or ()}
    if (allowed or host_pattern) and host not in allowed and not (host_pattern and host_pattern.match(host)):
        return ValidationResult.failure(field, f"{host} is not a host this identity provider serves metadata from.")
    return host, parts.path


def query_param(url: str, name: str) -> str | None:
    """The first value of a query parameter of *url*."""
    values = parse_qs(urlsplit(url.strip()).query).get(name)
    return values[0] if values else None


def _localname(tag: str) -> str:
    return tag.rpartition("}")[2]


def _certificate(text: str) -> x509.Certificate:
    der = base64.b64decode("".join(text.split()), validate=True)
    return x509.load_der_x509_certificate(der)


def parse_saml_metadata(data: bytes, now: datetime, field: str = "metadata_file") -> ValidationResult:
    """Parse IdP SAML metadata safely and check its signing certificates.

    Refuses DTDs (so entity-expansion bombs and external entities), documents that are not an
    ``md:EntityDescriptor`` with an ``IDPSSODescriptor``, a missing ``SingleSignOnService``, a missing or
    unreadable signing certificate, and a certificate that has expired. The value is a :class:`SamlMetadata`.
    """
    if not data.strip():
        return ValidationResult.failure(field, "The file is empty.")
    if len(data) > MAX_METADATA_BYTES:
        return ValidationResult.failure(field, "The file is too large to be SAML metadata (over 512 KB).")
    try:
        root = SafeET.fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException:
        return ValidationResult.failure(
            field, "The file declares a DTD or entities, which SAML metadata never needs; it was refused.")
    except SafeET.ParseError:
        return ValidationResult.failure(field, "The file is not well-formed XML.")
    if root.tag == f"{{{MD_NS}}}EntitiesDescriptor":
        children = root.findall(f"{{{MD_NS}}}EntityDescriptor")
        if len(children) != 1:
            return ValidationResult.failure(field, "The file describes several entities; upload your IdP's own.")
        root = children[0]
    if root.tag != f"{{{MD_NS}}}EntityDescriptor":
        return ValidationResult.failure(
            field, f"This XML is not SAML metadata (its root element is <{_localname(root.tag)}>, "
                   "expected <EntityDescriptor>).")
    entity_id = (root.get("entityID") or "").strip()
    idp = root.find(f"{{{MD_NS}}}IDPSSODescriptor")
    if not entity_id or idp is None:
        return ValidationResult.failure(
            field, "This is SAML metadata but not an identity provider's (no entityID or IDPSSODescriptor).")
    sso_urls = tuple(
        loc for sso in idp.findall(f"{{{MD_NS}}}SingleSignOnService") if (loc := (sso.get("Location") or "").strip())
    )
    if not sso_urls:
        return ValidationResult.failure(field, "The metadata has no SingleSignOnService location.")
    certs: list[CertificateInfo] = []
    for key in idp.findall(f"{{{MD_NS}}}KeyDescriptor"):
        if key.get("use") not in (None, "signing"):
            continue
        for node in key.iter(f"{{{DS_NS}}}X509Certificate"):
            try:
                cert = _certificate(node.text or "")
            except (ValueError, binascii.Error):
                return ValidationResult.failure(field, "The signing certificate in the metadata cannot be read.")
            certs.append(CertificateInfo(
                subject=cert.subject.rfc4514_string(),
                not_before=cert.not_valid_before_utc,
                not_after=cert.not_valid_after_utc,
                sha256_fingerprint=cert.fingerprint(hashes.SHA256()).hex(":").upper(),
                pem=cert.public_bytes(Encoding.PEM).decode(),
            ))
    if not certs:
        return ValidationResult.failure(field, "The metadata has no signing certificate "
                                               "(KeyDescriptor use=\"signing\").")
    valid = [c for c in certs if c.not_after > now]
    if not valid:
        latest = max(c.not_after for c in certs)
        return ValidationResult.failure(
            field, f"The signing certificate expired on {latest:%Y-%m-%d}; rotate it in your IdP and download "
                   "the metadata again.")
    warnings: list[str] = []
    soonest = min(c.not_after for c in valid)
    if soonest - now < EXPIRY_WARNING:
        warnings.append(f"The signing certificate expires on {soonest:%Y-%m-%d}; plan its rotation.")
    if len(valid) < len(certs):
        warnings.append("The metadata also lists an expired certificate; it is ignored.")
    return ValidationResult.success(SamlMetadata(entity_id, sso_urls, tuple(valid)), tuple(warnings))

