"""Small helpers shared by the emulator tests."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx2


def follow_authorize(url: str) -> httpx2.Response:
    """GET an authorize URL without following redirects."""
    with httpx2.Client(follow_redirects=False, timeout=10) as client:
        return client.get(url)


def code_from(location: str) -> tuple[str, str | None]:
    """(code, state) from a ``redirect_uri?code=..&state=..`` URL."""
    qs = parse_qs(urlsplit(location).query)
    return qs["code"][0], (qs.get("state") or [None])[0]
