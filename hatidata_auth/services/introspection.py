"""Introspection: is this session or API key good right now?

Session and API-key status comes from three layers: this process's memory (only while the revocation bus is live,
see :mod:`hatidata_auth.revocation_bus`), the shared cache (Redis in production, the file cache in development; TTL
``HATIDATA_SESSION_CACHE_TTL`` or the organization's ``session_cache_ttl``) and the database
(:mod:`.credential_status`). A shared entry found live is extended to its full TTL (never a stale marker), and an
in-process one by a hit that finds less than half its TTL left, so a credential in use is not reloaded from the
shared cache or the database every TTL; but a cached status is never older than a bound: no
layer answers with, or renews past, a status read from the database more than ``max_age`` seconds ago
(``HATIDATA_SESSION_CACHE_MAX_AGE``), so a revocation whose invalidation was lost is honoured within that bound.
Its last-seen writes go through
:mod:`.last_seen` (batched, off the request path, once per interval across processes).
:meth:`Introspector.invalidate_session` / :meth:`Introspector.invalidate_api_key` evict
at once in this process, mark the shared entry stale and publish the eviction to every other process. The app's
introspector is its cache invalidator: :func:`hatidata_auth.unit_of_work.invalidate_after_commit` queues an eviction
for when the transaction commits. Access tokens are verified by :mod:`.token_verifier`; the errors and
:func:`token_hash` live in :mod:`.credentials`. The names callers import from here are re-exported.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from sqlalchemy.orm import Session

from ..local_cache import LocalCache
from ..revocation_bus import RevocationBus
from ..unit_of_work import invalidate_after_commit
from .access_policy import AccessPolicy, load_policy
from .credential_status import (
    ApiKeyStatus,
    SessionStatus,
    api_key_from_dict,
    load_api_key_status,
    load_session_status,
    status_to_dict,
)
from .credentials import KeysUnavailable, TokenExpired, Unauthenticated, token_hash
from .last_seen import LastSeenWriter
from .token_verifier import JwksCache, TokenVerifier, default_issuers

__all__ = [
    "STALE", "ApiKeyStatus", "Introspector", "JwksCache", "KeysUnavailable", "SessionStatus", "TokenExpired",
    "TokenVerifier", "Unauthenticated", "default_issuers", "invalidate_after_commit", "token_hash",
]

log = logging.getLogger(__name__)

STALE = "__stale__"
"""Shared-cache marker written on invalidation: readers go to the database and do not cache what they read."""
STALE_SECONDS = 10


class Introspector:
    """Session and API-key status through memory, the shared cache and the database.

    ``shared_cache`` is a Flask-Caching ``Cache`` (or anything with ``get``/``set``/``add``/``delete``, and
    optionally ``extend(key, seconds, unless=value)``), or ``None`` when the configured cache is private to the
    process (SimpleCache): then every lookup that the revocation bus cannot answer goes to the database.
    ``last_seen`` writes sessions' last-seen times (see :mod:`.last_seen`). ``max_age`` (seconds) bounds how long
    after its database read a status may still be answered from memory or the shared cache. ``clock`` is wall-clock
    seconds (``loaded_at``), ``monotonic`` the in-process entries' deadlines.
    """

    def __init__(self, *, bus: RevocationBus, shared_cache: Any | None, cache_ttl: int, active_ttl: int,
                 last_seen: LastSeenWriter, max_age: int = 3600, clock: Callable[[], float] = time.time,
                 remembered_ttl: int = 7 * 24 * 3600, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.bus = bus
        self.shared_cache = shared_cache
        self.cache_ttl = cache_ttl
        self.active_ttl = active_ttl
        self.remembered_ttl = remembered_ttl
        self.last_seen = last_seen
        self.max_age = max_age
        self.clock = clock
        self.monotonic = monotonic

    def _young(self, loaded_at: float) -> bool:
        return loaded_at + self.max_age > self.clock()

    def _lifetime(self, loaded_at: float, ttl: int) -> int:
        """Whole seconds a status read from the database at *loaded_at* may still be cached: at most *ttl*, never
        past ``loaded_at + max_age`` (0: reload it)."""
        return max(0, min(ttl, int(loaded_at + self.max_age - self.clock())))

    def _keep(self, cache: LocalCache[Any], key: str, status: SessionStatus | ApiKeyStatus, stored: Any,
              replacing: Any = None) -> None:
        """Keep *stored* (*status*'s form in memory) in this process for *status*'s TTL, renewed by hits while in
        use (see :class:`LocalCache`), never past ``max_age`` after its database read; with *replacing*, only in
        place of that entry (still held)."""
        left = status.loaded_at + self.max_age - self.clock()
        lifetime = min(status.cache_ttl, int(left))
        now = self.monotonic()
        if lifetime <= 0:
            return
        if replacing is None:
            cache.set(key, stored, now + lifetime, renew=status.cache_ttl, until=now + left)
        else:
            cache.replace(key, replacing, stored, now + lifetime, renew=status.cache_ttl, until=now + left)

    # --- sessions --------------------------------------------------------------------------------------

    def session_status(self, db: Session, workos_session_id: str) -> SessionStatus | None:
        """The status of a session, from the fastest layer that may be trusted."""
        use_local = self.bus.local_enabled()
        if use_local:
            hit = self.held_session(workos_session_id)
            if hit is not None and (hit.expires_at > self.clock() or not hit.active) and self._young(hit.loaded_at):
                return hit
        epoch = self.bus.epoch
        status: SessionStatus | None = None
        key = f"auth:ses:{workos_session_id}"
        shared = self._shared_get(key)
        if (isinstance(shared, dict) and shared.get("expires_at", 0) > self.clock()
                and (renewal := self._lifetime(float(shared.get("loaded_at") or 0), int(shared["cache_ttl"])))):
            status = SessionStatus(**shared)
            self._shared_extend(key, renewal)
        else:
            status = load_session_status(db, workos_session_id, default_cache_ttl=self.cache_ttl,
                                         active_ttl=self.active_ttl)
            if status is not None:
                status = status._replace(loaded_at=self.clock())
                if shared != STALE and (ttl := self._lifetime(status.loaded_at, status.cache_ttl)):
                    self._shared_set(key, status_to_dict(status), ttl, replace=isinstance(shared, dict))
        if status is not None and use_local and self.bus.epoch == epoch:
            self._keep_session(status)
        return status

    def _keep_session(self, status: SessionStatus, replacing: SessionStatus | None = None) -> None:
        # As a plain tuple, which the collector stops tracking (see SessionStatus): one per live session.
        self._keep(self.bus.sessions, status.workos_session_id, status, tuple(status),
                   None if replacing is None else tuple(replacing))

    def held_session(self, workos_session_id: str) -> SessionStatus | None:
        """The session's status held in this process's memory (a hit: renewed if due), or ``None``."""
        held = self.bus.sessions.get(workos_session_id, self.monotonic())
        return None if held is None else SessionStatus._make(held)

    def reload_session(self, db: Session, workos_session_id: str) -> SessionStatus | None:
        """The session's status read from the database now (never a cache), kept in this process's memory: for a
        decision a cached status may be too old for (its last-seen time, before ending it for idling)."""
        epoch = self.bus.epoch
        status = load_session_status(db, workos_session_id, default_cache_ttl=self.cache_ttl,
                                     active_ttl=self.active_ttl)
        if status is not None:
            status = status._replace(loaded_at=self.clock())
            if self.bus.local_enabled() and self.bus.epoch == epoch:
                self._keep_session(status)
        return status

    def should_touch(self, status: SessionStatus) -> bool:
        """Whether the session's last-seen time (and sliding expiry) is due to be written."""
        return self.last_seen.due(status)

    def touch(self, status: SessionStatus) -> SessionStatus:
        """Record use of a session, sliding its expiry: queued for the last-seen writer (no database or network
        round trip here); returns *status* as the use leaves it. The status this process's memory holds for the
        session is slid the same way, in place of that very entry only, only while it is live (active, not
        expired) and of the same session row and organization as *status* (the note's): *status* may be older than
        it (an identity remembered from an earlier status), and an eviction, an ending or an organization switch
        since must not be undone or run ahead of the database."""
        fresh = self.last_seen.note(status)
        if self.bus.local_enabled():
            held = self.held_session(status.workos_session_id)
            now = fresh.last_seen_at
            if (held is not None and held.active and now is not None and held.expires_at > now  # never revived
                    and (held.session_id, held.organization_id) == (status.session_id, status.organization_id)):
                self._keep_session(held.seen(now), replacing=held)
        return fresh

    # --- API keys --------------------------------------------------------------------------------------

    def api_key_status(self, db: Session, key_hash: str) -> ApiKeyStatus | None:
        """The status of the API key whose secret hashes to *key_hash*."""
        use_local = self.bus.local_enabled()
        if use_local:
            hit = self.bus.api_keys.get(key_hash, self.monotonic())
            if hit is not None and self._young(hit.loaded_at):
                return hit  # type: ignore[no-any-return,unused-ignore]
        epoch = self.bus.epoch
        key = f"auth:key:{key_hash}"
        shared = self._shared_get(key)
        if isinstance(shared, dict) and self._lifetime(float(shared.get("loaded_at") or 0), int(shared["cache_ttl"])):
            status: ApiKeyStatus | None = api_key_from_dict(shared)
        else:
            status = load_api_key_status(db, key_hash, default_cache_ttl=self.cache_ttl)
            if status is not None:
                status = replace(status, loaded_at=self.clock())
                if shared != STALE and (ttl := self._lifetime(status.loaded_at, status.cache_ttl)):
                    self._shared_set(key, status_to_dict(status), ttl, replace=isinstance(shared, dict))
                    self._shared_set(f"auth:keyid:{status.key_id}", key_hash, ttl, replace=True)
        if status is not None and use_local and self.bus.epoch == epoch:
            self._keep(self.bus.api_keys, key_hash, status, status)
        return status

    # --- access policies ---------------------------------------------------------------------------------

    def policy(self, db: Session, organization_id: str) -> AccessPolicy | None:
        """An organization's access policy: from this process's memory while the revocation bus (or log) is live,
        which every policy change evicts; else from the database. Kept no longer than ``max_age``."""
        use_local = self.bus.local_enabled()
        if use_local:
            hit = self.bus.policies.get(organization_id)
            if hit is not None:
                return hit  # type: ignore[no-any-return,unused-ignore]
        epoch = self.bus.epoch
        found = load_policy(db, organization_id, default_idle=self.active_ttl, default_remembered=self.remembered_ttl)
        if found is not None and use_local and self.bus.epoch == epoch:
            self.bus.policies.set(organization_id, found, self.monotonic() + self.max_age)
        return found

    def invalidate_policy(self, organization_id: str) -> None:
        """Evict an organization's access policy at once, in this process and every other one."""
        self.bus.publish("policy", organization_id)

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

    def _shared_extend(self, key: str, ttl: int) -> None:
        extend = getattr(self.shared_cache, "extend", None)
        if extend is None:
            return
        try:
            extend(key, ttl, unless=STALE)
        except Exception:  # noqa: BLE001 - the entry then lives its first TTL out
            log.warning("shared cache unavailable for %s", key)

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
