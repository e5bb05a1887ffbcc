"""Which network addresses this server may connect to on an admin's say-so (metadata URLs, audit sink endpoints).

An address is *public* when it is a global unicast address: loopback, private, shared (100.64/10), link-local
(cloud metadata services), multicast, reserved and unspecified addresses are not. Python's own
``ipaddress.is_global`` is not enough on its own: it calls the IPv6 forms that embed an IPv4 address global
whatever that address is (``64:ff9b::a9fe:a9fe`` reaches 169.254.169.254 through a NAT64 gateway), so an IPv6
address that embeds an IPv4 one is judged by its IPv4 address:

* NAT64, the well-known prefix ``64:ff9b::/96`` (RFC 6052): the last 32 bits;
* IPv4-mapped ``::ffff:0:0/96``: the last 32 bits;
* 6to4 ``2002::/16``: bits 16 to 48;
* Teredo ``2001::/32``: both the server and the (de-obfuscated) client address.

The local-use NAT64 prefix ``64:ff9b:1::/48`` (RFC 8215) is never public: the operator picks where the IPv4
address sits inside it, so it cannot be judged, and IANA lists it as not globally reachable.
"""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
NAT64_LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses *ip* carries (NAT64 well-known prefix, IPv4-mapped, 6to4, Teredo); empty if none."""
    if ip in NAT64_WELL_KNOWN:
        return (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF),)
    if ip.ipv4_mapped is not None:
        return (ip.ipv4_mapped,)
    if ip.sixtofour is not None:
        return (ip.sixtofour,)
    if ip.teredo is not None:
        return ip.teredo
    return ()


def is_public_address(address: str | IPAddress) -> bool:
    """Whether *address* (text or an ``ipaddress`` object) is a global unicast address this server may reach.

    Raises ``ValueError`` when *address* is not an IP address.
    """
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return False
        if ip in NAT64_LOCAL_USE:
            return False
        carried = embedded_ipv4(ip)
        if carried:
            return all(is_public_address(v4) for v4 in carried)
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified)
