"""The in-process caches' container: a bounded LRU with a deadline per entry, optionally renewed on a hit."""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")

# (deadline, value, renew, until, tag): renew 0 means never renewed; until bounds every renewal.
_Entry = tuple[float, V, float, float, Hashable | None]


class LocalCache(Generic[V]):
    """A bounded, thread-safe, in-process LRU with a deadline per entry (``time.monotonic()`` seconds).

    An entry stored with ``renew=R`` is renewed by a hit that finds less than ``R / 2`` seconds left: its deadline
    moves to ``now + R``, never past the entry's ``until``. The renewal happens under the lock the hit takes
    anyway, on the entry found, so it costs no extra lock and can never bring back an entry popped meanwhile.
    An entry stored with a ``tag`` is also removed by :meth:`pop_tag` of that tag.
    """

    def __init__(self, maxsize: int = 10_000) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[Hashable, _Entry[V]] = OrderedDict()
        self._tags: dict[Hashable, set[Hashable]] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, now: float | None = None) -> V | None:
        """The live value under *key* (now the most recently used entry, renewed if due), or ``None``."""
        with self._lock:
            item = self._data.get(key)
            if item is None:
                return None
            if now is None:
                now = time.monotonic()
            deadline, value, renew, until, tag = item
            if deadline <= now:
                self._forget(key, tag)
                return None
            if 2 * (deadline - now) < renew and deadline < until:
                self._data[key] = (min(now + renew, until), value, renew, until, tag)
            # a hit makes the entry the last to be evicted: hot sessions stay cached under churn (LRU, not FIFO)
            self._data.move_to_end(key)
            return value

    def set(self, key: Hashable, value: V, deadline: float, *, renew: float = 0.0, until: float = math.inf,
            tag: Hashable | None = None) -> None:
        """Store *value* until *deadline* (monotonic seconds), renewed by hits for *renew* seconds at a time up to
        *until* (see the class), under *tag*; evicts the least recently used entries beyond ``maxsize``."""
        with self._lock:
            old = self._data.get(key)
            if old is not None and old[4] is not None:
                self._untag(key, old[4])
            self._data[key] = (min(deadline, until), value, renew, until, tag)
            self._data.move_to_end(key)
            if tag is not None:
                self._tags.setdefault(tag, set()).add(key)
            while len(self._data) > self.maxsize:
                oldest, item = self._data.popitem(last=False)
                if item[4] is not None:
                    self._untag(oldest, item[4])

    def replace(self, key: Hashable, old: V, value: V, deadline: float, *, renew: float = 0.0,
                until: float = math.inf) -> bool:
        """Store *value* as :meth:`set` does (keeping the entry's tag), only if the live entry under *key* still holds
        *old*; returns whether it did. For a value derived from one read earlier: an eviction since (the entry gone,
        or reloaded as another value) must not be undone."""
        with self._lock:
            item = self._data.get(key)
            if item is None or item[1] != old:
                return False
            self._data[key] = (min(deadline, until), value, renew, until, item[4])
            self._data.move_to_end(key)
            return True

    def pop(self, key: Hashable) -> V | None:
        """Remove and return the value under *key*."""
        with self._lock:
            item = self._data.get(key)
            if item is None:
                return None
            self._forget(key, item[4])
        return item[1]

    def pop_tag(self, tag: Hashable) -> int:
        """Remove every entry stored under *tag*; returns how many."""
        with self._lock:
            keys = self._tags.pop(tag, ())
            for key in keys:
                self._data.pop(key, None)
        return len(keys)

    def pop_where(self, predicate: Callable[[V], bool]) -> int:
        """Remove every entry whose value matches; returns how many."""
        with self._lock:
            keys = [(k, item[4]) for k, item in self._data.items() if predicate(item[1])]
            for key, tag in keys:
                self._forget(key, tag)
        return len(keys)

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._data.clear()
            self._tags.clear()

    def deadline(self, key: Hashable) -> float | None:
        """When the entry under *key* expires unless renewed (monotonic seconds); ``None`` if absent."""
        item = self._data.get(key)
        return None if item is None else item[0]

    def __len__(self) -> int:
        return len(self._data)

    def _forget(self, key: Hashable, tag: Hashable | None) -> None:
        del self._data[key]
        if tag is not None:
            self._untag(key, tag)

    def _untag(self, key: Hashable, tag: Hashable) -> None:
        keys = self._tags.get(tag)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._tags[tag]
