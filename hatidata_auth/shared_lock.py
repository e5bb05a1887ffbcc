"""Short exclusive locks shared by every process (and instance) that shares the app's cache.

The lock lives where the cache lives, so it reaches exactly as far as the cached values it protects:

- ``RedisCache``: ``SET key token NX PX ttl`` in the cache's Redis, released only by its holder (a compare
  and delete); a holder that dies frees the lock when the TTL runs out. Every instance on that Redis shares it.
- ``FileSystemCache``: ``flock`` on one of 256 lock files next to the cache folder; the kernel frees the lock
  of a process that dies. Every process on the machine that uses that folder shares it.
- any other cache (``SimpleCache`` in tests): one of 256 ``threading.Lock`` of this process, as far as such
  a cache is shared anyway.

When Redis or the lock folder cannot be reached, the lock degrades to this process's lock (logged).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STRIPES = 256
_POLL_SECONDS = 0.02
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"

Release = Callable[[], None]


def _stripe(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") % STRIPES


class SharedLocks:
    """``with locks.hold(key, ttl=seconds, wait=seconds) as held:`` (``held`` is False once *wait* ran out).

    *backend* returns the app's cache backend (looked up lazily: the cache is bound after the runtime).
    """

    def __init__(self, backend: Callable[[], Any]) -> None:
        self._backend = backend
        self._local = [threading.Lock() for _ in range(STRIPES)]

    @contextlib.contextmanager
    def hold(self, key: str, *, ttl: float, wait: float) -> Iterator[bool]:
        """Hold the lock named *key* for the block, waiting up to *wait* s for it; on Redis a holder keeps it
        at most *ttl* s (then another may take it)."""
        try:
            release = self._acquire(key, ttl, wait)
        except Exception as exc:  # noqa: BLE001 - a store that is down degrades to this process's lock
            log.warning("shared lock store unavailable (%s); using a per-process lock", type(exc).__name__)
            release = self._acquire_local(key, wait)
        try:
            yield release is not None
        finally:
            if release is not None:
                release()

    def _acquire(self, key: str, ttl: float, wait: float) -> Release | None:
        backend = self._backend()
        client = getattr(backend, "_write_client", None)  # cachelib's RedisCache: the client it writes with
        if client is not None:
            return self._acquire_redis(client, f"{backend._get_prefix()}lock:{key}", ttl, wait)
        if isinstance(getattr(backend, "_path", None), str):  # cachelib's FileSystemCache
            return self._acquire_file(Path(backend._path), key, wait)
        return self._acquire_local(key, wait)

    def _acquire_local(self, key: str, wait: float) -> Release | None:
        lock = self._local[_stripe(key)]
        return lock.release if lock.acquire(timeout=wait) else None

    @staticmethod
    def _acquire_redis(client: Any, name: str, ttl: float, wait: float) -> Release | None:
        token = secrets.token_hex(16)
        deadline = time.monotonic() + wait
        while not client.set(name, token, nx=True, px=max(1, int(ttl * 1000))):
            if time.monotonic() >= deadline:
                return None
            time.sleep(_POLL_SECONDS)

        def release() -> None:
            with contextlib.suppress(Exception):  # the TTL frees it anyway
                client.eval(_RELEASE, 1, name, token)

        return release

    @staticmethod
    def _acquire_file(cache_dir: Path, key: str, wait: float) -> Release | None:
        # Next to the cache folder, not inside it: the cache counts and prunes every file of its folder.
        folder = cache_dir.with_name(cache_dir.name + "-locks")
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / f"{_stripe(key):03d}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(_POLL_SECONDS)
                    continue
                os.close(fd)
                return None
            except BaseException:
                os.close(fd)
                raise
            return lambda: os.close(fd)  # closing the descriptor releases the flock
