"""The shared lock excludes across PROCESSES on each cache that is shared between processes (file, Redis)."""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.processes import PrivateRedis

WORKERS = 4


def _backend(kind: str, where: str) -> object:
    if kind == "file":
        from flask_caching.backends.filesystemcache import FileSystemCache

        return FileSystemCache(where)
    from flask_caching.backends.rediscache import RedisCache

    host, port = where.removeprefix("redis://").split("/")[0].split(":")
    return RedisCache(host=host, port=int(port), key_prefix=f"lock-test-{os.getppid()}:")


def increment(kind: str, where: str, counter: str, key: str, rounds: int, start_at: float) -> int:
    """In a worker process: *rounds* read-sleep-write increments of *counter*, each under the lock *key*;
    returns how many times the lock was held by someone else on entry (must be 0)."""
    from hatidata_auth.shared_lock import SharedLocks

    backend = _backend(kind, where)
    locks = SharedLocks(lambda: backend)
    path = Path(counter)
    overlaps = 0
    time.sleep(max(0.0, start_at - time.time()))
    for _ in range(rounds):
        with locks.hold(key, ttl=10, wait=30) as held:
            assert held
            marker = path.with_suffix(".inside")
            if marker.exists():
                overlaps += 1
            marker.touch()
            value = int(path.read_text() or "0")
            time.sleep(0.002)
            path.write_text(str(value + 1))
            marker.unlink(missing_ok=True)
    return overlaps


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    with ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context("spawn")) as executor:
        list(executor.map(abs, range(WORKERS)))
        yield executor


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    if os.environ.get("TEST_REDIS_URL"):
        yield os.environ["TEST_REDIS_URL"]
        return
    server = PrivateRedis()
    server.start()
    yield server.url
    server.stop()


@pytest.mark.parametrize("kind", ["file", "redis"], ids=["file_cache", "redis_cache"])
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rounds=st.lists(st.integers(5, 25), min_size=2, max_size=WORKERS), key=st.text("abcdef0123", min_size=1))
def test_one_holder_at_a_time_across_processes(kind: str, pool: ProcessPoolExecutor, redis_url: str,
                                               tmp_path_factory: pytest.TempPathFactory, rounds: list[int],
                                               key: str) -> None:
    folder = tmp_path_factory.mktemp("lock")
    where = str(folder / "cache") if kind == "file" else redis_url
    counter = folder / "counter"
    counter.write_text("0")
    start_at = time.time() + 0.3
    futures = [pool.submit(increment, kind, where, str(counter), f"refresh:{key}", n, start_at) for n in rounds]
    assert [f.result(timeout=120) for f in futures] == [0] * len(rounds)
    assert int(counter.read_text()) == sum(rounds)  # no lost update: the increments never interleaved
