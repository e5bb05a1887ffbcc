"""``random_ids``: version-4 UUIDs from blocks of ``os.urandom``, never the same twice, in threads or forked
processes (request ids and every row's public id come from it)."""

from __future__ import annotations

import os
import threading
import time
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from hatidata_auth import random_ids
from hatidata_auth.models.base import new_id


def _fork_and_read(pipe_count: int) -> tuple[list[str], list[str]]:
    """The next *pipe_count* ids of a forked child, and of this process after it."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: write its ids and leave without running the test process's cleanups
        try:
            os.write(write_end, ",".join(random_ids.uuid4_hex() for _ in range(pipe_count)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    child = b""
    deadline = time.monotonic() + 10
    while chunk := os.read(read_end, 65536):
        child += chunk
        assert time.monotonic() < deadline
    os.close(read_end)
    os.waitpid(pid, 0)
    return child.decode().split(","), [random_ids.uuid4_hex() for _ in range(pipe_count)]


@settings(max_examples=20, deadline=None)
@given(count=st.integers(min_value=1, max_value=3 * random_ids.BLOCK // 16))
def test_ids_are_version_4_uuids_never_repeated(count: int) -> None:
    ids = [random_ids.uuid4_hex() for _ in range(count)]
    assert len(set(ids)) == count
    for value in ids:
        parsed = uuid.UUID(hex=value)
        assert (parsed.version, parsed.variant, parsed.hex) == (4, uuid.RFC_4122, value)


def test_threads_never_share_an_id() -> None:
    out: list[list[str]] = [[] for _ in range(8)]

    def draw(into: list[str]) -> None:
        into.extend(random_ids.uuid4_hex() for _ in range(2000))

    threads = [threading.Thread(target=draw, args=(into,)) for into in out]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({value for into in out for value in into}) == 8 * 2000


def test_a_forked_child_draws_other_bytes_than_its_parent() -> None:
    random_ids.uuid4_hex()  # the parent holds a partly used block when it forks
    child, parent = _fork_and_read(300)
    assert len(child) == len(parent) == 300
    assert not set(child) & set(parent)


def test_a_child_forked_while_another_thread_draws_does_not_wait_for_it() -> None:
    random_ids._lock.acquire()  # as if another thread were drawing when the process forks
    try:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.write(write_end, random_ids.uuid4_hex().encode())
            finally:
                os._exit(0)
        os.close(write_end)
        deadline = time.monotonic() + 10
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                raise AssertionError("the child waited for a lock held by a thread it does not have")
            time.sleep(0.01)
        drawn = os.read(read_end, 100)
        os.close(read_end)
    finally:
        random_ids._lock.release()
    assert uuid.UUID(hex=drawn.decode()).version == 4


def test_row_ids_take_their_prefix_and_a_uuid() -> None:
    value = new_id("usr")
    prefix, _, rest = value.partition("_")
    assert prefix == "usr"
    assert uuid.UUID(hex=rest).version == 4
