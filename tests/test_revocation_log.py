"""The machine-wide revocation log of the embedded profile (no Redis): the ring file and the bus that reads it."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from hatidata_auth.revocation_bus import RevocationBus
from hatidata_auth.revocation_log import MAX_KEY, RevocationLog

KEYS = st.text(alphabet="abcdef0123456789_", min_size=1, max_size=12)
OPERATIONS = st.lists(st.one_of(st.tuples(st.just("append"), st.sampled_from(["session", "api_key"]), KEYS),
                                st.tuples(st.just("read"), st.just(""), st.just(""))), max_size=60)


@settings(max_examples=60, deadline=None)
@given(slots=st.integers(min_value=1, max_value=8), operations=OPERATIONS)
def test_a_reader_gets_every_entry_it_missed_or_is_told_to_forget_everything(
    tmp_path_factory: object, slots: int, operations: list[tuple[str, str, str]],
) -> None:
    folder = tmp_path_factory.mktemp("log")  # type: ignore[attr-defined]
    writer, reader = RevocationLog(folder / "r.log", slots=slots), RevocationLog(folder / "r.log", slots=slots)
    appended: list[tuple[str, str]] = []
    seen = reader.head()
    try:
        for op, kind, key in operations:
            if op == "append":
                appended.append((kind, key))
                assert writer.append(kind, key) == len(appended)
                continue
            head, entries = reader.read_since(seen)
            assert head == len(appended)
            missed = appended[seen:]
            if len(missed) > slots:
                assert entries is None
            else:
                assert entries == missed
            seen = head
    finally:
        writer.close()
        reader.close()


def test_an_oversized_key_becomes_forget_everything(tmp_path: Path) -> None:
    log = RevocationLog(tmp_path / "r.log")
    log.append("session", "x" * (MAX_KEY + 1))
    assert log.read_since(0) == (1, [("all", "*")])
    log.close()


def test_a_reader_ahead_of_a_recreated_log_forgets_everything(tmp_path: Path) -> None:
    log = RevocationLog(tmp_path / "r.log")
    log.append("session", "a")
    log.close()
    (tmp_path / "r.log").write_bytes(b"garbage")
    fresh = RevocationLog(tmp_path / "r.log")
    assert fresh.read_since(1) == (0, None)
    fresh.close()


def _append_in_child(path: str, keys: list[str]) -> None:
    log = RevocationLog(Path(path))
    for key in keys:
        log.append("session", key)


def test_appends_from_other_processes_are_all_seen(tmp_path: Path) -> None:
    path = tmp_path / "r.log"
    log = RevocationLog(path)
    start = log.head()
    ctx = mp.get_context("fork")
    children = [ctx.Process(target=_append_in_child, args=(str(path), [f"s{n}_{i}" for i in range(200)]))
                for n in range(3)]
    for child in children:
        child.start()
    for child in children:
        child.join(30)
        assert child.exitcode == 0
    head, entries = log.read_since(start)
    assert head - start == 600
    assert entries is not None
    assert sorted(key for _, key in entries) == sorted(f"s{n}_{i}" for n in range(3) for i in range(200))
    log.close()


def test_a_bus_without_redis_evicts_what_another_process_published(tmp_path: Path) -> None:
    mine, theirs = RevocationBus(None, log_path=tmp_path / "r.log"), RevocationBus(None, log_path=tmp_path / "r.log")
    assert mine.local_enabled()
    mine.sessions.set("s1", "status-1", 1e12)
    mine.sessions.set("s2", "status-2", 1e12)
    mine.api_keys.set("hash", type("K", (), {"key_id": "key_1"})(), 1e12)
    epoch = mine.epoch
    assert theirs.publish("session", "s1")
    assert theirs.publish("api_key", "key_1")
    assert mine.local_enabled()
    assert mine.sessions.get("s1") is None
    assert mine.sessions.get("s2") == "status-2"
    assert mine.api_keys.get("hash") is None  # evicted by its key id
    assert mine.epoch > epoch  # a load racing with these evictions is not cached
    theirs.publish("all", "*")
    assert mine.local_enabled()
    assert len(mine.sessions) == 0


def test_a_bus_without_redis_or_log_never_trusts_memory() -> None:
    bus = RevocationBus(None)
    assert not bus.local_enabled()
    assert not bus.publish("session", "s1")


def test_an_unreadable_log_fails_closed(tmp_path: Path) -> None:
    (tmp_path / "blocked").write_text("a file where the log's folder should be")
    bus = RevocationBus(None, log_path=tmp_path / "blocked" / "r.log")
    assert not bus.local_enabled()
    assert not bus.publish("session", "s1")
