"""Cross-process invalidation of cached session and API-key status.

Each worker process keeps the status of recently seen sessions and keys in memory (:class:`LocalCache`) so
that the authenticated hot path makes no network round trip. That memory is only trusted while this process
is subscribed to the Redis channel :data:`CHANNEL`, on which every revocation is published:

- a listener thread per process evicts entries as messages arrive;
- while the subscription is down (Redis unreachable, or nothing heard for :attr:`RevocationBus.liveness`
  seconds) :meth:`RevocationBus.local_enabled` is false and callers must fall back to the shared cache or the
  database (fail closed: a revocation can never be missed because a message was lost);
- on (re)subscription the in-process caches are cleared, because messages may have been missed.

Without Redis, a bus given a ``log_path`` (the embedded profile: FileSystemCache) tells the processes of this
machine through a :class:`~hatidata_auth.revocation_log.RevocationLog` instead: :meth:`publish` appends to it and
:meth:`local_enabled` first applies what other processes appended since this one last looked (a read of shared
memory per request, a locked read only when something changed), so a revocation is seen by the next request of
every worker. Without Redis or a log (a private SimpleCache) :meth:`local_enabled` is always false and callers
read the database on every request.

A per-process *epoch* is bumped on every eviction; a reader that loaded a value from the shared cache or the
database only stores it in memory if the epoch did not change meanwhile, so a revocation that raced with the
load is never papered over.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .local_cache import LocalCache
from .revocation_log import RevocationLog

log = logging.getLogger(__name__)

CHANNEL = "hatidata:revocations"
KINDS = ("session", "api_key", "all", "policy")
__all__ = ["CHANNEL", "KINDS", "LocalCache", "RevocationBus"]


class RevocationBus:
    """Owns this process's in-process status caches and their Redis pub/sub invalidation."""

    def __init__(self, redis_url: str | None, *, channel: str = CHANNEL, maxsize: int = 10_000,
                 liveness: float = 5.0, ping_interval: float = 1.0, log_path: Path | None = None) -> None:
        self.redis_url = redis_url
        self.log = RevocationLog(log_path) if redis_url is None and log_path is not None else None
        self._log_seen: bytes | None = None
        self._log_lock = threading.Lock()
        self.channel = channel
        self.liveness = liveness
        self.ping_interval = ping_interval
        self.sessions: LocalCache[Any] = LocalCache(maxsize)
        self.api_keys: LocalCache[Any] = LocalCache(maxsize)
        # organization id -> its access policy (services.access_policy); evicted by kind "policy".
        self.policies: LocalCache[Any] = LocalCache(maxsize)
        # Caches of values tied to a session (unsealed cookies), their entries tagged with its id: see follow_sessions.
        self._session_followers: weakref.WeakSet[LocalCache[Any]] = weakref.WeakSet()
        self._epoch = 0
        self._epoch_lock = threading.Lock()
        self._subscribed = False
        self._last_heard = 0.0
        self._pid: int | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._publisher: Any = None
        # Invalidations that could not reach Redis; the listener thread retries them until they do, so a
        # revocation made while this process was cut off from Redis still reaches the others afterwards.
        self._retries: list[Callable[[], object]] = []
        self._retries_lock = threading.Lock()

    # --- state ---------------------------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        """Bumped on every eviction in this process."""
        return self._epoch

    def local_enabled(self) -> bool:
        """Whether in-process entries may be trusted now: subscribed and heard from Redis recently, or (without
        Redis) the revocation log read and applied up to its head."""
        if self.redis_url is None:
            return self.log is not None and self._apply_log()
        self.ensure_started()
        return self._subscribed and time.monotonic() - self._last_heard < self.liveness

    def _apply_log(self) -> bool:
        assert self.log is not None
        try:
            # Unchanged header bytes (magic, seq, generation) of a log whose identity is rechecked every few ms:
            # nothing appended to the live log since. A forked child inherits its parent's caches with this position.
            if self.log.header() == self._log_seen:
                return True
            with self._log_lock:
                header, entries = self.log.read_after(self._log_seen)
                if entries is None:
                    # first look in this process, fell too far behind, or another log: nothing cached is known good
                    self.clear()
                else:
                    for kind, key in entries:
                        self.evict(kind, key)
                self._log_seen = header
            return True
        except OSError as exc:
            log.warning("revocation log %s unreadable, reading the database instead: %s", self.log.path, exc)
            return False

    def wait_until_ready(self, timeout: float = 5.0) -> bool:
        """Block until the subscription is live (tests and start-up); returns whether it is."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.local_enabled():
                return True
            time.sleep(0.01)
        return self.local_enabled()

    def follow_sessions(self, cache: LocalCache[Any]) -> None:
        """Evict *cache*'s entries tagged with a WorkOS session id with that session's status, and all of them
        when every entry is evicted (a missed message); held weakly."""
        self._session_followers.add(cache)

    # --- eviction ------------------------------------------------------------------------------------

    def _bump(self) -> None:
        with self._epoch_lock:
            self._epoch += 1

    def evict(self, kind: str, key: str) -> None:
        """Evict one entry in this process (``kind``: ``session``, ``api_key``, ``policy`` (an organization's
        access policy) or ``all``)."""
        self._bump()
        if kind == "session":
            self.sessions.pop(key)
            for follower in list(self._session_followers):
                follower.pop_tag(key)
        elif kind == "api_key":
            self.api_keys.pop(key)
            self.api_keys.pop_where(lambda v: getattr(v, "key_id", None) == key)
        elif kind == "policy":
            self.policies.pop(key)
        else:
            self.sessions.clear()
            self.api_keys.clear()
            self.policies.clear()
            for follower in list(self._session_followers):
                follower.clear()
        self._bump()

    def clear(self) -> None:
        """Forget every in-process entry."""
        self.evict("all", "*")

    def publish(self, kind: str, key: str) -> bool:
        """Evict here and tell every other process; returns whether the message was published now.

        A message that cannot be published is retried by the listener thread until Redis takes it.
        """
        self.evict(kind, key)
        if self.redis_url is None:
            return self._append_log(kind, key)
        for attempt in range(2):
            try:
                self._send(kind, key)
                return True
            except Exception as exc:  # noqa: BLE001 - Redis errors of any kind
                self._publisher = None
                if attempt:
                    # Processes whose subscription broke with Redis fall back to the database on their own;
                    # those still subscribed learn of it when the retry goes through.
                    log.error("could not publish revocation %s:%s, will retry: %s", kind, key, exc)
                    self.retry_later(lambda: self._send(kind, key))
        return False

    def _append_log(self, kind: str, key: str) -> bool:
        if self.log is None:
            return False
        try:
            self.log.append(kind, key)
        except OSError:
            # The others keep what they cached until its TTL: say so loudly, there is no retry without Redis.
            log.exception("could not append revocation %s:%s to %s", kind, key, self.log.path)
            return False
        return True

    def _send(self, kind: str, key: str) -> None:
        self._publisher_client().publish(self.channel, f"{kind}:{key}")

    def retry_later(self, action: Callable[[], object]) -> None:
        """Run *action* (a Redis write that just failed) again from the listener thread until it succeeds."""
        if self.redis_url is None:
            return
        with self._retries_lock:
            self._retries.append(action)
        self.ensure_started()

    @property
    def pending_retries(self) -> int:
        """How many failed Redis writes are waiting to be retried."""
        return len(self._retries)

    def _flush_retries(self) -> None:
        with self._retries_lock:
            actions, self._retries = self._retries, []
        for index, action in enumerate(actions):
            try:
                action()
            except Exception:  # noqa: BLE001 - still unreachable: keep this and the rest for later
                with self._retries_lock:
                    self._retries[:0] = actions[index:]
                return

    def _publisher_client(self) -> Any:
        if self._publisher is None or self._pid != os.getpid():
            import redis

            self._publisher = redis.Redis.from_url(str(self.redis_url), socket_timeout=2, socket_connect_timeout=2)
        return self._publisher

    # --- the listener thread -----------------------------------------------------------------------------

    def ensure_started(self) -> None:
        """Start the listener thread in this process (again after a fork)."""
        if self.redis_url is None:
            return
        pid = os.getpid()
        if self._pid == pid and self._thread is not None and self._thread.is_alive():
            return
        with self._epoch_lock:
            if self._pid == pid and self._thread is not None and self._thread.is_alive():
                return
            if self._pid != pid:
                # A forked child inherits the parent's memory but not its thread or subscription.
                self.sessions.clear()
                self.api_keys.clear()
                self.policies.clear()
                self._publisher = None
                self._subscribed = False
            self._pid = pid
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="hatidata-revocations", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the listener thread (tests)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=3)
        self._subscribed = False

    def _run(self) -> None:  # noqa: C901 - the listener's reconnect loop; to split with the unit-of-work rework (issue #12, item 3)
        import redis

        backoff = 0.1
        while not self._stop.is_set():
            client = None
            pubsub = None
            try:
                client = redis.Redis.from_url(str(self.redis_url), socket_timeout=self.liveness,
                                              socket_connect_timeout=2)
                pubsub = client.pubsub()
                pubsub.subscribe(self.channel)
                last_ping = 0.0
                while not self._stop.is_set():
                    now = time.monotonic()
                    if now - last_ping >= self.ping_interval:
                        pubsub.ping()
                        last_ping = now
                    if self._retries and self._subscribed:
                        self._flush_retries()
                    message = pubsub.get_message(timeout=self.ping_interval)
                    if message is None:
                        continue
                    self._last_heard = time.monotonic()
                    kind = message.get("type")
                    if kind == "subscribe":
                        # Anything cached before this moment may have missed a revocation.
                        self.clear()
                        self._subscribed = True
                        backoff = 0.1
                    elif kind == "message":
                        self._handle(message.get("data"))
            except Exception as exc:  # noqa: BLE001 - any failure means: not subscribed
                if self._subscribed:
                    log.warning("revocation bus lost its Redis subscription: %s", exc)
                self._subscribed = False
                self.clear()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                self._subscribed = self._subscribed and not self._stop.is_set()
                for closer in (pubsub, client):
                    try:
                        if closer is not None:
                            closer.close()
                    except Exception:  # noqa: BLE001,S110 - best effort on the way out
                        pass

    def _handle(self, data: Any) -> None:
        text = data.decode() if isinstance(data, bytes) else str(data)
        kind, _, key = text.partition(":")
        if kind in KINDS and key:
            self.evict(kind, key)
