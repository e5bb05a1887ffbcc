"""Break-it review of the cache sizing (issue #14): Flask-Caching takes ``CACHE_TYPE`` as a class name or as the
import path of the class (``flask_caching.backends.FileSystemCache``,
``flask_caching.backends.filesystemcache.FileSystemCache``). Every spelling of a file cache gets the sized
threshold and the revocation log its processes share; every spelling of a cache private to the process (SimpleCache,
NullCache) gets no shared layer; a Redis cache gets neither.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from hatidata_auth.embedding import cache_sizes, revocation_log_path, size_shared_cache

SPELLINGS = {
    "file": ["FileSystemCache", "flask_caching.backends.FileSystemCache",
             "flask_caching.backends.filesystemcache.FileSystemCache"],
    "private": ["SimpleCache", "flask_caching.backends.SimpleCache", "flask_caching.backends.simplecache.SimpleCache",
                "NullCache", "flask_caching.backends.nullcache.NullCache"],
    "redis": ["RedisCache", "flask_caching.backends.RedisCache", "flask_caching.backends.rediscache.RedisCache"],
}
EVERY = [(kind, name) for kind, names in SPELLINGS.items() for name in names]


@pytest.mark.parametrize(("kind", "cache_type"), EVERY)
def test_every_spelling_of_a_cache_type_is_sized_and_shares_revocations_as_its_kind(
        kind: str, cache_type: str, tmp_path: Path) -> None:
    settings: dict[str, Any] = {"CACHE_TYPE": cache_type, "CACHE_DIR": str(tmp_path / "cache"),
                                "HATIDATA_EXPECTED_LIVE_SESSIONS": 4_000}
    size_shared_cache(settings)
    sized = 4 * cache_sizes(settings)[0] if kind in ("file", "private") else None
    assert settings.get("CACHE_THRESHOLD") == sized
    expected_log = tmp_path / "cache-revocations.log" if kind == "file" else None
    assert revocation_log_path(settings) == expected_log


@pytest.mark.parametrize("cache_type", SPELLINGS["file"])
def test_an_app_on_a_file_cache_named_by_its_path_keeps_the_live_sessions_and_tells_its_peers(
        app_config: dict[str, Any], cache_type: str, tmp_path: Path) -> None:
    from hatidata_auth import create_app
    from hatidata_auth.extensions import cache

    app_config.pop("REDIS_URL", None)
    app_config.update(CACHE_TYPE=cache_type, CACHE_DIR=str(tmp_path / "shared"), HATIDATA_EXPECTED_LIVE_SESSIONS=4_000)
    app: Flask = create_app(app_config)
    try:
        with app.app_context():
            threshold = cache.cache._threshold
        runtime = app.extensions["hatidata_auth"]
        assert threshold == 4 * cache_sizes(app.config)[0]
        assert runtime.bus.log is not None, "processes sharing the file cache are never told of a revocation"
    finally:
        app.extensions["hatidata_workos"].close()
