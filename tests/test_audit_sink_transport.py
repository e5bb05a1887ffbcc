"""A sink delivery's transport against hostile receivers, over every sink kind: one deadline bounds the whole
delivery (connect, TLS handshake, send, answer, close_notify) and an answer is read up to 64 KiB
(``services/audit_sink_transport.py``)."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hatidata_auth.services.audit_sink_endpoints import parse
from hatidata_auth.services.audit_sink_transport import MAX_ANSWER, Deadline, post
from hatidata_auth.services.audit_sink_wire import DeliveryFailed, Line, Target, deliver
from tests.support.sink_fakes import make_certificates

TIMEOUT = 0.6
HTTP_KINDS = ["https", "splunk_hec", "datadog"]
SECRETS = {"https": None, "splunk_hec": "hec-token-0123456789abcdef", "datadog": "dd-api-key-0123456789abcdef",
           "syslog_tls": None}
LINES = [Line('{"seq": 1}', {"seq": 1}, 1_700_000_000.0)]


class _Server:
    """A loopback TCP server running ``handle(conn)`` for every connection until stopped."""

    def __init__(self, handle: Callable[[socket.socket], None]) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.handle = handle
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        try:
            self.handle(conn)
        except OSError:
            pass
        finally:
            conn.close()

    def drip(self, conn: socket.socket, data: bytes) -> None:
        """Send *data* one byte every 0.1 s, then hold the connection until the test ends."""
        for byte in data:
            if self.stop.wait(0.1):
                return
            conn.sendall(bytes([byte]))
        self.stop.wait(30)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[socket.socket], None]], _Server]]:
    servers: list[_Server] = []

    def start(handle: Callable[[socket.socket], None]) -> _Server:
        servers.append(_Server(handle))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def _target(kind: str, port: int, ca_file: str | None = None) -> Target:
    raw = f"127.0.0.1:{port}" if kind == "syslog_tls" else f"http://127.0.0.1:{port}/"
    return Target(kind, parse(kind, raw, allow_loopback=True), "org_1", SECRETS[kind], TIMEOUT, ca_file,
                  allow_loopback=True)


def _timed_failure(target: Target) -> float:
    started = time.monotonic()
    with pytest.raises(DeliveryFailed):
        deliver(target, LINES)
    return time.monotonic() - started


@pytest.mark.parametrize("phase", ["status line", "headers", "body"])
@pytest.mark.parametrize("kind", HTTP_KINDS)
def test_an_http_answer_trickled_in_any_part_is_cut_at_the_delivery_deadline(serve: Callable[..., _Server],
                                                                             kind: str, phase: str) -> None:
    answers = {"status line": b"HTTP/1.1 200 OK\r\n",
               "headers": b"HTTP/1.1 200 OK\r\nContent-Length: 30\r\nX-Slow: " + b"a" * 200,
               "body": b"HTTP/1.1 200 OK\r\nContent-Length: 300\r\n\r\n" + b" " * 300}
    prefix = {"status line": 0, "headers": 39, "body": 40}[phase]

    def handle(conn: socket.socket) -> None:
        conn.recv(65536)
        conn.sendall(answers[phase][:prefix])
        server.drip(conn, answers[phase][prefix:])

    server = serve(handle)
    assert _timed_failure(_target(kind, server.port)) < TIMEOUT + 0.4


def test_a_syslog_server_trickling_its_handshake_is_cut_at_the_delivery_deadline(
        serve: Callable[..., _Server], tmp_path: Path) -> None:
    certs = make_certificates(tmp_path / "pki")
    # a TLS handshake record announcing 16 KiB, then its bytes one by one
    server = serve(lambda conn: server.drip(conn, b"\x16\x03\x03\x40\x00" + b"\x00" * 200))
    assert _timed_failure(_target("syslog_tls", server.port, certs.ca_file)) < TIMEOUT + 0.4


def test_a_syslog_server_withholding_close_notify_is_cut_at_the_delivery_deadline(
        serve: Callable[..., _Server], tmp_path: Path) -> None:
    certs = make_certificates(tmp_path / "pki")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.cert_file, certs.key_file)

    def handle(conn: socket.socket) -> None:
        with context.wrap_socket(conn, server_side=True) as tls:
            tls.recv(65536)
            server.stop.wait(30)  # reads the batch, never closes

    server = serve(handle)
    assert _timed_failure(_target("syslog_tls", server.port, certs.ca_file)) < TIMEOUT + 0.4


def _endless_answer(conn: socket.socket) -> None:
    conn.recv(65536)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n")
    for _ in range(4096):  # 16 MiB, unless the client goes away first
        conn.sendall(b'{"code": 0}' + b" " * 4085)


def test_an_answer_is_read_up_to_64_kib(serve: Callable[..., _Server]) -> None:
    server = serve(_endless_answer)
    target = _target("https", server.port)
    answer = post(target.endpoint, ["127.0.0.1"], Deadline(TIMEOUT), None, b"{}", {})
    assert (answer.status, len(answer.body), answer.cut) == (200, MAX_ANSWER, True)
    deliver(target, LINES)  # a 2xx confirms, whatever follows it


def test_a_hec_answer_over_64_kib_fails_the_delivery(serve: Callable[..., _Server]) -> None:
    server = serve(_endless_answer)
    with pytest.raises(DeliveryFailed, match="64 KiB"):
        deliver(_target("splunk_hec", server.port), LINES)


@pytest.mark.parametrize("kind", ["splunk_hec", "datadog"])
def test_a_secret_with_a_line_break_never_reaches_the_wire(serve: Callable[..., _Server], kind: str) -> None:
    received: list[bytes] = []
    server = serve(lambda conn: received.append(conn.recv(65536)))
    target = _target(kind, server.port)
    hostile = Target(kind, target.endpoint, "org_1", "token\r\nX-Injected: 1", TIMEOUT, None, allow_loopback=True)
    with pytest.raises(DeliveryFailed, match="control character"):
        deliver(hostile, LINES)
    server.close()
    assert b"X-Injected" not in b"".join(received)
