"""Introspection: is this access token, session or API key good right now?

- Access tokens (WorkOS JWTs) are verified locally with PyJWT against WorkOS's JWKS: RS256 only, the ``kid``
  must be in the key set (an unknown ``kid`` refetches the set once, at most every ``refetch_cooldown``
  seconds), ``exp``/``iat``/``sub``/``sid`` required, the issuer must be ours and an ``aud``/``client_id``
  claim, when present, must name our client. Verified tokens are kept in a bounded in-process cache keyed by
  the token's SHA-256, never beyond ``exp``.
- Session and API-key status comes from three layers: this process's memory (only while the revocation bus
  is live, see :mod:`hatidata_auth.revocation_bus`), the shared cache (Redis in production, the file cache in
  development; TTL ``HATIDATA_SESSION_CACHE_TTL`` or the organization's ``session_cache_ttl``) and the database.
- :meth:`Introspector.invalidate_session` / :meth:`Introspector.invalidate_api_key` evict at once in this
  process, mark the shared entry stale and publish the eviction to every other process. The app's introspector
  is its cache invalidator: :func:`hatidata_auth.unit_of_work.invalidate_after_commit` (re-exported here)
  queues an eviction for when the transaction commits.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import jwt
from sqlalchemy import and_, select, update
from sqlalchemy.orm import Session

from ..errors import AppError, ServiceUnavailable
from ..models import ApiKey, AuthSession, Membership, Organization, User
from ..revocation_bus import LocalCache, RevocationBus
from ..unit_of_work import invalidate_after_commit as invalidate_after_commit

log = logging.getLogger(__name__)

STALE = "__stale__"
"""Shared-cache marker written on invalidation: readers go to the database and do not cache what they read."""
STALE_SECONDS = 10


class Unauthenticated(AppError):
    """The credentials presented are not (or no longer) valid: answer 401, clear the session cookie."""

    status = 401
    code = "unauthenticated"

    def __init__(self, message: str = "Authentication required.", *, reason: str = "invalid",
                 clear_cookie: bool = True) -> None:
        super().__init__(message, details={"reason": reason})
        self.reason = reason
        self.clear_cookie = clear_cookie


class TokenExpired(Unauthenticated):
    """A correctly signed access token whose ``exp`` has passed (a cookie session may refresh it)."""

    def __init__(self) -> None:
        super().__init__("The access token has expired.", reason="expired")


class KeysUnavailable(ServiceUnavailable):
    """WorkOS's key set (JWKS) could not be fetched."""

    def __init__(self, detail: str) -> None:
        super().__init__("Cannot verify the session right now: WorkOS's signing keys (JWKS) are unreachable. "
                         "Retry shortly.", code="jwks_unavailable", details={"cause": detail},
                         headers={"Retry-After": "5"})


def token_hash(token: str) -> str:
    """The SHA-256 hex digest of a token (cache keys, stored API-key hashes)."""
    return hashlib.sha256(token.encode()).hexdigest()


# --- JWKS and JWT verification ------------------------------------------------------------------------------


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
        """The claims of a valid token; raises :class:`Unauthenticated`, :class:`TokenExpired` or
        :class:`KeysUnavailable`."""
        digest = hashlib.sha256(token.encode()).digest()
        cached = self.cache.get(digest)
        if cached is not None:
            return cached
        claims = self._verify(token, allow_expired=allow_expired)
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


# --- status records ----------------------------------------------------------------------------------------


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


@dataclass(frozen=True, slots=True)
class SessionStatus:
    """What a request needs to know about one session, cached in memory and in the shared cache."""

    session_id: str
    workos_session_id: str
    user_id: str
    email: str
    organization_id: str
    workos_organization_id: str | None
    role: str | None
    active: bool
    expires_at: float
    remembered: bool
    last_seen_at: float | None
    cache_ttl: int
    sliding_ttl: int | None


