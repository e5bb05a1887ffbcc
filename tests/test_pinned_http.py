"""The pinned transport over real sockets: it connects to the address it was given without resolving the URL's host
name, TLS still sends that name (SNI) and verifies the certificate for it, and one deadline bounds the whole request
(a server dripping its answer is cut). The rule for which addresses are public is tested over every IPv6 form that
embeds an IPv4 address."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest

from hatidata_auth.net_policy import is_public_address
from hatidata_auth.pinned_http import PinnedTransport
from tests.support.sink_fakes import make_certificates


@contextmanager
def serve_once(handle: Callable[[socket.socket], None],
               context: ssl.SSLContext | None = None) -> Iterator[tuple[int, list[str]]]:
    """A one-connection server on 127.0.0.1: yields (port, what it saw) and stops."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(5)
    seen: list[str] = []

    def run() -> None:
        try:
            raw, _ = listener.accept()
        except OSError:
            return
        try:
            conn = context.wrap_socket(raw, server_side=True) if context else raw
        except (OSError, ssl.SSLError) as exc:
            seen.append(f"tls failed: {type(exc).__name__}")
            raw.close()
            return
        with conn:
            seen.append(conn.recv(4096).decode("latin-1"))
            handle(conn)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], seen
    finally:
        listener.close()
        thread.join(5)


def answer_ok(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")


@pytest.fixture
def tls(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext, list[str]]:
    """(server context with a certificate for localhost/127.0.0.1, client context trusting its CA, SNI names seen)."""
    certs = make_certificates(tmp_path / "certs")
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(certs.cert_file, certs.key_file)
    names: list[str] = []
    server.sni_callback = lambda sock, name, ctx: names.append(str(name))  # type: ignore[assignment,misc,func-returns-value]
    return server, ssl.create_default_context(cafile=certs.ca_file), names


def test_it_connects_to_the_pinned_address_and_tls_names_the_host(monkeypatch: pytest.MonkeyPatch,
                                                                   tls: Any) -> None:
    server, client_context, names = tls
    real = socket.getaddrinfo

    def no_lookup_of_the_name(host: Any, *args: Any, **kwargs: Any) -> Any:
        assert host != "localhost", "the pinned transport resolved the host name again"
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", no_lookup_of_the_name)
    with serve_once(answer_ok, server) as (port, seen):
        transport = PinnedTransport(["127.0.0.1"], time.monotonic() + 5, ssl_context=client_context)
        with httpx2.Client(transport=transport, trust_env=False) as client:
            answer = client.get(f"https://localhost:{port}/metadata")
        assert (answer.status_code, answer.text) == (200, "ok")
    assert names == ["localhost"]
    assert f"Host: localhost:{port}" in seen[0]


def test_a_certificate_that_does_not_cover_the_host_name_is_refused(tls: Any) -> None:
    server, client_context, names = tls
    # The certificate covers 127.0.0.1, the address connected to, but not idp.example, the name asked for.
    with serve_once(answer_ok, server) as (port, _):
        transport = PinnedTransport(["127.0.0.1"], time.monotonic() + 5, ssl_context=client_context)
        with httpx2.Client(transport=transport, trust_env=False) as client, pytest.raises(httpx2.ConnectError):
            client.get(f"https://idp.example:{port}/metadata")
    assert names == ["idp.example"]


def test_a_refused_address_moves_on_to_the_next_checked_one() -> None:
    with serve_once(answer_ok) as (port, seen):  # listening on 127.0.0.1 only: 127.0.0.2 refuses
        transport = PinnedTransport(["127.0.0.2", "127.0.0.1"], time.monotonic() + 5)
        with httpx2.Client(transport=transport, trust_env=False) as client:
            assert client.get(f"http://idp.example:{port}/metadata").text == "ok"
    assert f"Host: idp.example:{port}" in seen[0]
    with httpx2.Client(transport=PinnedTransport(["127.0.0.2"], time.monotonic() + 5), trust_env=False) as client, \
            pytest.raises(httpx2.ConnectError):
        client.get(f"http://idp.example:{port}/metadata")


def test_one_deadline_bounds_the_whole_answer() -> None:
    def drip(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        for _ in range(100):
            time.sleep(0.1)  # every read gets a byte well within any per-read timeout
            try:
                conn.sendall(b" ")
            except OSError:
                return

    with serve_once(drip) as (port, _):
        started = time.monotonic()
        transport = PinnedTransport(["127.0.0.1"], started + 0.6)
        with httpx2.Client(transport=transport, trust_env=False, timeout=5) as client, \
                pytest.raises(httpx2.ReadTimeout):
            client.get(f"http://idp.example:{port}/metadata").read()
        assert time.monotonic() - started < 5.0  # cut at 0.6 s, not after the 10 s drip, with room for a loaded CI


@pytest.mark.parametrize(("address", "public"), [
    ("93.184.216.34", True), ("2606:4700::1", True),
    # NAT64, well-known prefix: judged by the last 32 bits
    ("64:ff9b::5db8:d822", True), ("64:ff9b::a9fe:a9fe", False), ("64:ff9b::a00:1", False),
    ("64:ff9b::7f00:1", False),
    # NAT64, local-use prefix: never public
    ("64:ff9b:1::5db8:d822", False), ("64:ff9b:1::7f00:1", False),
    # IPv4-mapped
    ("::ffff:93.184.216.34", True), ("::ffff:127.0.0.1", False), ("::ffff:169.254.169.254", False),
    # 6to4: bits 16-48
    ("2002:5db8:d822::1", True), ("2002:7f00:1::1", False), ("2002:a9fe:a9fe::1", False),
    # Teredo: server and (obfuscated) client both judged
    ("2001:0:5db8:d822:0:0:a247:27dd", True), ("2001:0:5db8:d822:0:0:80ff:fffe", False),
    ("2001:0:a00:1:0:0:a247:27dd", False),
    # IPv4-compatible (deprecated) and other reserved IPv6
    ("::a00:1", False), ("::5db8:d822", False), ("::", False), ("::1", False),
    ("fe80::1", False), ("fd00::1", False), ("ff02::1", False), ("2001:db8::1", False),
    ("0.0.0.0", False), ("100.64.0.1", False), ("240.0.0.1", False), ("224.0.0.1", False),
])
def test_ipv6_forms_that_embed_an_ipv4_address_are_judged_by_it(address: str, public: bool) -> None:
    assert is_public_address(address) is public
