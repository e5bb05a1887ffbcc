"""Access tokens (WorkOS JWTs), verified locally with PyJWT against WorkOS's JWKS.

RS256 only; the ``kid`` must be in the key set (an unknown ``kid`` refetches the set once, at most every
``refetch_cooldown`` seconds); ``exp``/``iat``/``sub``/``sid`` are required, the issuer must be ours and an
``aud``/``client_id`` claim, when present, must name our client. Verified tokens are kept in a bounded in-process
cache keyed by the token's SHA-256, never beyond ``exp``.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import jwt

from ..local_cache import LocalCache
from .credentials import KeysUnavailable, TokenExpired, Unauthenticated

log = logging.getLogger(__name__)


class JwksCache:
    """The key set, by ``kid``; an unknown ``kid`` refetches once (rate-limited by ``refetch_cooldown``)."""

    def __init__(self, fetch: Callable[[], dict[str, Any]], *, lifespan: float = 3600.0,
                 refetch_cooldown: float = 10.0) -> None:
        self._fetch = fetch
        self.lifespan = lifespan
        self.refetch_cooldown = refetch_cooldown
        self._keys: dict[str, Any] = {}
        self._fetched_at = float("-inf")
        self._lock = threading.Lock()

    def _refresh(self) -> None:
        try:
            document = self._fetch()
        except Exception as exc:  # network, 5xx, parse errors: all mean "unavailable"
            raise KeysUnavailable(type(exc).__name__) from exc
        keys: dict[str, Any] = {}
        for jwk in document.get("keys") or []:
            if jwk.get("kty") != "RSA" or not jwk.get("kid") or jwk.get("use", "sig") != "sig":
                continue
            try:
                keys[jwk["kid"]] = jwt.PyJWK.from_dict(jwk, algorithm="RS256").key
            except jwt.PyJWTError:
                log.warning("ignoring an unusable JWKS key %s", jwk.get("kid"))
        self._keys = keys
        self._fetched_at = time.monotonic()

    def get(self, kid: str) -> Any:
        """The public key for *kid*; raises :class:`Unauthenticated` for a key WorkOS does not publish."""
        now = time.monotonic()
        key = self._keys.get(kid)
        if key is not None and now - self._fetched_at < self.lifespan:
            return key
        with self._lock:
            key = self._keys.get(kid)
            stale = time.monotonic() - self._fetched_at >= self.lifespan
            if key is None or stale:
                if key is None and not stale and time.monotonic() - self._fetched_at < self.refetch_cooldown:
                    raise Unauthenticated("The token is signed by an unknown key.", reason="unknown_key")
                try:
                    self._refresh()
                except KeysUnavailable:
                    if key is not None:  # keep using a known key if WorkOS is briefly unreachable
                        return key
                    raise
                key = self._keys.get(kid)
        if key is None:
            raise Unauthenticated("The token is signed by an unknown key.", reason="unknown_key")
        return key

    def clear(self) -> None:
        """Forget the key set (tests)."""
        with self._lock:
            self._keys = {}
            self._fetched_at = float("-inf")


class TokenVerifier:
    """Verifies WorkOS access tokens locally and remembers the verified ones until they expire."""

    def __init__(self, jwks: JwksCache, *, client_id: str, issuers: Iterable[str], leeway: float = 5.0,
                 maxsize: int = 10_000) -> None:
        self.jwks = jwks
        self.client_id = client_id
        self.issuers = frozenset(i.rstrip("/") for i in issuers if i)
        self.leeway = leeway
        self.cache: LocalCache[dict[str, Any]] = LocalCache(maxsize)

    def verify(self, token: str, *, allow_expired: bool = False) -> dict[str, Any]:
        """The claims of a valid token, a list claim as a tuple (``roles``, ``permissions``); raises
        :class:`Unauthenticated`, :class:`TokenExpired` or :class:`KeysUnavailable`."""
        digest = hashlib.sha256(token.encode()).digest()
        cached = self.cache.get(digest)
        if cached is not None:
            return cached
        # Lists as tuples, on either path: kept per live session, claims of atomic values leave the collector's
        # walks once a full collection has found them so (docs/auth.md, "Memory the collector does not walk").
        claims: dict[str, Any] = {name: tuple(value) if type(value) is list else value
                                  for name, value in self._verify(token, allow_expired=allow_expired).items()}
        if not allow_expired:
            remaining = float(claims["exp"]) - time.time()
            if remaining > 0:
                self.cache.set(digest, claims, time.monotonic() + remaining)
        return claims

    def _verify(self, token: str, *, allow_expired: bool) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthenticated("The token is malformed.", reason="malformed") from exc
        if header.get("alg") != "RS256":
            raise Unauthenticated("The token's algorithm is not accepted.", reason="algorithm")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthenticated("The token names no signing key.", reason="unknown_key")
        key = self.jwks.get(kid)
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=["RS256"], leeway=self.leeway,
                options={"require": ["exp", "iat", "sub", "sid"], "verify_aud": False,
                         "verify_exp": not allow_expired},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenExpired() from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated("The token is invalid.", reason="signature") from exc
        if self.issuers and str(claims.get("iss", "")).rstrip("/") not in self.issuers:
            raise Unauthenticated("The token was issued for another client.", reason="issuer")
        audience = claims.get("aud")
        if audience is not None:
            audiences = [audience] if isinstance(audience, str) else list(audience)
            if self.client_id not in audiences:
                raise Unauthenticated("The token was issued for another client.", reason="audience")
        if claims.get("client_id") not in (None, self.client_id):
            raise Unauthenticated("The token was issued for another client.", reason="client")
        return claims


def default_issuers(base_url: str, client_id: str) -> list[str]:
    """The issuers WorkOS uses for our client: the API base URL and ``…/user_management/<client_id>``."""
    base = base_url.rstrip("/")
    return [base, f"{base}/user_management/{client_id}"]
