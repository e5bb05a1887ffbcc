"""Secrets stored for the application's own outbound use (an audit sink's HMAC secret, HEC token, Datadog API
key), sealed at rest with a Fernet key derived from the deployment's ``HATIDATA_COOKIE_KEY``.

The derivation (HKDF-SHA256 with a purpose label) keeps a stored secret unreadable with the cookie key itself and
gives each purpose its own key. Rotating ``HATIDATA_COOKIE_KEY`` makes stored secrets unreadable: re-enter them
(:class:`SecretUnreadable` names the sink). Sealed values are never logged and never leave the service.
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import AppError


class SecretUnreadable(AppError):
    """A sealed secret does not open with the current key (the cookie key was rotated)."""

    status = 409
    code = "secret_unreadable"


def _fernet(key: str, purpose: str) -> Fernet:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                   info=f"hatidata:sealed-secret:v1:{purpose}".encode()).derive(key.encode())
    return Fernet(base64.urlsafe_b64encode(derived))


def seal(key: str, purpose: str, secret: str) -> str:
    """*secret* sealed for *purpose* (a Fernet token, ASCII)."""
    return _fernet(key, purpose).encrypt(secret.encode()).decode("ascii")


def unseal(key: str, purpose: str, sealed: str) -> str:
    """The secret *sealed* holds; :class:`SecretUnreadable` if *key* or *purpose* differ from the sealing ones."""
    try:
        return _fernet(key, purpose).decrypt(sealed.encode("ascii")).decode()
    except (InvalidToken, ValueError) as exc:
        raise SecretUnreadable("A stored secret cannot be read with the current key; enter it again.") from exc


def hint(secret: str) -> str:
    """What may be shown of a secret: its last four characters."""
    return "…" + secret[-4:] if len(secret) >= 12 else "…"
