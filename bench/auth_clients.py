"""The load generator of ``bench.auth``: closed-loop client processes whose own cost does not grow with the sessions.

Each phase used to fork its clients from the bench's process, which by then held every session's credentials and
an in-process app: with 100,000 sessions each child inherited that heap and touched objects of it (a reference
count is a write, so a copied page), and its CPU per cookie request more than doubled from 100 to 100,000 sessions
(0.152 → 0.383 ms, 2026-12-07) on the two cores it shares with the workers.

Here the clients are spawned once, before any credential exists, and each phase's requests are a file the clients
map (:func:`write_requests`): a request is a slice of the mapping, read when sent, as a client on another machine
would read the bytes it sends. Their CPU is read from ``/proc`` before and after each phase; the mapping (and its
first read of every page) is done before the phase starts, so the first phase of a file does not count it.
"""

from __future__ import annotations

import contextlib
import mmap
import multiprocessing as mp
import os
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench.auth_setup import request
from bench.dsync_bench import cpu_seconds

_OFFSET = struct.Struct("=Q")  # native: the file is read on the machine that wrote it, as ``memoryview.cast`` does
_GONE_AFTER = 50
"""Consecutive requests without an HTTP answer (refused, reset, timed out) after which a client gives up: the server
is gone. Fewer are counted as failed answers (a connection reset under load is an answer that failed, not the
end of the run)."""


def write_requests(path: Path, raws: Sequence[bytes]) -> Path:
    """Write *raws* to *path* (the requests, back to back) and their offsets to ``path.offsets`` (native 64-bit, one
    more than the requests: the end). Returns *path*; raises ``ValueError`` for no request (a client cycles over
    them)."""
    if not raws:
        raise ValueError(f"no request to write to {path}")
    offsets = bytearray()
    position = 0
    with path.open("wb") as out:
        for data in raws:
            offsets += _OFFSET.pack(position)
            out.write(data)
            position += len(data)
    offsets += _OFFSET.pack(position)
    path.with_suffix(".offsets").write_bytes(bytes(offsets))
    return path


class _Requests:
    """The requests of a file from :func:`write_requests`, mapped read-only; ``identity``: the file's inode,
    modification time and size when mapped (a file written again has another)."""

    def __init__(self, path: str) -> None:
        with open(path, "rb") as body:
            self.identity = _identity(os.fstat(body.fileno()))
            self.data = mmap.mmap(body.fileno(), 0, access=mmap.ACCESS_READ)
        self.offsets = memoryview(Path(path).with_suffix(".offsets").read_bytes()).cast("Q")
        self.count = len(self.offsets) - 1

    def __getitem__(self, index: int) -> bytes:
        return self.data[self.offsets[index]:self.offsets[index + 1]]

    def touch(self) -> None:
        """Read one byte of every page, so that the page faults of a first read fall outside a timed phase."""
        sum(self.data[offset] for offset in range(0, len(self.data), mmap.PAGESIZE))


def _identity(stat: os.stat_result) -> tuple[int, int, int]:
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


def _mapped(mapped: dict[str, _Requests], path: str, count: int) -> _Requests:
    """*path*'s requests, mapped (and every page read) unless they are already; a file written again since it was
    mapped (another inode, modification time or size: a mapping keeps the old bytes or size, and the old offsets) is
    mapped again. Raises ``RuntimeError`` when it does not hold *count* requests."""
    requests = mapped.get(path)
    if requests is None or requests.identity != _identity(os.stat(path)):
        requests = mapped[path] = _Requests(path)
        requests.touch()
    if requests.count != count:
        raise RuntimeError(f"{path} holds {requests.count} requests, not {count}")
    return requests


def _send(port: int, requests: _Requests, first: int, duration: float) -> tuple[int, int]:
    """Send *requests* one after another from *first* on (cycling) for *duration* seconds: ``(2xx answers,
    others)``, a request without an HTTP answer counted among the others. Raises ``ConnectionError`` after
    :data:`_GONE_AFTER` of those in a row."""
    deadline = time.monotonic() + duration
    ok = bad = unanswered = 0
    index = first % requests.count
    while time.monotonic() < deadline:
        try:
            status = request(port, requests[index])
        except OSError:
            status = 0
        ok, bad = (ok + 1, bad) if status == 200 else (ok, bad + 1)
        unanswered = unanswered + 1 if status == 0 else 0
        if unanswered >= _GONE_AFTER:
            raise ConnectionError(f"no HTTP answer from port {port} to {unanswered} requests in a row")
        index = index + 1 if index + 1 < requests.count else 0
    return ok, bad


def _client(conn: Connection) -> None:
    """A client process. For each ``("map", path, count)`` it receives, maps the file (:func:`_mapped`) and answers
    ``None``; for each ``("run", port, path, count, first, duration)``, sends the file's requests (:func:`_send`) and
    answers ``(2xx answers, others)``. It ends on ``None``, or on an error (the caller's ``recv`` then raises)."""
    mapped: dict[str, _Requests] = {}
    while (job := conn.recv()) is not None:
        if job[0] == "map":
            _mapped(mapped, job[1], job[2])
            conn.send(None)
        else:
            _kind, port, path, count, first, duration = job
            conn.send(_send(port, _mapped(mapped, path, count), first, duration))


@dataclass(frozen=True, slots=True)
class Load:
    """One phase: answers (2xx and not), its wall-clock seconds and the clients' CPU seconds."""

    ok: int
    bad: int
    elapsed: float
    cpu: float


class Clients:
    """*count* client processes, spawned at once (so none inherits the caller's heap) and kept until
    :meth:`close`."""

    def __init__(self, count: int) -> None:
        context = mp.get_context("spawn")
        self._broken = False
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        for _ in range(count):
            mine, theirs = context.Pipe()
            process = context.Process(target=_client, args=(theirs,), daemon=True)
            process.start()
            theirs.close()
            self._conns.append(mine)
            self._procs.append(process)

    def run(self, port: int, path: Path, count: int, duration: float) -> Load:
        """Every client sends the *count* requests of *path* (all it holds) to *port* for *duration* seconds, each
        starting at its own share of the file. Raises what a client's end raises (``EOFError``: it died); the
        clients are then of no further use (another phase's answers could be read as this one's)."""
        if self._broken:
            raise RuntimeError("a client failed in an earlier phase: start new clients")
        self._broken = True
        load = self._run(port, path, count, duration)
        self._broken = False
        return load

    def _run(self, port: int, path: Path, count: int, duration: float) -> Load:
        step = max(1, count // len(self._conns))
        for conn in self._conns:  # mapped and read before the phase: not counted in its time or CPU
            conn.send(("map", str(path), count))
        for conn in self._conns:
            conn.recv()
        before = sum(cpu_seconds(p.pid) for p in self._procs)
        started = time.monotonic()
        for index, conn in enumerate(self._conns):
            conn.send(("run", port, str(path), count, index * step, duration))
        answers = [conn.recv() for conn in self._conns]
        elapsed = time.monotonic() - started
        cpu = sum(cpu_seconds(p.pid) for p in self._procs) - before
        return Load(sum(a[0] for a in answers), sum(a[1] for a in answers), elapsed, cpu)

    def close(self) -> None:
        """End the clients (one that died already, e.g. refused by the server, is only reaped)."""
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.send(None)
        for process in self._procs:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
