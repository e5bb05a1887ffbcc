"""``bench.auth``'s load generator (``bench/auth_clients.py``): spawned clients send the requests of a file, each
one as written, cycling over them from their own share, and the phase's answers and CPU are counted."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections import Counter
from pathlib import Path

import pytest

from bench.auth_clients import Clients, _Requests, write_requests
from bench.auth_setup import raw


def _closed_port() -> int:
    """A port nothing listens on (bound a moment, then let go)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _Server:
    """A raw HTTP server counting each path it is asked for in *seen*: 401 for ``/r/refused``; for ``/r/dropped`` it
    closes the connection without an answer, for ``/r/reset`` it resets it (a zero linger, no shutdown first: the
    client's read fails); 200 for any other."""

    def __init__(self, seen: Counter[str]) -> None:
        self.seen, self.lock = seen, threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):  # the listener closed: the test is over
            while True:
                conn, _ = self.listener.accept()
                threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data and (chunk := conn.recv(65536)):
            data += chunk
        path = data.split(b" ", 2)[1].decode()
        with self.lock:
            self.seen[path] += 1
        if path == "/r/reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif path != "/r/dropped":
            status = b"401 Unauthorized" if path == "/r/refused" else b"200 OK"
            conn.sendall(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        conn.close()

    def shutdown(self) -> None:
        self.listener.close()


def test_the_file_gives_back_each_request_as_written(tmp_path: Path) -> None:
    raws = [raw(f"/r/{index}", cookie="c" * index) for index in range(50)]
    requests = _Requests(str(write_requests(tmp_path / "kind.requests", raws)))
    assert requests.count == len(raws)
    assert [requests[index] for index in range(len(raws))] == raws


def test_clients_send_every_request_and_count_the_answers(tmp_path: Path) -> None:
    seen: Counter[str] = Counter()
    server = _Server(seen)
    clients = Clients(2)
    try:
        paths = [f"/r/{index}" for index in range(6)] + ["/r/refused"]
        path = write_requests(tmp_path / "kind.requests", [raw(p) for p in paths])
        load = clients.run(server.port, path, len(paths), 0.5)
        assert set(seen) == set(paths)  # two clients, each from its own share, cycling: every request went out
        assert load.ok + load.bad == sum(seen.values())
        assert load.bad == seen["/r/refused"] > 0
        assert load.elapsed >= 0.5
        assert load.cpu > 0
    finally:
        clients.close()
        server.shutdown()


def test_a_connection_closed_or_reset_without_an_answer_is_a_failed_answer_not_the_end_of_the_run(
        tmp_path: Path) -> None:
    seen: Counter[str] = Counter()
    server = _Server(seen)
    clients = Clients(1)
    try:
        paths = ["/r/0", "/r/dropped", "/r/1", "/r/reset"]
        path = write_requests(tmp_path / "kind.requests", [raw(p) for p in paths])
        load = clients.run(server.port, path, len(paths), 0.5)
        assert seen["/r/reset"] > 0
        assert load.ok == seen["/r/0"] + seen["/r/1"]
        assert load.bad == seen["/r/dropped"] + seen["/r/reset"]
    finally:
        clients.close()
        server.shutdown()


def test_no_request_is_refused_when_written(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no request"):
        write_requests(tmp_path / "kind.requests", [])


def test_a_client_refused_ends_the_phase_with_an_error_and_the_others_are_still_closed(tmp_path: Path) -> None:
    """Nothing listens on the port: the clients give up after 50 requests without an answer, and the bench fails at
    once (it does not wait for answers that never come); the clients refuse a next phase (a dead client leaves the
    others' answers unread, which it could read as its own), and closing them raises nothing."""
    port = _closed_port()
    clients = Clients(2)
    path = write_requests(tmp_path / "kind.requests", [raw("/healthz")])
    try:
        with pytest.raises(EOFError):
            clients.run(port, path, 1, 0.5)
        with pytest.raises(RuntimeError, match="earlier phase"):
            clients.run(port, path, 1, 0.3)
    finally:
        clients.close()


@pytest.mark.parametrize(("before", "after"), [
    ([f"/a/{index}" for index in range(3)], [f"/longer/{index:04d}" for index in range(40)]),  # another count
    ([f"/old/{index}" for index in range(4)], [f"/newer/{index}" for index in range(4)]),  # as many, other lengths
])
def test_a_file_written_again_is_read_anew(tmp_path: Path, before: list[str], after: list[str]) -> None:
    """A client maps a file once; written again (another session count, or as many requests of other lengths) it
    must send the new requests, all of them, not the old mapping cut at the old offsets (a review found the
    100,000-session phase sending the first 100 requests of its file)."""
    seen: Counter[str] = Counter()
    server = _Server(seen)
    clients = Clients(1)
    try:
        path = tmp_path / "kind.requests"
        write_requests(path, [raw(p) for p in before])
        clients.run(server.port, path, len(before), 0.3)
        seen.clear()
        write_requests(path, [raw(p) for p in after])
        clients.run(server.port, path, len(after), 1.0)
        assert set(seen) == set(after)
    finally:
        clients.close()
        server.shutdown()
