"""SAML IdP signing certificates of a connection, and the certificate the simulated IdP signs with.

WorkOS's API (the SDK's ``sso.list|create|delete_connection_saml_idp_signing_cert``):

- ``GET    /connections/{id}/saml_idp_signing_certs``         every trusted certificate, oldest first
- ``POST   /connections/{id}/saml_idp_signing_certs``         ``{value: PEM}`` -> 201 the certificate (422 not a PEM
  X.509 certificate; the same certificate twice answers the one held)
- ``DELETE /connections/{id}/saml_idp_signing_certs/{cert}``  204; 422 for the last one (a connection keeps one)

The control API plays the customer's IdP:

- ``GET /_emulator/connections/{id}/idp_signing``  ``{signing_fingerprint, certificates: [{id, fingerprint,
  not_after, verified_sign_ins, last_verified_at}]}``: which certificate verified how many sign-ins
- ``PUT /_emulator/connections/{id}/idp_signing``  ``{pem}`` or ``{certificate_id}``: the IdP now signs with that
  certificate (it need not be trusted by the connection: that is the outage a rotation prevents)

A SAML connection holding no certificate (the seed's) is not checked. Otherwise a sign-in is verified by the
trusted, unexpired certificate whose SHA-256 fingerprint is the IdP's signing one; when none is, WorkOS refuses
the SAML response: the redirect carries ``error=server_error`` and ``authentication.sso_failed`` records
``error.code`` ``invalid_saml_response`` with a message naming the expired or untrusted certificate.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from flask import Blueprint, Response, jsonify

from . import idp_failures
from .errors import ApiError, invalid_params
from .http import json_body, opt_str
from .ids import iso, new_id, utcnow
from .state import Emulator, emulator
from .store import Entity

bp = Blueprint("signing_certs", __name__)
control_bp = Blueprint("signing_control", __name__, url_prefix="/_emulator")

REFUSAL = "The SAML response was signed with a certificate that is expired or not trusted by the connection."


def parse_pem(value: Any, field: str = "value") -> x509.Certificate:
    """The X.509 certificate in *value* (PEM); 422 ``invalid_request_parameters`` naming *field* (the field the
    caller sent it in: ``value`` on WorkOS's routes, ``pem`` on the control API) otherwise."""
    if not isinstance(value, str) or "BEGIN CERTIFICATE" not in value:
        raise invalid_params(f"{field} must be a PEM-encoded X.509 certificate.", field)
    try:
        return x509.load_pem_x509_certificate(value.encode())
    except ValueError:
        raise invalid_params(f"{field} is not a valid X.509 certificate.", field) from None


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, lowercase hex."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def certificate_entity(cert: x509.Certificate) -> Entity:
    """A stored certificate (public fields plus ``_fingerprint`` and verification counters)."""
    return {"object": "saml_idp_signing_certificate", "id": new_id("cert"),
            "value": cert.public_bytes(serialization.Encoding.PEM).decode(),
            "not_before": iso(cert.not_valid_before_utc), "not_after": iso(cert.not_valid_after_utc),
            "created_at": iso(), "_fingerprint": fingerprint(cert), "_verified": 0, "_last_verified_at": None}


def public(cert: Entity) -> Entity:
    """The API shape of a certificate."""
    return {k: v for k, v in cert.items() if not k.startswith("_")}


def certificates(conn: Entity) -> list[Entity]:
    """The connection's trusted certificates (a list stored on it, oldest first)."""
    held: list[Entity] = conn.setdefault("_certs", [])
    return held


def add(conn: Entity, cert: x509.Certificate) -> Entity:
    """Trust *cert* on *conn* (the one held when it already is); the first becomes the IdP's signing one."""
    fp = fingerprint(cert)
    held = certificates(conn)
    for existing in held:
        if existing["_fingerprint"] == fp:
            return existing
    entity = certificate_entity(cert)
    held.append(entity)
    conn.setdefault("_idp_signing", fp)
    return entity


def seed_from_options(conn: Entity, pems: Any) -> None:
    """Trust the ``idp_signing_certs`` a connection was created with."""
    for pem in pems if isinstance(pems, list) else []:
        add(conn, parse_pem(pem))


def signing_certificate(conn: Entity) -> Entity | None:
    """The trusted certificate the IdP signs with, if it is trusted."""
    return next((c for c in certificates(conn) if c["_fingerprint"] == conn.get("_idp_signing")), None)


def verify(emu: Emulator, conn: Entity | None, org_id: str | None, email: str) -> tuple[str, str] | None:
    """Verify a SAML sign-in of *email* through *conn*; count it on the verifying certificate. On failure record
    ``authentication.sso_failed`` and return WorkOS's redirect ``(error, error_description)``."""
    held = certificates(conn) if conn is not None else []
    if conn is None or not held:
        return None
    signing = conn.get("_idp_signing")
    now = utcnow()
    for cert in held:
        if cert["_fingerprint"] == signing and expiry(cert) > now:
            cert["_verified"] += 1
            cert["_last_verified_at"] = iso(now)
            return None
    idp_failures.emit_sso_failed(emu, conn, org_id, email, "invalid_saml_response", REFUSAL)
    return "server_error", REFUSAL


def expiry(cert: Entity) -> datetime:
    """When *cert* expires (aware UTC)."""
    return datetime.fromisoformat(str(cert["not_after"]).replace("Z", "+00:00"))


def _connection(emu: Emulator, conn_id: str) -> Entity:
    return emu.store.get("connections", conn_id, "Connection")


@bp.get("/connections/<conn_id>/saml_idp_signing_certs")
def list_certs(conn_id: str) -> Any:
    """``GET /connections/{id}/saml_idp_signing_certs``."""
    emu = emulator()
    with emu.store.lock:
        conn = _connection(emu, conn_id)
        return jsonify({"object": "list", "data": [public(c) for c in certificates(conn)]})


@bp.post("/connections/<conn_id>/saml_idp_signing_certs")
def create_cert(conn_id: str) -> Any:
    """``POST /connections/{id}/saml_idp_signing_certs`` ``{value}``."""
    emu = emulator()
    cert = parse_pem(json_body().get("value"))
    with emu.store.lock:
        conn = _connection(emu, conn_id)
        return jsonify(public(add(conn, cert))), 201


@bp.delete("/connections/<conn_id>/saml_idp_signing_certs/<cert_id>")
def delete_cert(conn_id: str, cert_id: str) -> Any:
    """``DELETE /connections/{id}/saml_idp_signing_certs/{cert_id}``."""
    emu = emulator()
    with emu.store.lock:
        held = certificates(_connection(emu, conn_id))
        found = next((c for c in held if c["id"] == cert_id), None)
        if found is None:
            raise ApiError(404, f"SAMLIdpSigningCertificate not found: '{cert_id}'.", "entity_not_found")
        if len(held) == 1:
            raise ApiError(422, "The last signing certificate of a connection cannot be deleted.",
                           "invalid_request_parameters")
        held.remove(found)
    return Response(status=204)


def _signing_view(conn: Entity) -> Entity:
    return {"signing_fingerprint": conn.get("_idp_signing"),
            "certificates": [{"id": c["id"], "fingerprint": c["_fingerprint"], "not_after": c["not_after"],
                              "verified_sign_ins": c["_verified"], "last_verified_at": c["_last_verified_at"]}
                             for c in certificates(conn)]}


@control_bp.get("/connections/<conn_id>/idp_signing")
def get_signing(conn_id: str) -> Any:
    """Which certificate the IdP signs with, and how many sign-ins each trusted certificate verified."""
    emu = emulator()
    with emu.store.lock:
        return jsonify(_signing_view(_connection(emu, conn_id)))


@control_bp.put("/connections/<conn_id>/idp_signing")
def set_signing(conn_id: str) -> Any:
    """``{pem}`` or ``{certificate_id}``: the IdP signs with that certificate from now on."""
    emu = emulator()
    data = json_body()
    cert_id = opt_str(data, "certificate_id")
    with emu.store.lock:
        conn = _connection(emu, conn_id)
        if cert_id:
            found = next((c for c in certificates(conn) if c["id"] == cert_id), None)
            if found is None:
                raise invalid_params("certificate_id is not a certificate of this connection.", "certificate_id")
            conn["_idp_signing"] = found["_fingerprint"]
        else:
            conn["_idp_signing"] = fingerprint(parse_pem(data.get("pem"), "pem"))
        return jsonify(_signing_view(conn))
