"""Ed25519 keys that sign audit checkpoints (docs/audit.md, "Checkpoints and signing keys").

The private key comes from ``HATIDATA_AUDIT_SIGNING_KEY`` (the 32-byte seed, base64url, or a PKCS#8 PEM); it is
held in a :class:`Signer` whose ``repr`` hides it. The public key is published as base64url of its 32 raw bytes,
named by ``kid`` (the first 16 hex digits of its SHA-256). The signed message is the byte string
:func:`checkpoint_message`; it never depends on JSON formatting.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ..errors import AppError
from ..models import AuditSigningKey, utcnow

ALGORITHM = "Ed25519"
MESSAGE_PREFIX = "hatidata-audit-checkpoint:v1"


class InvalidSigningKey(AppError):
    """``HATIDATA_AUDIT_SIGNING_KEY`` is not an Ed25519 private key."""

    def __init__(self) -> None:
        super().__init__("HATIDATA_AUDIT_SIGNING_KEY is not an Ed25519 private key (32 bytes base64url, or PEM).",
                         status=500, code="invalid_signing_key")


def b64url(raw: bytes) -> str:
    """Unpadded base64url."""
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def unb64url(text: str) -> bytes:
    """Decode unpadded (or padded) base64url; ``ValueError`` when it is not."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url") from exc


def checkpoint_message(organization_id: str, seq: int, chain_hash: str) -> bytes:
    """The bytes a checkpoint signs: ``hatidata-audit-checkpoint:v1:<organization_id>:<seq>:<hash>`` (UTF-8)."""
    return f"{MESSAGE_PREFIX}:{organization_id}:{int(seq)}:{chain_hash}".encode()


def public_raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key: bytes) -> str:
    """The ``kid`` of a raw public key."""
    return hashlib.sha256(public_key).hexdigest()[:16]


@dataclass(frozen=True)
class Signer:
    """The deployment's current signing key."""

    private_key: Ed25519PrivateKey = field(repr=False, compare=False)
    kid: str
    public_key: str  # base64url of the raw 32 bytes

    def sign(self, organization_id: str, seq: int, chain_hash: str) -> str:
        """The base64url signature of a checkpoint."""
        return b64url(self.private_key.sign(checkpoint_message(organization_id, seq, chain_hash)))


def load_signer(value: str | None) -> Signer | None:
    """The signer of a configured key (``None`` when none is configured); :class:`InvalidSigningKey` if malformed."""
    if not value:
        return None
    try:
        if value.lstrip().startswith("-----BEGIN"):
            loaded = serialization.load_pem_private_key(value.encode(), password=None)
            if not isinstance(loaded, Ed25519PrivateKey):
                raise InvalidSigningKey()
            private = loaded
        else:
            private = Ed25519PrivateKey.from_private_bytes(unb64url(value.strip()))
    except ValueError:
        raise InvalidSigningKey() from None
    public = public_raw(private.public_key())
    return Signer(private, key_id(public), b64url(public))


def generate_key() -> str:
    """A new private key in the configuration's form (base64url of the 32-byte seed)."""
    return b64url(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()))


def verify_signature(public_key: str, organization_id: str, seq: int, chain_hash: str, signature: str) -> bool:
    """Whether *signature* (base64url) signs the checkpoint with *public_key* (base64url raw)."""
    try:
        key = Ed25519PublicKey.from_public_bytes(unb64url(public_key))
        key.verify(unb64url(signature), checkpoint_message(organization_id, seq, chain_hash))
    except (ValueError, InvalidSignature):
        return False
    return True


@dataclass(frozen=True, slots=True)
class PublishedKey:
    """One entry of ``GET /api/v1/audit-events/signing-keys``."""

    kid: str
    algorithm: str
    public_key: str
    created_at: datetime | None
    retired_at: datetime | None

    def to_json(self) -> dict[str, object]:
        return {"kid": self.kid, "algorithm": self.algorithm, "public_key": self.public_key,
                "created_at": self.created_at.isoformat() if self.created_at else None,
                "retired_at": self.retired_at.isoformat() if self.retired_at else None}


def register(session: Session, signer: Signer, *, now: datetime | None = None) -> None:
    """Publish *signer*'s public key and retire the others (a rotation), in the caller's transaction."""
    if session.get(AuditSigningKey, signer.kid) is not None:
        return
    now = now or utcnow()
    table = AuditSigningKey.__table__
    session.execute(update(table).where(table.c.retired_at.is_(None)).values(retired_at=now))
    # Every worker process registers the key it signs with: the first insert wins, the others change nothing.
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    session.execute(insert(table).values(kid=signer.kid, algorithm=ALGORITHM, public_key=signer.public_key,
                                         created_at=now).on_conflict_do_nothing(index_elements=["kid"]))
    session.flush()


class InvalidTrustedKey(AppError):
    """An entry of ``HATIDATA_AUDIT_TRUSTED_KEYS`` is not an Ed25519 public key."""

    def __init__(self) -> None:
        super().__init__("HATIDATA_AUDIT_TRUSTED_KEYS holds an entry that is not an Ed25519 public key (32 bytes "
                         "base64url).", status=500, code="invalid_trusted_key")


def trusted_keys(signer: Signer | None, previous: Iterable[str] | str | None = ()) -> dict[str, str]:
    """``kid`` -> public key of every key the deployment's configuration holds: the current signing key's and the
    previous public keys of ``HATIDATA_AUDIT_TRUSTED_KEYS`` (base64url, comma-separated). Trust is anchored here,
    outside the database: a key that is only a row of ``audit_signing_keys`` vouches for nothing."""
    entries = previous.split(",") if isinstance(previous, str) else list(previous or ())
    keys: dict[str, str] = {}
    for entry in (e.strip() for e in entries):
        if not entry:
            continue
        try:
            raw = unb64url(entry)
            Ed25519PublicKey.from_public_bytes(raw)
        except ValueError:
            raise InvalidTrustedKey() from None
        keys[key_id(raw)] = b64url(raw)
    if signer is not None:
        keys[signer.kid] = signer.public_key
    return keys


def published_keys(session: Session, signer: Signer | None = None,
                   previous: Iterable[str] | str | None = ()) -> list[PublishedKey]:
    """The trusted keys (:func:`trusted_keys`), current first then newest first, with their dates from
    ``audit_signing_keys`` when they signed there; a row naming a key the configuration does not hold is left out."""
    trusted = trusted_keys(signer, previous)
    rows = session.scalars(select(AuditSigningKey).order_by(AuditSigningKey.created_at.desc())).all()
    keys = [PublishedKey(r.kid, r.algorithm, r.public_key, r.created_at, r.retired_at) for r in rows
            if trusted.get(r.kid) == r.public_key]
    keys += [PublishedKey(kid, ALGORITHM, public, None, None) for kid, public in trusted.items()
             if all(k.kid != kid for k in keys)]
    if signer is not None:
        keys.sort(key=lambda k: k.kid != signer.kid)
    return keys


def public_keys(keys: list[PublishedKey]) -> dict[str, str]:
    """``kid`` -> public key."""
    return {k.kid: k.public_key for k in keys}
