"""The metadata fetcher of certificate rotation: https only, every resolved address public (loopback, private,
link-local, reserved and IPv6 equivalents refused before any connection), no redirect followed, bounded in size;
the body of a good answer is returned. The network is replaced by a resolver and an httpx transport."""

from __future__ import annotations

import httpx2
import pytest

from hatidata_auth.services import metadata_fetch
from hatidata_auth.services.metadata_fetch import MetadataFetchError, fetch

URL = "https://login.microsoftonline.com/tenant/federationmetadata/2007-06/federationmetadata.xml"
PUBLIC = ["20.190.151.7"]


def resolver(addresses: list[str]) -> metadata_fetch.Resolver:
    return lambda host, port: addresses


def never(request: httpx2.Request) -> httpx2.Response:
    raise AssertionError(f"no request may be sent: {request.url}")


@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.5", "172.16.3.4", "192.168.1.1", "169.254.169.254",
                                     "0.0.0.0", "100.64.0.1", "224.0.0.1", "::1", "fd00::1", "fe80::1",
                                     "::ffff:127.0.0.1"])
def test_private_and_reserved_addresses_are_refused_before_connecting(address: str) -> None:
    with pytest.raises(MetadataFetchError, match="private or reserved"):
        fetch(URL, resolver=resolver([*PUBLIC, address]), transport=httpx2.MockTransport(never))


@pytest.mark.parametrize("url", ["http://login.microsoftonline.com/m.xml", "file:///etc/passwd", "https:///x"])
def test_only_https_urls_are_fetched(url: str) -> None:
    with pytest.raises(MetadataFetchError, match="https"):
        fetch(url, resolver=resolver(PUBLIC), transport=httpx2.MockTransport(never))


def test_redirects_are_not_followed_and_errors_are_named() -> None:
    moved = httpx2.MockTransport(lambda r: httpx2.Response(302, headers={"Location": "http://169.254.169.254/"}))
    with pytest.raises(MetadataFetchError, match="HTTP 302"):
        fetch(URL, resolver=resolver(PUBLIC), transport=moved)

    def timeout(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ReadTimeout("slow", request=request)

    with pytest.raises(MetadataFetchError, match="ReadTimeout"):
        fetch(URL, resolver=resolver(PUBLIC), transport=httpx2.MockTransport(timeout))


def test_the_size_is_bounded_and_a_good_answer_is_returned() -> None:
    huge = httpx2.MockTransport(lambda r: httpx2.Response(200, content=b"x" * (metadata_fetch.MAX_BYTES + 1)))
    with pytest.raises(MetadataFetchError, match="larger"):
        fetch(URL, resolver=resolver(PUBLIC), transport=huge)
    good = httpx2.MockTransport(lambda r: httpx2.Response(200, content=b"<md:EntityDescriptor/>"))
    assert fetch(URL, resolver=resolver(PUBLIC), transport=good) == b"<md:EntityDescriptor/>"


def test_a_host_that_does_not_resolve_is_named() -> None:
    with pytest.raises(MetadataFetchError, match="does not resolve"):
        fetch(URL, resolver=resolver([]), transport=httpx2.MockTransport(never))
    with pytest.raises(MetadataFetchError, match="does not resolve"):
        metadata_fetch.resolve("no-such-host.invalid", 443)
