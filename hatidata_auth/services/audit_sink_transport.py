"""How a sink delivery reaches the receiver (docs/audit.md, "Streaming to a SIEM"): the host is resolved once,
every address is checked, and the connection goes to a checked address (a name that resolves elsewhere the next
time, DNS rebinding, is never connected to); TLS still verifies the certificate against the endpoint's host name.

One delivery (connect, TLS handshake, send, answer, ``close_notify``) has one deadline, the stream timeout in
seconds: a receiver that trickles its answer is cut at it. An answer is read up to :data:`MAX_ANSWER` bytes. The
URL (whose query may hold a receiver's token) is never logged.
"""

from __future__ import annotations

import http.client
import io
import select
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

from .audit_sink_endpoints import Endpoint, ForbiddenAddress, check_resolved

MAX_ANSWER = 64 * 1024  # bytes of an answer read; a longer answer is cut (``Answer.cut``)
MAX_ERROR = 300
_T = TypeVar("_T")


class DeliveryFailed(Exception):
    """The sink did not confirm the batch; the message is safe to store and show (no secret, bounded)."""


@dataclass(frozen=True, slots=True)
class Answer:
    """A receiver's HTTP answer: its status, at most :data:`MAX_ANSWER` bytes of body, and whether it was longer."""

    status: int
    body: bytes
    cut: bool


class Deadline:
    """The end of one delivery, ``seconds`` from now (monotonic clock)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        """Seconds left (> 0); :class:`DeliveryFailed` once the deadline passed."""
        left = self.end - time.monotonic()
        if left <= 0:
            raise DeliveryFailed(f"the sink did not answer within {self.seconds:g} s")
        return left


class _DeadlineReader(io.RawIOBase):
    """The socket's reads, each bounded by what is left of the deadline (http.client reads through it)."""

    def __init__(self, sock: socket.socket, deadline: Deadline) -> None:
        self.sock, self.deadline = sock, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        self.sock.settimeout(self.deadline.left())
        return self.sock.recv_into(buffer)


class _ResponseSource:
    """What :class:`http.client.HTTPResponse` reads from: the socket behind the deadline."""

    def __init__(self, sock: socket.socket, deadline: Deadline) -> None:
        self.sock, self.deadline = sock, deadline

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self.sock, self.deadline))


def failure(exc: Exception, deadline: Deadline) -> DeliveryFailed:
    """The :class:`DeliveryFailed` for a transport error (a timeout is the delivery's deadline)."""
    if isinstance(exc, TimeoutError):
        return DeliveryFailed(f"the sink did not answer within {deadline.seconds:g} s")
    return DeliveryFailed(f"{type(exc).__name__}: {exc}"[:MAX_ERROR])


def pinned_addresses(endpoint: Endpoint, *, allow_loopback: bool) -> list[str]:
    """The endpoint host's addresses, resolved once and all checked; :class:`DeliveryFailed` if one is forbidden
    or the name does not resolve."""
    try:
        return check_resolved(endpoint, allow_loopback=allow_loopback)
    except ForbiddenAddress as exc:
        raise DeliveryFailed(str(exc)[:MAX_ERROR]) from None
    except OSError as exc:
        raise DeliveryFailed(f"{endpoint.host} does not resolve ({type(exc).__name__})") from None


def _until_done(sock: ssl.SSLSocket, deadline: Deadline, operation: Callable[[], _T]) -> _T:
    # a handshake or close_notify driven without blocking, so the deadline bounds all of it, not each read
    sock.setblocking(False)
    try:
        while True:
            try:
                return operation()
            except ssl.SSLWantReadError:
                select.select([sock], [], [], deadline.left())
            except ssl.SSLWantWriteError:
                select.select([], [sock], [], deadline.left())
    finally:
        sock.setblocking(True)


def connect(endpoint: Endpoint, addresses: list[str], deadline: Deadline,
            context: ssl.SSLContext | None) -> socket.socket:
    """A connection to the first checked address that answers (TLS verified against ``endpoint.host`` when a
    context is given); ``OSError`` / ``ssl.SSLError`` / :class:`DeliveryFailed` otherwise."""
    error: OSError | None = None
    for address in addresses:
        try:
            sock = socket.create_connection((address, endpoint.port), timeout=deadline.left())
            break
        except OSError as exc:
            error = exc
    else:
        raise error or OSError(f"{endpoint.host} has no address")
    if context is None:
        return sock
    try:
        tls = context.wrap_socket(sock, server_hostname=endpoint.host, do_handshake_on_connect=False)
    except BaseException:
        sock.close()
        raise
    try:
        _until_done(tls, deadline, tls.do_handshake)
    except BaseException:
        tls.close()
        raise
    return tls


def close_notified(tls: ssl.SSLSocket, deadline: Deadline) -> None:
    """Send TLS ``close_notify`` and wait, within the deadline, for the server's."""
    _until_done(tls, deadline, tls.unwrap)


def send_all(sock: socket.socket, data: bytes, deadline: Deadline) -> None:
    sock.settimeout(deadline.left())  # since Python 3.5 the timeout bounds the whole sendall
    sock.sendall(data)


def _request_head(endpoint: Endpoint, body: bytes, headers: dict[str, str]) -> bytes:
    parts = urlsplit(endpoint.value)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
    default_port = 443 if endpoint.tls else 80
    fields = {"Host": host if endpoint.port == default_port else f"{host}:{endpoint.port}",
              "User-Agent": "hatidata-auth", "Accept": "*/*", "Connection": "close",
              "Content-Length": str(len(body)), **headers}
    if any(not value.isprintable() for value in fields.values()):  # a secret must not add headers or a request
        raise DeliveryFailed("a header (the secret) holds a control character")
    lines = [f"POST {target} HTTP/1.1", *(f"{name}: {value}" for name, value in fields.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def post(endpoint: Endpoint, addresses: list[str], deadline: Deadline, context: ssl.SSLContext | None,
         body: bytes, headers: dict[str, str]) -> Answer:
    """``POST`` *body* to the endpoint's URL over a connection to a checked address; the answer, or
    :class:`DeliveryFailed` (the error names neither the URL nor a header)."""
    request = _request_head(endpoint, body, headers) + body
    try:
        with connect(endpoint, addresses, deadline, context) as sock:
            send_all(sock, request, deadline)
            response = http.client.HTTPResponse(_ResponseSource(sock, deadline), method="POST")  # type: ignore[arg-type]
            try:
                response.begin()
                data = response.read(MAX_ANSWER + 1)
            finally:
                response.close()
    except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
        raise failure(exc, deadline) from None
    return Answer(response.status, data[:MAX_ANSWER], len(data) > MAX_ANSWER)

