"""A machine-wide revocation log: the embedded profile's (no Redis) way to tell every process of an eviction.

One memory-mapped file, next to the file cache's folder (so it reaches exactly the processes that share that
cache), holds a sequence number and a ring of the last :data:`SLOTS` evictions (``kind``, ``key``). A process
appends under an exclusive ``flock``; readers compare the sequence number with the last one they saw, which is a
read of 8 bytes of shared memory (no system call), and only on a change read the new entries under a shared
``flock``. A reader that fell more than :data:`SLOTS` entries behind cannot know what it missed and is told to
forget everything.

Layout (little-endian): ``magic`` (8 bytes), ``seq`` (u64: entries ever appended), then :data:`SLOTS` slots of
:data:`SLOT_SIZE` bytes: ``kind`` (u8: 0 session, 1 api_key, 2 all), ``length`` (u8), the key's UTF-8 bytes.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

MAGIC = b"HDREVLG1"
SLOTS = 4096
SLOT_SIZE = 128
HEADER = 16
MAX_KEY = SLOT_SIZE - 2
KINDS = ("session", "api_key", "all")
_SEQ = struct.Struct("<Q")

Entries = list[tuple[str, str]]


class RevocationLog:
    """``append(kind, key)`` in one process; ``head()`` / ``read_since(seq)`` in every other.

    The file is (re)opened lazily in each process, so a forked worker gets its own descriptor (an inherited one
    would share the parent's ``flock``). Raises ``OSError`` when the file cannot be opened or mapped.
    """

    def __init__(self, path: Path, *, slots: int = SLOTS) -> None:
        self.path = path
        self.slots = slots
        self.size = HEADER + slots * SLOT_SIZE
        self._pid: int | None = None
        self._fd = -1
        self._map: mmap.mmap | None = None
        self._lock = threading.Lock()

    def _mapped(self) -> mmap.mmap:
        if self._map is not None and self._pid == os.getpid():
            return self._map
        with self._lock:
            if self._map is None or self._pid != os.getpid():
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    if os.fstat(fd).st_size != self.size or os.pread(fd, len(MAGIC), 0) != MAGIC:
                        os.ftruncate(fd, 0)  # a foreign, truncated or resized file starts over, zeroed
                        os.ftruncate(fd, self.size)
                        os.pwrite(fd, MAGIC, 0)
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    mapped = mmap.mmap(fd, self.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
                except BaseException:
                    os.close(fd)
                    raise
                self._fd, self._map, self._pid = fd, mapped, os.getpid()
        return self._map

    @contextlib.contextmanager
    def _flock(self, mode: int) -> Iterator[mmap.mmap]:
        mapped = self._mapped()
        fcntl.flock(self._fd, mode)
        try:
            yield mapped
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def head(self) -> int:
        """The number of entries ever appended (unlocked: a torn read only sends the caller to
        :meth:`read_since`, which reads under the lock)."""
        return int(_SEQ.unpack_from(self._mapped(), len(MAGIC))[0])

    def append(self, kind: str, key: str) -> int:
        """Record an eviction (a key longer than :data:`MAX_KEY` bytes is recorded as ``all``); returns the new
        sequence number."""
        data = key.encode()
        if kind not in KINDS or len(data) > MAX_KEY:
            kind, data = "all", b"*"
        with self._flock(fcntl.LOCK_EX) as mapped:
            seq = int(_SEQ.unpack_from(mapped, len(MAGIC))[0])
            offset = HEADER + (seq % self.slots) * SLOT_SIZE
            mapped[offset:offset + 2 + len(data)] = bytes((KINDS.index(kind), len(data))) + data
            # the slot first, then the sequence number that makes it visible
            _SEQ.pack_into(mapped, len(MAGIC), seq + 1)
            return seq + 1

    def read_since(self, seen: int) -> tuple[int, Entries | None]:
        """``(head, entries appended after *seen*)``; entries ``None`` when some were already overwritten (or
        *seen* is ahead of the log, e.g. a recreated file): the caller must forget everything it cached."""
        with self._flock(fcntl.LOCK_SH) as mapped:
            head = int(_SEQ.unpack_from(mapped, len(MAGIC))[0])
            if seen > head or head - seen > self.slots:
                return head, None
            entries: Entries = []
            for seq in range(seen, head):
                offset = HEADER + (seq % self.slots) * SLOT_SIZE
                kind, length = mapped[offset], mapped[offset + 1]
                if kind >= len(KINDS):
                    return head, None
                entries.append((KINDS[kind], mapped[offset + 2:offset + 2 + length].decode(errors="replace")))
            return head, entries

    def close(self) -> None:
        """Unmap and close (tests)."""
        with self._lock:
            if self._map is not None and self._pid == os.getpid():
                self._map.close()
                os.close(self._fd)
            self._map, self._fd, self._pid = None, -1, None
