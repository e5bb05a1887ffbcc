"""An httpx2 transport that connects to one address checked beforehand and stops at one overall deadline.

Checking a host name's addresses and then letting the HTTP client resolve the name again lets a name that
answers a public address to the check and ``127.0.0.1`` to the connection (DNS rebinding) reach this server's
own network. :class:`PinnedTransport` connects every TCP connection to an address it was given, whatever the
resolver says by then; the URL keeps its host name, so the ``Host`` header, the TLS SNI and the certificate check
are all for that name (a certificate that does not cover the name is refused as usual).

Every network operation (connect, TLS handshake, each write and read) gets at most the time left before the
deadline (a ``time.monotonic()`` value), so a server that drips its answer a byte at a time cannot hold a worker
past it: the request fails with ``httpx2.ConnectTimeout``/``ReadTimeout``/``WriteTimeout``.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterable, Sequence
from typing import Any

import httpcore2
import httpx2


def time_left(deadline: float, timeout: float | None, error: type[Exception]) -> float:
    """Seconds an operation may take: *timeout* cut to what is left before *deadline*; raises *error* if none."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise error("the time limit for this request has passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore2.NetworkStream):
    def __init__(self, inner: httpcore2.NetworkStream, deadline: float) -> None:
        self._inner = inner
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, time_left(self._deadline, timeout, httpcore2.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, time_left(self._deadline, timeout, httpcore2.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore2.NetworkStream:
        left = time_left(self._deadline, timeout, httpcore2.ConnectTimeout)
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, left), self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class PinnedBackend(httpcore2.NetworkBackend):
    """Opens every TCP connection to one of *addresses* (the port is the URL's), each stream bounded by *deadline*.

    The addresses are tried in order, the next one only when a connection is refused or unreachable (as
    ``socket.create_connection`` does with a lookup's answers); all share the one deadline.
    """

    def __init__(self, addresses: Sequence[str], deadline: float) -> None:
        if not addresses:
            raise ValueError("a pinned backend needs at least one address")
        self._addresses = tuple(addresses)
        self._deadline = deadline
        self._system = httpcore2.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore2.NetworkStream:
        failure: httpcore2.ConnectError | None = None
        for address in self._addresses:
            left = time_left(self._deadline, timeout, httpcore2.ConnectTimeout)
            try:
                stream = self._system.connect_tcp(address, port, left, local_address, socket_options)
            except httpcore2.ConnectError as exc:
                failure = exc
                continue
            return _DeadlineStream(stream, self._deadline)
        assert failure is not None
        raise failure

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore2.NetworkStream:
        raise httpcore2.ConnectError("a pinned transport connects only to its checked address")

    def sleep(self, seconds: float) -> None:
        self._system.sleep(seconds)


class PinnedTransport(httpx2.HTTPTransport):
    """An HTTP/1.1 transport (certificates verified as ``httpx2`` does by default, or against *ssl_context*, e.g.
    a private CA) whose connections all go to one of *addresses* (checked beforehand) and end by *deadline*.

    Use it with ``httpx2.Client(trust_env=False)``: with ``trust_env`` an ``HTTPS_PROXY`` variable would route
    the request through a proxy transport instead of this one.
    """

    def __init__(self, addresses: Sequence[str], deadline: float, ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__()
        self._pool = httpcore2.ConnectionPool(
            ssl_context=ssl_context or httpx2.create_ssl_context(),
            max_connections=1,
            network_backend=PinnedBackend(addresses, deadline),
        )
