"""The in-process status cache is a bounded LRU with a deadline per entry (``revocation_bus.LocalCache``)."""

from __future__ import annotations

from collections import OrderedDict

from hypothesis import example, given, settings
from hypothesis import strategies as st

from hatidata_auth.revocation_bus import LocalCache

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
