"""Identifier and timestamp helpers (WorkOS-style prefixed ULIDs, ISO-8601 ``Z`` timestamps)."""

from __future__ import annotations

import secrets
import threading
import time
from datetime import UTC, datetime

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_lock = threading.Lock()
_last_ms = 0
_last_rand = 0


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def ulid() -> str:
    """Return a monotonic ULID (26 uppercase Crockford base32 chars); later calls sort after earlier ones."""
    global _last_ms, _last_rand
    with _lock:
        now_ms = int(time.time() * 1000)
        if now_ms <= _last_ms:
            now_ms = _last_ms
            _last_rand += 1
        else:
            _last_ms = now_ms
            _last_rand = secrets.randbits(79)
        return _encode(now_ms, 10) + _encode(_last_rand, 16)


def new_id(prefix: str) -> str:
    """Return ``<prefix>_<ULID>``, e.g. ``org_01J...``."""
    return f"{prefix}_{ulid()}"


def token(nbytes: int = 24) -> str:
    """Return an opaque URL-safe random token."""
    return secrets.token_urlsafe(nbytes)


def utcnow() -> datetime:
    """Current time, timezone-aware UTC."""
    return datetime.now(UTC)


def iso(dt: datetime | None = None) -> str:
    """Format a datetime (default: now) as ``YYYY-MM-DDTHH:MM:SS.mmmZ``."""
    dt = dt or utcnow()
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_iso(value: str) -> datetime:
    """Parse an ISO-8601 timestamp (``Z`` suffix allowed); raises ``ValueError``."""
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt
