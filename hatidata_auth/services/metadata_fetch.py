"""Fetch an IdP's SAML metadata from an https URL, bounded and never from a private network.

The URL has passed the plugin's ``validate_metadata_url`` (https, the IdP's own hosts). Its host name is
resolved once and every address it resolves to must be public (:func:`hatidata_auth.net_policy.is_public_address`:
loopback, private, link-local (cloud metadata services), multicast, reserved addresses and the IPv6 forms that
embed one, NAT64 included, are refused), so an admin cannot make this server read its own network. The connection
then goes to a checked address, never to a second lookup's answer (DNS rebinding), while TLS still verifies the
certificate for the host name. No redirect is followed, no proxy is used, and the whole fetch (connect, TLS,
headers and body) ends within :data:`TIMEOUT_S` seconds and :data:`MAX_BYTES` bytes.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx2

from ..errors import AppError
from ..net_policy import is_public_address
from ..pinned_http import PinnedTransport

MAX_BYTES = 512 * 1024
TIMEOUT_S = 5.0

Resolver = Callable[[str, int], list[str]]


class MetadataFetchError(AppError):
    """The metadata URL could not be read; the message is safe to show to the admin."""

    status = 422
    code = "metadata_unreachable"


def resolve(host: str, port: int) -> list[str]:
    """Every address *host* resolves to (the system resolver, in its order of preference)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise MetadataFetchError(f"The metadata host {host} does not resolve.") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))  # the resolver's order, without repeats


def check_public(host: str, port: int, resolver: Resolver = resolve) -> list[str]:
    """The addresses of *host* (one lookup), each checked public; :class:`MetadataFetchError` if any is not."""
    addresses = resolver(host, port)
    if not addresses:
        raise MetadataFetchError(f"The metadata host {host} does not resolve.")
    for address in addresses:
        try:
            public = is_public_address(address)
        except ValueError:
            public = False
        if not public:
            raise MetadataFetchError(f"The metadata host {host} is on a private or reserved network.")
    return addresses


def fetch(url: str, *, resolver: Resolver = resolve, transport: httpx2.BaseTransport | None = None) -> bytes:
    """The body of ``GET url`` (https only, public addresses only, no redirects, bounded in time and size).

    Connects only to the checked addresses of the URL's host, in the resolver's order (*transport*, a test seam,
    replaces the network).
    Raises :class:`MetadataFetchError` (422) naming what went wrong, a timeout after :data:`TIMEOUT_S` seconds
    in all included.
    """
    deadline = time.monotonic() + TIMEOUT_S
    try:
        parts = urlsplit(url)
        port = parts.port or 443
    except ValueError as exc:
        raise MetadataFetchError("The metadata URL is not a valid URL.") from exc
    if parts.scheme != "https" or not parts.hostname:
        raise MetadataFetchError("The metadata URL must be an https URL.")
    addresses = check_public(parts.hostname, port, resolver)
    body = bytearray()
    try:
        with httpx2.Client(timeout=TIMEOUT_S, follow_redirects=False, trust_env=False,
                           transport=transport or PinnedTransport(addresses, deadline)) as client, \
                client.stream("GET", url, headers={"Accept": "application/samlmetadata+xml, application/xml"}) \
                as answer:
            if answer.status_code != 200:
                raise MetadataFetchError(f"The metadata URL answered HTTP {answer.status_code}.")
            for chunk in answer.iter_bytes():
                body.extend(chunk)
                if len(body) > MAX_BYTES:
                    raise MetadataFetchError(f"The metadata is larger than {MAX_BYTES // 1024} KiB.")
                if time.monotonic() > deadline:
                    raise httpx2.ReadTimeout("the time limit for the metadata has passed", request=answer.request)
    except httpx2.HTTPError as exc:
        raise MetadataFetchError(f"The metadata URL could not be read ({type(exc).__name__}).") from exc
    return bytes(body)
