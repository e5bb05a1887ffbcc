"""The emulator's RSA signing key: persisted as PEM in the data dir, stable ``kid``, JWKS and JWT signing."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

KEY_FILE = "signing_key.pem"
CERT_FILE = "signing_cert.pem"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int_b64(value: int) -> str:
    return _b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


class SigningKey:
    """An RSA-2048 key plus a self-signed certificate, loaded from (or created in) ``data_dir``."""

    def __init__(self, data_dir: str) -> None:
        path = Path(data_dir)
        path.mkdir(parents=True, exist_ok=True)
        key_path, cert_path = path / KEY_FILE, path / CERT_FILE
        if key_path.exists():
            os.chmod(key_path, 0o600)  # a key file left readable (older emulator, a copy) is tightened at start
            loaded = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            assert isinstance(loaded, rsa.RSAPrivateKey)
            self.private_key = loaded
        else:
            self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            pem = self.private_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            tmp = key_path.with_suffix(".tmp")
            tmp.unlink(missing_ok=True)
            # created owner-only: the key is never readable by others, not even between a write and a chmod
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(pem)
            tmp.replace(key_path)
        cert: x509.Certificate | None = None
        if cert_path.exists():
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            cert_key = cert.public_key()
            if not isinstance(cert_key, rsa.RSAPublicKey) \
                    or cert_key.public_numbers() != self.private_key.public_key().public_numbers():
                cert = None
        if cert is None:
            cert = self._self_signed()
            cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.certificate = cert
        numbers = self.private_key.public_key().public_numbers()
        self._n, self._e = _int_b64(numbers.n), _int_b64(numbers.e)
        thumb_input = json.dumps({"e": self._e, "kty": "RSA", "n": self._n}, separators=(",", ":"))
        self.kid = "key_" + _b64url(hashlib.sha256(thumb_input.encode()).digest())[:26]

    def _self_signed(self) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "WorkOS Emulator")])
        now = datetime.now(UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.private_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=3650))
            .sign(self.private_key, hashes.SHA256())
        )

    def jwk(self) -> dict[str, Any]:
        """The public JWK (with ``x5c`` and ``x5t#S256``)."""
        der = self.certificate.public_bytes(serialization.Encoding.DER)
        return {
            "alg": "RS256",
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "n": self._n,
            "e": self._e,
            "x5c": [base64.b64encode(der).decode()],
            "x5t#S256": _b64url(hashlib.sha256(der).digest()),
        }

    def jwks(self) -> dict[str, Any]:
        """The JWKS document."""
        return {"keys": [self.jwk()]}

    def sign(self, claims: dict[str, Any]) -> str:
        """Sign ``claims`` as an RS256 JWT with this key's ``kid``."""
        return jwt.encode(claims, self.private_key, algorithm="RS256", headers={"kid": self.kid})
