"""Where an audit sink may deliver: the endpoint rules of each kind, checked when a sink is configured and again,
after name resolution, before every delivery (docs/audit.md, "Streaming to a SIEM").

- ``https``, ``splunk_hec``, ``datadog``: an absolute ``https://`` URL of at most 2,048 characters, no user name or
  password (credentials are the sink's sealed secret), no fragment. ``splunk_hec`` and ``datadog`` take the
  service's base URL (a path of ``/`` or the protocol's own path, which is then fixed:
  ``/services/collector/event``, ``/api/v2/logs``).
- ``syslog_tls``: ``host:port`` (``[v6]:port``), always TLS.
- Never loopback, link-local (cloud metadata), multicast, reserved or unspecified addresses, whether written
  literally (in any form ``inet_aton`` reads: ``2130706433``, ``0x7f000001``, ``0177.0.0.1``, ``127.1``) or
  resolved from a name; private networks (an on-premises SIEM) are allowed. A host whose last label is a number
  is an IPv4 address and must parse as one.
  ``HATIDATA_AUDIT_STREAM_ALLOW_LOOPBACK_HTTP`` (development, tests) allows loopback, and ``http://`` to it.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from .. import net_policy
from ..errors import AppError

MAX_ENDPOINT = 2048
FIXED_PATHS = {"splunk_hec": "/services/collector/event", "datadog": "/api/v2/logs"}
_HOST = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}"
                   r"[A-Za-z0-9])?)*\.?$")


class InvalidEndpoint(AppError):
    """An endpoint the sink's kind does not accept (422 naming ``endpoint``)."""

    status = 422
    code = "validation_error"

    def __init__(self, reason: str) -> None:
        super().__init__(f"endpoint: {reason}", details={"fields": {"endpoint": [reason]}, "location": "json"})


class ForbiddenAddress(Exception):
    """A delivery's host resolved to an address sinks may not reach (delivery fails; the sink retries)."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A checked endpoint: what is stored (``value``) and where it connects."""

    value: str
    host: str
    port: int
    tls: bool


_NUMBER = re.compile(r"^(?:0[xX][0-9A-Fa-f]*|[0-9]+)$")


def _literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address *host* names literally, read as resolvers read it (``inet_aton``'s decimal, octal, hex and
    short IPv4 forms too); ``None`` for a name. :class:`InvalidEndpoint` for a numeric host that is no address."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    labels = host.split(".")
    if not _NUMBER.match(labels[-1] or (labels[-2] if len(labels) > 1 else "")):
        return None
    try:  # the last label is a number: a resolver reads the host as an IPv4 address, never as a name
        return ipaddress.IPv4Address(socket.inet_aton(host.removesuffix(".")))
    except OSError:
        raise InvalidEndpoint("the host is not a valid host name or address") from None


def address_allowed(address: ipaddress.IPv4Address | ipaddress.IPv6Address, *, allow_loopback: bool) -> bool:
    """Whether a sink may connect to *address* (private networks yes; loopback only with the setting). An IPv6
    address carrying an IPv4 one (NAT64, IPv4-mapped, 6to4, Teredo: ``net_policy.embedded_ipv4``) is judged by it."""
    if isinstance(address, ipaddress.IPv6Address):
        if address in net_policy.NAT64_LOCAL_USE:
            return False
        carried = net_policy.embedded_ipv4(address)
        if carried:
            return all(address_allowed(v4, allow_loopback=allow_loopback) for v4 in carried)
    if address.is_loopback:
        return allow_loopback
    return not (address.is_link_local or address.is_multicast or address.is_reserved or address.is_unspecified)


def _is_loopback_name(host: str) -> bool:
    literal = _literal(host)
    return host.lower().rstrip(".") == "localhost" if literal is None else literal.is_loopback


def _check_host(host: str, *, allow_loopback: bool) -> None:
    literal = _literal(host)
    if literal is None:
        if not _HOST.match(host):
            raise InvalidEndpoint("the host is not a valid host name or address")
        if host.lower().rstrip(".") == "localhost" and not allow_loopback:
            raise InvalidEndpoint("loopback hosts are not allowed")
    elif not address_allowed(literal, allow_loopback=allow_loopback):
        raise InvalidEndpoint("the address is loopback, link-local, multicast or reserved")


def _url(kind: str, raw: str, *, allow_loopback: bool) -> Endpoint:
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError as exc:
        raise InvalidEndpoint("not a valid URL") from exc
    host = parts.hostname or ""
    if not host:
        raise InvalidEndpoint("an absolute https:// URL is required")
    plain_ok = allow_loopback and _is_loopback_name(host)
    if parts.scheme != "https" and not (parts.scheme == "http" and plain_ok):
        raise InvalidEndpoint("the URL must use https://" + (" (http:// is accepted only to a loopback address here)"
                                                              if allow_loopback else ""))
    if parts.username is not None or parts.password is not None:
        raise InvalidEndpoint("credentials do not belong in the URL; use the secret")
    if parts.fragment:
        raise InvalidEndpoint("the URL must not have a fragment")
    _check_host(host, allow_loopback=allow_loopback)
    value = raw
    if kind in FIXED_PATHS:
        if parts.path not in ("", "/", FIXED_PATHS[kind]) or parts.query:
            raise InvalidEndpoint(f"give the service's base URL (the path is {FIXED_PATHS[kind]})")
        value = f"{parts.scheme}://{parts.netloc}{FIXED_PATHS[kind]}"
    return Endpoint(value, host, port or (443 if parts.scheme == "https" else 80), parts.scheme == "https")


def _host_port(raw: str, *, allow_loopback: bool) -> Endpoint:
    host, sep, port_text = raw.rpartition(":")
    if not sep or not port_text.isascii() or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise InvalidEndpoint("syslog_tls takes host:port (a port from 1 to 65535)")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if ":" in bare and _literal(bare) is None:
        raise InvalidEndpoint("an IPv6 address is written [address]:port")
    _check_host(bare, allow_loopback=allow_loopback)
    return Endpoint(raw, bare, int(port_text), True)


def parse(kind: str, raw: str, *, allow_loopback: bool = False) -> Endpoint:
    """The checked endpoint of a sink of *kind*; :class:`InvalidEndpoint` (422) otherwise."""
    if not raw or len(raw) > MAX_ENDPOINT or not raw.isascii() or any(c.isspace() or ord(c) < 32 for c in raw):
        raise InvalidEndpoint(f"1 to {MAX_ENDPOINT} printable ASCII characters, no spaces")
    if kind == "syslog_tls":
        return _host_port(raw, allow_loopback=allow_loopback)
    return _url(kind, raw, allow_loopback=allow_loopback)


def check_resolved(endpoint: Endpoint, *, allow_loopback: bool) -> list[str]:
    """Resolve the endpoint's host once and return its addresses (in the resolver's order, the ones a delivery
    connects to); :class:`ForbiddenAddress` if any is one sinks may not reach, ``OSError`` when it does not
    resolve."""
    addresses: list[str] = []
    for *_, sockaddr in socket.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM):
        text = str(sockaddr[0])
        address = ipaddress.ip_address(text.split("%")[0])
        if not address_allowed(address, allow_loopback=allow_loopback):
            raise ForbiddenAddress(f"{endpoint.host} resolves to an address sinks may not reach")
        if text not in addresses:
            addresses.append(text)
    if not addresses:
        raise OSError(f"{endpoint.host} has no address")
    return addresses