@dataclass(frozen=True, slots=True)
class ApiKeyStatus:
    """What a request needs to know about one API key."""

    key_id: str
    key_hash: str
    name: str
    prefix: str
    organization_id: str
    owner_user_id: str | None
    owner_email: str | None
    owner_role: str | None
    scopes: tuple[str, ...]
    status: str
    expires_at: float | None
    grace_until: float | None
    cache_ttl: int
    permissions: frozenset[str] = field(default_factory=frozenset)

    def usable(self, now: float) -> bool:
        """Active, owned by an active member, not expired, and (after a rotation) within its grace period."""
        if self.status != "active" or self.owner_user_id is None or self.owner_role is None:
            return False
        if self.expires_at is not None and self.expires_at <= now:
            return False
        return self.grace_until is None or self.grace_until > now


def load_session_status(db: Session, workos_session_id: str, *, default_cache_ttl: int,
                        active_ttl: int) -> SessionStatus | None:
    """Read one session's status from the database (``None`` when we never recorded it)."""
    row = db.execute(
        select(AuthSession, User.email, Organization.workos_organization_id, Organization.status,
               Organization.session_cache_ttl, Organization.session_active_ttl, Membership.role, Membership.status)
        .join(User, User.id == AuthSession.user_id)
        .join(Organization, Organization.id == AuthSession.organization_id)
        .outerjoin(Membership, and_(Membership.organization_id == AuthSession.organization_id,
                                    Membership.user_id == AuthSession.user_id))
        .where(AuthSession.workos_session_id == workos_session_id)
        .execution_options(populate_existing=True)
    ).first()
    if row is None:
        return None
    record, email, workos_org_id, org_status, org_cache_ttl, org_active_ttl, role, membership_status = row
    active = record.revoked_at is None and org_status == "active" and membership_status == "active"
    return SessionStatus(
        session_id=record.id, workos_session_id=record.workos_session_id, user_id=record.user_id, email=email,
        organization_id=record.organization_id, workos_organization_id=workos_org_id, role=role,
        active=active, expires_at=record.expires_at.timestamp(), remembered=record.remembered,
        last_seen_at=_ts(record.last_seen_at), cache_ttl=int(org_cache_ttl or default_cache_ttl),
        sliding_ttl=None if record.remembered else int(org_active_ttl or active_ttl),
    )


def load_api_key_status(db: Session, key_hash: str, *, default_cache_ttl: int) -> ApiKeyStatus | None:
    """Read one API key's status by the hash of its secret."""
    from ..roles import key_permissions

    row = db.execute(
        select(ApiKey, User.email, Membership.role, Membership.status, Organization.status,
               Organization.session_cache_ttl)
        .join(Organization, Organization.id == ApiKey.organization_id)
        .outerjoin(User, User.id == ApiKey.owner_user_id)
        .outerjoin(Membership, and_(Membership.organization_id == ApiKey.organization_id,
                                    Membership.user_id == ApiKey.owner_user_id))
        .where(ApiKey.key_hash == key_hash)
        .execution_options(populate_existing=True)
    ).first()
    if row is None:
        return None
    key, email, role, membership_status, org_status, org_cache_ttl = row
    owner_role = role if membership_status == "active" and org_status == "active" else None
    status = key.status if org_status == "active" else "suspended"
    return ApiKeyStatus(
        key_id=key.id, key_hash=key.key_hash, name=key.name, prefix=key.prefix,
        organization_id=key.organization_id, owner_user_id=key.owner_user_id, owner_email=email,
        owner_role=owner_role, scopes=tuple(key.scopes or ()), status=status,
        expires_at=_ts(key.expires_at), grace_until=_ts(key.grace_until),
        cache_ttl=int(org_cache_ttl or default_cache_ttl),
        permissions=key_permissions(key.scopes or (), owner_role),
    )


# --- the introspector --------------------------------------------------------------------------------------


def _status_to_dict(status: SessionStatus | ApiKeyStatus) -> dict[str, Any]:
    data = asdict(status)
    if isinstance(status, ApiKeyStatus):
        data["permissions"] = sorted(status.permissions)
        data["scopes"] = list(status.scopes)
    return data


