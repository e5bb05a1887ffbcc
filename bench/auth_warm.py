"""Warm every gunicorn worker with every credential exactly once, and read how many sessions each one holds.

Requests sent to gunicorn's socket land on whichever worker accepts first, so warming by sending each credential
``k`` times at random is both costly (``k x N`` requests) and never sure (a session some worker has not seen is
loaded from the database during the measure instead). Instead, under ``bench/auth_gunicorn.py`` each worker also
listens on a private port of its own (written to ``<folder>/<pid>.port``), on a thread that takes batches of the
bench's raw requests and runs each one through the worker's WSGI app, the same app and in-process caches gunicorn's
loop serves: ``N x workers`` requests in all, every worker verifiably warm. The thread waits on ``accept`` while the
bench measures through gunicorn's socket.

The same listener reports its in-process caches' live entries (session statuses, unsealed cookies, verified
tokens), so the bench can show that every worker still holds every session after the measure, and the time the
worker's cyclic garbage collector has spent so far per generation (a ``gc.callbacks`` clock installed with the
listener): a full collection walks every tracked object, so with many sessions cached it is a pause of its own.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

BATCH = 1000  # requests per frame
CONNECTIONS = 3  # connections per worker at once


def _send(sock: socket.socket, payload: Any) -> None:
    data = json.dumps(payload).encode()
    sock.sendall(struct.pack("!I", len(data)) + data)


def _receive(sock: socket.socket) -> Any:
    head = _read(sock, 4)
    if not head:
        return None
    return json.loads(_read(sock, struct.unpack("!I", head)[0]))


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return b""
        data += chunk
    return data


# --- in the worker ---------------------------------------------------------------------------------------------


class _GcClock:
    """Collections and seconds spent in them per generation (0, 1, 2), from ``gc.callbacks``."""

    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        took = time.perf_counter() - self._started
        self.collections[info["generation"]] += 1
        self.seconds[info["generation"]] += took

    def read(self) -> dict[str, Any]:
        return {"collections": list(self.collections), "seconds": list(self.seconds)}


_GC_CLOCK = _GcClock()


def listen(app: Any, folder: str) -> None:
    """Serve warm-ups and cache counts for *app* (this worker's) on a private port, noted under *folder*, until
    :func:`stop` (or the process ends); clock the worker's garbage collections from now on."""
    if _GC_CLOCK not in gc.callbacks:
        gc.callbacks.append(_GC_CLOCK)
    server = socket.create_server(("127.0.0.1", 0))
    note = Path(folder) / f"{os.getpid()}.port"
    note.with_suffix(".tmp").write_text(str(server.getsockname()[1]))
    note.with_suffix(".tmp").replace(note)
    threading.Thread(target=_serve, args=(app, server), name="bench-warm", daemon=True).start()


def _serve(app: Any, server: socket.socket) -> None:
    stopping = threading.Event()
    with server:
        while not stopping.is_set():
            conn, _ = server.accept()
            threading.Thread(target=_answer, args=(app, conn, stopping), name="bench-warm-conn", daemon=True).start()


def _answer(app: Any, conn: socket.socket, stopping: threading.Event) -> None:
    with conn:
        while (message := _receive(conn)) is not None:
            if "stop" in message:
                stopping.set()
                _send(conn, {"stopping": True})
                return
            if "raws" in message:
                statuses = Counter(_run(app, raw) for raw in message["raws"])
                _send(conn, {"statuses": dict(statuses)})
            elif "gc" in message:  # around every measured phase: no walk over the caches, no lock of theirs
                _send(conn, {"gc": _GC_CLOCK.read()})
            else:
                _send(conn, {"pid": os.getpid(), "live": live_entries(app), "cpu": time.process_time()})


def _run(app: Any, raw: str) -> int:
    """The status *app* answers the raw HTTP request *raw* with, called as gunicorn calls it (a WSGI call)."""
    from werkzeug.test import EnvironBuilder, run_wsgi_app

    head = raw.split("\r\n\r\n", 1)[0].split("\r\n")
    method, target, _ = head[0].split(" ", 2)
    headers = [(name, value) for name, _, value in (line.partition(": ") for line in head[1:])]
    environ = EnvironBuilder(method=method, path=target, headers=headers, base_url="http://127.0.0.1/",
                             environ_overrides={"REMOTE_ADDR": "127.0.0.1"}).get_environ()
    _, status, _ = run_wsgi_app(app, environ, buffered=True)
    return int(status.split(" ", 1)[0])


def live_entries(app: Any) -> dict[str, int]:
    """Live (unexpired) entries of this process's session status, unsealed-cookie, verified-token and identity
    (the memo: one per cookie and one per token) caches."""
    runtime = app.extensions["hatidata_auth"]
    caches = {"status": runtime.bus.sessions, "unsealed": runtime.cookies.unsealed,
              "verified": runtime.verifier.cache, "identities": runtime.identities.cache}
    now = time.monotonic()
    counts = {}
    for name, cache in caches.items():
        with cache._lock:  # a bench probe of LocalCache's entries: (deadline, value, renew, until, tag)
            counts[name] = sum(1 for entry in cache._data.values() if entry[0] > now)
    return counts


# --- in the bench ----------------------------------------------------------------------------------------------


def worker_ports(folder: Path, workers: int, timeout: float = 30.0) -> list[int]:
    """The private ports of the *workers* gunicorn workers, once all have noted theirs."""
    deadline = time.monotonic() + timeout
    while len(notes := sorted(folder.glob("*.port"))) < workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(notes)} of {workers} workers noted a warm-up port under {folder}")
        time.sleep(0.1)
    if len(notes) > workers:
        raise RuntimeError(f"{len(notes)} warm-up ports for {workers} workers: a worker was restarted")
    return [int(note.read_text()) for note in notes]


