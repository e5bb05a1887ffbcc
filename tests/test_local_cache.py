"""The in-process caches are bounded LRUs with a deadline per entry, renewed on hits (``local_cache.LocalCache``)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from hatidata_auth.local_cache import LocalCache

KEYS = st.sampled_from("abcd")  # few keys and a small cache: evictions and re-reads are frequent
OPERATIONS = st.lists(st.one_of(
    st.tuples(st.just("set"), KEYS, st.integers(1, 20)),  # deadline
    st.tuples(st.just("get"), KEYS, st.sampled_from([0, 0, 0, 10])),  # now: mostly before every deadline
    st.tuples(st.just("pop"), KEYS, st.just(0)),
), min_size=4, max_size=60)


@settings(max_examples=1000, deadline=None)
# the reported fault, minimal: a key read after another was stored is evicted first under FIFO
@example(maxsize=2, operations=[("set", "a", 5), ("set", "b", 5), ("get", "a", 0), ("set", "c", 5), ("get", "a", 0)])
@given(maxsize=st.integers(1, 3), operations=OPERATIONS)
def test_local_cache_behaves_like_an_lru_with_deadlines(maxsize: int, operations: list[tuple[str, str, int]]) -> None:
    cache: LocalCache[str] = LocalCache(maxsize)
    model: OrderedDict[str, tuple[int, str]] = OrderedDict()  # least recently used first
    for n, (op, key, number) in enumerate(operations):
        if op == "set":
            cache.set(key, f"v{n}", float(number))
            model[key] = (number, f"v{n}")
            model.move_to_end(key)
            while len(model) > maxsize:
                model.popitem(last=False)
        elif op == "get":
            expected = None
            if key in model:
                deadline, value = model[key]
                if deadline <= number:
                    del model[key]  # expired: gone
                else:
                    model.move_to_end(key)  # a hit is a use
                    expected = value
            assert cache.get(key, now=float(number)) == expected
        else:
            item = model.pop(key, None)
            assert cache.pop(key) == (None if item is None else item[1])
        assert len(cache) == len(model) <= maxsize


def test_a_hot_entry_survives_churn() -> None:
    """The reported fault: with FIFO eviction a session read on every request was evicted by cold ones."""
    cache: LocalCache[str] = LocalCache(3)
    cache.set("hot", "status", 100.0)
    for n in range(10):
        cache.set(f"cold{n}", "status", 100.0)
        assert cache.get("hot", now=1.0) == "status"


TAGS = st.sampled_from([None, "s1", "s2"])
RENEWING = st.lists(st.one_of(
    # lifetime, renew (0: never), bound on renewals (from now), tag
    st.tuples(st.just("set"), KEYS, st.integers(1, 12), st.sampled_from([0, 4, 10]), st.integers(1, 30), TAGS),
    st.tuples(st.just("get"), KEYS, st.integers(0, 7)),  # seconds passing before the read
    st.tuples(st.just("pop"), KEYS),
    st.tuples(st.just("pop_tag"), TAGS.filter(bool)),
), min_size=4, max_size=60)


@settings(max_examples=1000, deadline=None)
@given(maxsize=st.integers(1, 3), operations=RENEWING)
def test_renewed_entries_live_while_in_use_and_never_past_their_bound(maxsize: int,
                                                                       operations: list[tuple[Any, ...]]) -> None:
    """A hit finding less than half of ``renew`` left moves the deadline to ``now + renew``, never past ``until``;
    a tag pops its entries; it stays an LRU. Read at least every ``renew / 2`` seconds, an entry answers until its
    bound; it never answers at or past it."""
    cache: LocalCache[str] = LocalCache(maxsize)
    # key -> [deadline, value, renew, until, tag], least recently used first
    model: OrderedDict[str, list[Any]] = OrderedDict()
    now = 0
    for n, operation in enumerate(operations):
        if operation[0] == "set":
            _, key, lifetime, renew, bound, tag = operation
            cache.set(key, f"v{n}", float(now + lifetime), renew=float(renew), until=float(now + bound), tag=tag)
            model[key] = [min(now + lifetime, now + bound), f"v{n}", renew, now + bound, tag]
            model.move_to_end(key)
            while len(model) > maxsize:
                model.popitem(last=False)
        elif operation[0] == "get":
            _, key, wait = operation
            now += wait
            expected = None
            entry = model.get(key)
            if entry is not None and entry[0] <= now:
                del model[key]
            elif entry is not None:
                if 2 * (entry[0] - now) < entry[2]:
                    entry[0] = min(now + entry[2], entry[3])
                model.move_to_end(key)
                expected = entry[1]
            found = cache.get(key, now=float(now))
            assert found == expected
            if found is not None:
                assert now < entry[3]  # type: ignore[index]  # never at or past the bound
                assert cache.deadline(key) == entry[0]  # type: ignore[index]
                if entry[2]:  # type: ignore[index]  # renewable: at least half a renewal (or the bound) left
                    assert entry[0] - now >= min(entry[2] / 2, entry[3] - now)  # type: ignore[index]
        elif operation[0] == "pop":
            item = model.pop(operation[1], None)
            assert cache.pop(operation[1]) == (None if item is None else item[1])
        else:
            tagged = [k for k, entry in model.items() if entry[4] == operation[1]]
            for key in tagged:
                del model[key]
            assert cache.pop_tag(operation[1]) == len(tagged)
        assert len(cache) == len(model) <= maxsize
        assert all(cache.deadline(key) == entry[0] for key, entry in model.items())


def test_an_entry_read_every_half_renewal_lives_to_its_bound_and_no_further() -> None:
    cache: LocalCache[str] = LocalCache(3)
    cache.set("session", "status", 10.0, renew=10.0, until=100.0)
    now = 0.0
    while now + 4.9 < 100.0:
        now += 4.9
        assert cache.get("session", now=now) == "status", now
    assert cache.get("session", now=100.0) is None
    cache.set("cookie", "tokens", 50.0, renew=10.0, until=20.0, tag="sid")
    assert cache.deadline("cookie") == 20.0  # never set past its bound either
    assert cache.pop_tag("sid") == 1
    assert cache.get("cookie", now=1.0) is None
