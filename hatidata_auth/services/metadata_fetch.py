"""Fetch an IdP's SAML metadata from an https URL, bounded and never from a private network.

The URL has passed the plugin's ``validate_metadata_url`` (https, the IdP's own hosts). Before connecting, every
address the host resolves to must be a public (global) one: loopback, private, link-local (cloud metadata
services), multicast and reserved addresses are refused, so an admin cannot make this server read its own network.
No redirect is followed, the answer is read for at most :data:`TIMEOUT_S` seconds and :data:`MAX_BYTES` bytes.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx2

from ..errors import AppError

MAX_BYTES = 512 * 1024
TIMEOUT_S = 5.0

Resolver = Callable[[str, int], list[str]]


class MetadataFetchError(AppError):
    """The metadata URL could not be read; the message is safe to show to the admin."""

    status = 422
    code = "metadata_unreachable"


def resolve(host: str, port: int) -> list[str]:
    """Every address *host* resolves to (the system resolver)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise MetadataFetchError(f"The metadata host {host} does not resolve.") from exc
    return sorted({str(info[4][0]) for info in infos})


def check_public(host: str, port: int, resolver: Resolver = resolve) -> None:
    """Raise :class:`MetadataFetchError` unless every address of *host* is a global unicast one."""
    addresses = resolver(host, port)
    if not addresses:
        raise MetadataFetchError(f"The metadata host {host} does not resolve.")
    for address in addresses:
        ip = ipaddress.ip_address(address)
        if not ip.is_global or ip.is_multicast:
            raise MetadataFetchError(f"The metadata host {host} is on a private or reserved network.")


def fetch(url: str, *, resolver: Resolver = resolve, transport: httpx2.BaseTransport | None = None) -> bytes:
    """The body of ``GET url`` (https only, public addresses only, no redirects, bounded in time and size).

    Raises :class:`MetadataFetchError` (422) naming what went wrong.
    """
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise MetadataFetchError("The metadata URL must be an https URL.")
    check_public(parts.hostname, parts.port or 443, resolver)
    body = bytearray()
    try:
        with httpx2.Client(timeout=TIMEOUT_S, follow_redirects=False, transport=transport) as client, \
                client.stream("GET", url, headers={"Accept": "application/samlmetadata+xml, application/xml"}) \
                as answer:
            if answer.status_code != 200:
                raise MetadataFetchError(f"The metadata URL answered HTTP {answer.status_code}.")
            for chunk in answer.iter_bytes():
                body.extend(chunk)
                if len(body) > MAX_BYTES:
                    raise MetadataFetchError(f"The metadata is larger than {MAX_BYTES // 1024} KiB.")
    except httpx2.HTTPError as exc:
        raise MetadataFetchError(f"The metadata URL could not be read ({type(exc).__name__}).") from exc
    return bytes(body)