def warm_workers(ports: Sequence[int], raws: Sequence[bytes], connections: int = CONNECTIONS
                 ) -> tuple[Counter[int], list[float]]:
    """Run every request of *raws* once in every worker: the statuses answered over all workers, and the CPU
    seconds each worker process spent meanwhile (all its threads, the app's background ones included).

    The requests go in batches of :data:`BATCH`, each worker taking them over *connections* connections at once
    (the first sight of a session waits on the database and the shared cache). Batch by batch the workers take
    turns: one runs the batch first, the next once that one is done, and so on, the first one changing from one
    batch to the next. A session's status is then loaded from the database by one worker, and the others find it
    in the shared cache where that one kept it (the app's own path for a session another worker loaded first),
    instead of every worker loading it at once."""
    texts = [raw.decode("latin-1") for raw in raws]
    frames = [texts[offset:offset + BATCH] for offset in range(0, len(texts), BATCH)]
    workers = len(ports)
    done = [[threading.Event() for _ in ports] for _ in frames]  # done[frame][turn]
    before = [_probe(port)["cpu"] for port in ports]

    def one(worker: int, stripe: int) -> Counter[int]:
        found: Counter[int] = Counter()
        with socket.create_connection(("127.0.0.1", ports[worker])) as sock:
            for index in range(stripe, len(frames), connections):
                turn = (worker - index) % workers
                if turn:
                    done[index][turn - 1].wait()
                _send(sock, {"raws": frames[index]})
                found.update({int(k): v for k, v in _receive(sock)["statuses"].items()})
                done[index][turn].set()
        return found

    total: Counter[int] = Counter()
    jobs = [(worker, stripe) for worker in range(workers) for stripe in range(connections)]
    with ThreadPoolExecutor(len(jobs)) as pool:
        for found in pool.map(lambda job: one(*job), jobs):
            total.update(found)
    return total, [_probe(port)["cpu"] - start for port, start in zip(ports, before, strict=True)]


def _probe(port: int, ask: str = "live") -> dict[str, Any]:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        _send(sock, {ask: True})
        answer: dict[str, Any] = _receive(sock)
        return answer


def live_counts(ports: Sequence[int]) -> list[dict[str, int]]:
    """Each worker's live cache entries (see :func:`live_entries`)."""
    return [_probe(port)["live"] for port in ports]


def gc_clocks(ports: Sequence[int]) -> list[dict[str, Any]]:
    """Each worker's garbage collections so far: ``collections`` and ``seconds`` per generation."""
    return [_probe(port, "gc")["gc"] for port in ports]


def stop(port: int) -> None:
    """End the listener on *port* (a second connection wakes its ``accept`` to see it is stopping)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        _send(sock, {"stop": True})
        _receive(sock)
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
        pass  # refused or reset: the listener saw it was stopping and is gone already
