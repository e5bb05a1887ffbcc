"""A machine-wide revocation log: the embedded profile's (no Redis) way to tell every process of an eviction.

One memory-mapped file, next to the file cache's folder (so it reaches exactly the processes that share that
cache), holds a sequence number and a ring of the last :data:`SLOTS` evictions (``kind``, ``key``). A process
appends under an exclusive ``flock``; readers compare the sequence number with the last one they saw, which is a
read of 8 bytes of shared memory (no system call), and only on a change read the new entries under a shared
``flock``. A reader that fell more than :data:`SLOTS` entries behind cannot know what it missed and is told to
forget everything.

The fast path fails closed: a reader that cannot prove it reads the live log forgets everything and re-opens it.
Every (re)creation writes a random *generation* into the header, and readers compare the whole header (magic,
seq, generation) with the one they last saw, so a log recreated in place is noticed whatever its new count; at
most every :data:`IDENTITY_INTERVAL` seconds, and always before a locked read or an append, the path is checked to
still name the mapped file (``st_ino``/``st_dev``, size, magic), so a removed or replaced log is re-opened. A
mapped file is never shrunk (that would SIGBUS its readers): a foreign or resized file is replaced by a new one
renamed over it, under the old one's exclusive ``flock``.

Layout (little-endian): ``magic`` (8 bytes), ``seq`` (u64: entries ever appended), ``generation`` (8 random
bytes), then :data:`SLOTS` slots of :data:`SLOT_SIZE` bytes: ``kind`` (u8: 0 session, 1 api_key, 2 all),
``length`` (u8), the key's UTF-8 bytes.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

MAGIC = b"HDREVLG2"
SLOTS = 4096
SLOT_SIZE = 128
HEADER = 24
MAX_KEY = SLOT_SIZE - 2
KINDS = ("session", "api_key", "all", "policy")
_SEQ = struct.Struct("<Q")
_GENERATION = slice(16, 24)
IDENTITY_INTERVAL = 0.002
"""Seconds between two checks, on the unlocked fast path, that the path still names the mapped file."""

Entries = list[tuple[str, str]]


class RevocationLog:
    """``append(kind, key)`` in one process; ``header()`` / ``read_since(seq, generation)`` in every other.

    The file is (re)opened lazily in each process, so a forked worker gets its own descriptor (an inherited one
    would share the parent's ``flock``), and again whenever the path no longer names it. Raises ``OSError`` when
    the file cannot be opened or mapped.
    """

    def __init__(self, path: Path, *, slots: int = SLOTS) -> None:
        self.path = path
        self.slots = slots
        self.size = HEADER + slots * SLOT_SIZE
        self._pid: int | None = None
        self._fd = -1
        self._map: mmap.mmap | None = None
        self._identity: tuple[int, int] = (0, 0)
        self._checked = 0.0
        # descriptors of replaced files: another thread may still hold their flock, so they close with the log
        self._retired: list[int] = []
        self._lock = threading.Lock()

    def _mapped(self, *, verify: bool = False) -> mmap.mmap:
        mapped = self._map
        if mapped is not None and self._pid == os.getpid():
            now = time.monotonic()
            if not verify and now - self._checked < IDENTITY_INTERVAL:
                return mapped
            self._checked = now
            if self._is_live():
                return mapped
        with self._lock:
            if self._map is None or self._pid != os.getpid() or not self._is_live():
                self._open()
            assert self._map is not None
            return self._map

    def _is_live(self) -> bool:
        """Whether the path still names the mapped file, at full size and with our magic."""
        try:
            live = os.stat(self.path)
            own = os.fstat(self._fd)
        except OSError:
            return False
        return ((live.st_ino, live.st_dev) == self._identity and own.st_size == self.size
                and self._map is not None and self._map[:len(MAGIC)] == MAGIC)

    def _open(self) -> None:
        if self._map is not None and self._pid == os.getpid():
            self._retired.append(self._fd)
        self._map, self._fd, self._pid = None, -1, None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                own = os.fstat(fd)
                try:
                    live = os.stat(self.path)
                except FileNotFoundError:
                    live = None
                if live is None or (live.st_ino, live.st_dev) != (own.st_ino, own.st_dev):
                    os.close(fd)  # replaced while we waited for its lock: open the new one
                    continue
                if own.st_size != self.size or os.pread(fd, len(MAGIC), 0) != MAGIC:
                    self._replace()  # under this file's lock, so one process replaces it and the others follow
                    os.close(fd)
                    continue
                fcntl.flock(fd, fcntl.LOCK_UN)
                mapped = mmap.mmap(fd, self.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.close(fd)
                raise
            self._fd, self._map, self._pid = fd, mapped, os.getpid()
            self._identity, self._checked = (own.st_ino, own.st_dev), time.monotonic()
            return

    def _replace(self) -> None:
        """A new, zeroed log with a fresh generation, renamed over the path (never truncate a mapped file)."""
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.{os.urandom(4).hex()}")
        fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, self.size)
            os.pwrite(fd, MAGIC + _SEQ.pack(0) + os.urandom(8), 0)
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _flock(self, mode: int) -> Iterator[mmap.mmap]:
        while True:
            mapped = self._mapped()
            fd = self._fd
            fcntl.flock(fd, mode)
            try:
                if self._map is mapped and self._is_live():
                    yield mapped
                    return
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
            with self._lock:
                if self._map is mapped:
                    self._open()

    def header(self) -> bytes:
        """The header as it is now (magic, seq, generation): unchanged bytes mean nothing was appended to the
        same live log. Unlocked: a torn read only sends the caller to :meth:`read_since`."""
        return self._mapped()[:HEADER]

    def head(self) -> int:
        """The number of entries ever appended (unlocked, see :meth:`header`)."""
        return int(_SEQ.unpack_from(self.header(), len(MAGIC))[0])

    def append(self, kind: str, key: str) -> int:
        """Record an eviction (a key longer than :data:`MAX_KEY` bytes is recorded as ``all``) in the live log;
        returns the new sequence number."""
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

    def read_since(self, seen: int, generation: bytes | None = None) -> tuple[int, Entries | None]:
        """``(head, entries appended after *seen*)`` of the live log; entries ``None`` when some were already
        overwritten, *seen* is ahead of the log, or *generation* (the header's last 8 bytes, see :meth:`header`)
        is not the live log's: the caller must forget everything it cached."""
        header, entries = self._read(seen, generation)
        return int(_SEQ.unpack_from(header, len(MAGIC))[0]), entries

    def read_after(self, seen: bytes | None) -> tuple[bytes, Entries | None]:
        """:meth:`read_since` from a :meth:`header` seen earlier (``None``: never looked, entries ``None``);
        returns the header read up to, to pass next time."""
        if seen is None:
            return self._read(0, b"")[0], None
        return self._read(int(_SEQ.unpack_from(seen, len(MAGIC))[0]), seen[_GENERATION])

    def _read(self, seen: int, generation: bytes | None) -> tuple[bytes, Entries | None]:
        with self._flock(fcntl.LOCK_SH) as mapped:
            header = mapped[:HEADER]
            head = int(_SEQ.unpack_from(header, len(MAGIC))[0])
            if generation is not None and generation != header[_GENERATION]:
                return header, None
            if seen > head or head - seen > self.slots:
                return header, None
            entries: Entries = []
            for seq in range(seen, head):
                offset = HEADER + (seq % self.slots) * SLOT_SIZE
                kind, length = mapped[offset], mapped[offset + 1]
                if kind >= len(KINDS):
                    return header, None
                entries.append((KINDS[kind], mapped[offset + 2:offset + 2 + length].decode(errors="replace")))
            return header, entries

    def close(self) -> None:
        """Unmap and close (tests)."""
        with self._lock:
            if self._map is not None and self._pid == os.getpid():
                self._map.close()
                os.close(self._fd)
                for fd in self._retired:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self._map, self._fd, self._pid, self._retired = None, -1, None, []