def _api_key_from_dict(data: dict[str, Any]) -> ApiKeyStatus:
    data = dict(data)
    data["permissions"] = frozenset(data.get("permissions") or ())
    data["scopes"] = tuple(data.get("scopes") or ())
    return ApiKeyStatus(**data)


class Introspector:
    """Session and API-key status through memory, the shared cache and the database.

    ``shared_cache`` is a Flask-Caching ``Cache`` (or anything with ``get``/``set``/``add``/``delete``), or
    ``None`` when the configured cache is private to the process (SimpleCache): then every lookup that the
    revocation bus cannot answer goes to the database.
    """

    def __init__(self, *, bus: RevocationBus, shared_cache: Any | None, cache_ttl: int, active_ttl: int,
                 touch_interval: float = 60.0, clock: Callable[[], float] = time.time) -> None:
        self.bus = bus
        self.shared_cache = shared_cache
        self.cache_ttl = cache_ttl
        self.active_ttl = active_ttl
        self.touch_interval = touch_interval
        self.clock = clock
        self._touched: dict[str, float] = {}

    # --- sessions --------------------------------------------------------------------------------------

    def session_status(self, db: Session, workos_session_id: str) -> SessionStatus | None:
        """The status of a session, from the fastest layer that may be trusted."""
        use_local = self.bus.local_enabled()
        if use_local:
            hit = self.bus.sessions.get(workos_session_id)
            if hit is not None and (hit.expires_at > self.clock() or not hit.active):
                return hit  # type: ignore[no-any-return,unused-ignore]
        epoch = self.bus.epoch
        status: SessionStatus | None = None
        key = f"auth:ses:{workos_session_id}"
        shared = self._shared_get(key)
        if isinstance(shared, dict) and shared.get("expires_at", 0) > self.clock():
            status = SessionStatus(**shared)
        else:
            status = load_session_status(db, workos_session_id, default_cache_ttl=self.cache_ttl,
                                         active_ttl=self.active_ttl)
            if status is not None and shared != STALE:
                self._shared_set(key, _status_to_dict(status), status.cache_ttl, replace=isinstance(shared, dict))
        if status is not None and use_local and self.bus.epoch == epoch:
            self.bus.sessions.set(workos_session_id, status, time.monotonic() + status.cache_ttl)
        return status

    def should_touch(self, status: SessionStatus) -> bool:
        """Whether the session's last-seen time (and sliding expiry) is due to be written."""
        now = self.clock()
        last = max(status.last_seen_at or 0.0, self._touched.get(status.session_id, 0.0))
        return now - last >= self.touch_interval

    def touch(self, db: Session, status: SessionStatus) -> SessionStatus:
        """Record use of a session (at most once per ``touch_interval`` per process), sliding its expiry."""
        now = self.clock()
        self._touched[status.session_id] = now
        if len(self._touched) > 50_000:
            self._touched.clear()
        values: dict[str, Any] = {"last_seen_at": datetime.fromtimestamp(now, UTC)}
        expires_at = status.expires_at
        if status.sliding_ttl is not None:
            expires_at = max(expires_at, now + status.sliding_ttl)
            values["expires_at"] = datetime.fromtimestamp(expires_at, UTC)
        db.execute(update(AuthSession).where(AuthSession.id == status.session_id,
                                             AuthSession.organization_id == status.organization_id,
                                             AuthSession.revoked_at.is_(None)).values(**values))
        db.commit()
        fresh = SessionStatus(**{**_status_to_dict(status), "last_seen_at": now, "expires_at": expires_at})
        epoch = self.bus.epoch
        if self.bus.local_enabled() and self.bus.epoch == epoch:
            self.bus.sessions.set(status.workos_session_id, fresh, time.monotonic() + fresh.cache_ttl)
        key = f"auth:ses:{status.workos_session_id}"
        if self._shared_get(key) != STALE:
            self._shared_set(key, _status_to_dict(fresh), fresh.cache_ttl, replace=True)
        return fresh

    # --- API keys --------------------------------------------------------------------------------------

    def api_key_status(self, db: Session, key_hash: str) -> ApiKeyStatus | None:
        """The status of the API key whose secret hashes to *key_hash*."""
        use_local = self.bus.local_enabled()
        if use_local:
            hit = self.bus.api_keys.get(key_hash)
            if hit is not None:
                return hit  # type: ignore[no-any-return,unused-ignore]
        epoch = self.bus.epoch
        key = f"auth:key:{key_hash}"
        shared = self._shared_get(key)
        if isinstance(shared, dict):
            status: ApiKeyStatus | None = _api_key_from_dict(shared)
        else:
            status = load_api_key_status(db, key_hash, default_cache_ttl=self.cache_ttl)
            if status is not None and shared != STALE:
                self._shared_set(key, _status_to_dict(status), status.cache_ttl)
                self._shared_set(f"auth:keyid:{status.key_id}", key_hash, status.cache_ttl, replace=True)
        if status is not None and use_local and self.bus.epoch == epoch:
            self.bus.api_keys.set(key_hash, status, time.monotonic() + status.cache_ttl)
        return status

    # --- invalidation ------------------------------------------------------------------------------------

    def _invalidate_shared(self, key: str) -> None:
        if self.shared_cache is None:
            return
        cache = self.shared_cache
        try:
            cache.set(key, STALE, timeout=STALE_SECONDS)
        except Exception:  # the publish below still reaches the other processes
            log.exception("could not mark %s stale in the shared cache; will retry", key)
            # Until it goes through, other instances could still read the old entry once Redis is back.
            self.bus.retry_later(lambda: cache.set(key, STALE, timeout=STALE_SECONDS))

    def invalidate_session_local(self, workos_session_id: str) -> None:
        """Mark the shared entry stale and evict it from this process (no publish)."""
        self._invalidate_shared(f"auth:ses:{workos_session_id}")
        self.bus.evict("session", workos_session_id)

    def invalidate_api_key_local(self, key_id: str, key_hash: str | None = None) -> None:
        """Mark the shared entries of a key stale and evict it from this process (no publish)."""
        if key_hash is None:
            found = self._shared_get(f"auth:keyid:{key_id}")
            key_hash = found if isinstance(found, str) and found != STALE else None
        if key_hash:
            self._invalidate_shared(f"auth:key:{key_hash}")
            self.bus.evict("api_key", key_hash)
        self.bus.evict("api_key", key_id)

    def invalidate_session(self, workos_session_id: str) -> None:
        """Evict a session's cached status at once, in this process and (through Redis) every other one."""
        self.invalidate_session_local(workos_session_id)
        self.bus.publish("session", workos_session_id)

    def invalidate_api_key(self, key_id: str, key_hash: str | None = None) -> None:
        """Evict an API key's cached status at once, in this process and (through Redis) every other one."""
        self.invalidate_api_key_local(key_id, key_hash)
        self.bus.publish("api_key", key_id)
        if key_hash:
            self.bus.publish("api_key", key_hash)

    # --- shared cache helpers -------------------------------------------------------------------------------

    def _shared_get(self, key: str) -> Any:
        if self.shared_cache is None:
            return None
        try:
            return self.shared_cache.get(key)
        except Exception:  # noqa: BLE001 - a broken cache means: ask the database
            log.warning("shared cache unavailable for %s", key)
            return None

    def _shared_set(self, key: str, value: Any, ttl: int, *, replace: bool = False) -> None:
        if self.shared_cache is None:
            return
        try:
            if replace:
                self.shared_cache.set(key, value, timeout=ttl)
            else:
                self.shared_cache.add(key, value, timeout=ttl)
        except Exception:  # noqa: BLE001
            log.warning("shared cache unavailable for %s", key)
