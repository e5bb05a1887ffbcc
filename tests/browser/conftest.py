"""Fixtures of the browser tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask

from tests.auth_support import sync_organizations
from tests.support.servers import LiveServer


@pytest.fixture
def server(app: Flask) -> Iterator[str]:
    """The app (its demo organizations mirrored) served over real HTTP in a thread, at its public URL."""
    sync_organizations(app)
    with LiveServer(app) as live:
        app.config["HATIDATA_PUBLIC_URL"] = live.url
        yield live.url
