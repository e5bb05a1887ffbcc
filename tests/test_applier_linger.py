"""Bigger batches in the live pipeline (issue #14): an applier pauses after a short batch so that the events arriving
meanwhile share the next batch's fixed cost, and stops pausing where that does not pay (a backlog behind a single
entity key, which a claim takes one event at a time). ``services.applier_pool.Linger`` and ``ApplierPool``."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hatidata_auth.services.applier_pool import LINGER_BACKOFF_MAX, ApplierPool, Linger

BATCH = 20


@given(st.lists(st.integers(0, BATCH), max_size=300), st.floats(0.001, 1.0))
def test_a_linger_follows_only_a_short_batch_and_only_while_lingering_pays(sizes: list[int], seconds: float) -> None:
    """For any sequence of batch sizes: a full batch, an empty claim and a zero linger setting never pause; a pause
    is always the configured one; after a linger that did not pay (the next batch no bigger) the next short batch
    does not pause."""
    linger = Linger(seconds, BATCH)
    paused_after: int | None = None
    for claimed in sizes:
        pause = linger.after(claimed)
        assert pause in (0.0, seconds)
        if claimed <= 0 or claimed >= BATCH:
            assert pause == 0.0
        if paused_after is not None and 0 < claimed <= paused_after:
            assert pause == 0.0, "a linger that did not pay is followed by one without"
        paused_after = claimed if pause else None
    assert all(Linger(0.0, BATCH).after(n) == 0.0 for n in sizes)


@given(st.integers(1, 2_000), st.integers(1, BATCH - 1))
def test_a_backlog_that_lingering_cannot_grow_pauses_a_logarithmic_then_bounded_share_of_its_batches(
        batches: int, size: int) -> None:
    """A backlog behind one entity key comes back one (or *size*) event at a time whatever the pause: lingering
    backs off 1, 2, 4 … batches, then pauses once per :data:`LINGER_BACKOFF_MAX` short batches at most."""
    linger = Linger(0.05, BATCH)
    pauses = sum(1 for _ in range(batches) if linger.after(size))
    assert pauses <= 1 + LINGER_BACKOFF_MAX.bit_length() + batches // LINGER_BACKOFF_MAX


def test_a_linger_that_pays_keeps_lingering_and_an_idle_claim_starts_afresh() -> None:
    linger = Linger(0.05, BATCH)
    assert [linger.after(n) for n in (3, 9, 4, 12, BATCH, 2)] == [0.05, 0.05, 0.0, 0.05, 0.0, 0.05]
    assert linger.after(2) == 0.0  # did not pay: off for the next short batch
    assert linger.after(0) == 0.0  # caught up
    assert linger.after(1) == 0.05  # a new burst: lingering is tried again


def _scripted(script: dict[bool, list[int]], calls: dict[bool, list[float]],
              done: threading.Event) -> Callable[[bool], int]:
    """A pool's *run_batch* that answers each thread's sizes from *script* in turn (then 0), noting when it was
    called in *calls*, and sets *done* once both threads ran out."""

    def run_batch(revoking_only: bool) -> int:
        calls[revoking_only].append(time.monotonic())
        remaining = script[revoking_only]
        if not remaining:
            if not script[not revoking_only]:
                done.set()
            return 0
        return remaining.pop(0)

    return run_batch


def test_the_pool_pauses_after_a_short_batch_and_never_in_its_deprovisioning_thread() -> None:
    """Real threads: the pool's batch thread waits its linger after a short batch before it claims again; a full
    batch is followed at once; the thread that takes deprovisionings never waits."""
    calls: dict[bool, list[float]] = {False: [], True: []}
    script = {False: [BATCH, 3, 8], True: [1, 1, 1]}
    done = threading.Event()

    run_batch = _scripted(script, calls, done)

    pool = ApplierPool(run_batch, threads=1, poll_interval=30.0, batch=BATCH, linger=0.3)
    pool.start()
    try:
        assert done.wait(10)
    finally:
        pool.stop()
    batch_calls, urgent_calls = calls[False], calls[True]
    assert batch_calls[1] - batch_calls[0] < 0.25  # after a full batch: at once
    assert batch_calls[2] - batch_calls[1] >= 0.29  # after a short one (3 of 20): the linger
    assert batch_calls[3] - batch_calls[2] >= 0.29  # 8 > 3: the linger paid, so again
    assert all(later - earlier < 0.25 for earlier, later in itertools.pairwise(urgent_calls))


@given(st.integers(1, 400), st.lists(st.integers(0, BATCH - 1), min_size=1, max_size=50))
def test_a_key_backlog_under_any_other_arrivals_is_never_lingered_for(depth: int, arrivals: list[int]) -> None:
    """A backlog of *depth* events behind one key while others keep arriving (*arrivals*: how many more each
    batch finds, cycled; a linger brings more): by sizes alone every linger "paid" (1 + others against 1), so
    back-off never held. With *behind* (events still wait on the batch's keys) no batch of the backlog lingers
    but the last one's, and the bound the docs give holds whatever arrives."""
    lingered_for = 0
    remaining = depth
    linger = Linger(0.05, BATCH, behind=lambda: remaining > 0)
    for others in itertools.islice(itertools.cycle(arrivals), depth):
        remaining -= 1
        pause = linger.after(min(BATCH, 1 + others + (3 * others if lingered_for else 0)))
        lingered_for += bool(pause)
    assert lingered_for <= 1


@given(st.lists(st.tuples(st.integers(0, BATCH), st.booleans()), max_size=200))
def test_behind_is_asked_only_when_a_linger_is_due(steps: list[tuple[int, bool]]) -> None:
    """*behind* costs a query: it is asked at most once a batch and only where a linger would otherwise follow
    (never after a full batch, an empty claim or a batch the back-off skips); its yes is no pause, its no the
    linger."""
    calls: list[bool] = []
    answer = [False]

    def behind() -> bool:
        calls.append(answer[0])
        return answer[0]

    linger = Linger(0.05, BATCH, behind=behind)
    for claimed, waiting in steps:
        answer[0], before = waiting, len(calls)
        pause = linger.after(claimed)
        asked = calls[before:]
        assert len(asked) <= 1
        if asked:
            assert 0 < claimed < BATCH
            assert pause == (0.0 if waiting else 0.05)
        else:
            assert pause == 0.0


def test_the_pool_lingers_when_its_probe_fails_and_never_probes_for_deprovisionings() -> None:
    """A probe that raises (the database gone) is logged and the thread goes on (it lingers, as without the
    probe); the deprovisioning thread never lingers, so never probes."""
    calls: dict[bool, list[float]] = {False: [], True: []}
    script = {False: [3, 3, 3], True: [1, 1]}
    probed: list[str] = []
    done = threading.Event()

    run_batch = _scripted(script, calls, done)

    def behind() -> bool:
        probed.append(threading.current_thread().name)
        raise RuntimeError("database gone")

    pool = ApplierPool(run_batch, threads=1, poll_interval=30.0, batch=BATCH, linger=0.3, behind=behind)
    pool.start()
    try:
        assert done.wait(10)
    finally:
        pool.stop()
    assert calls[False][1] - calls[False][0] >= 0.29  # the probe failed: lingered as before
    assert probed
    assert set(probed) == {"inbox-applier-0"}


def test_stop_ends_a_linger_at_once() -> None:
    """A thread waiting out a long linger stops as soon as it is asked (the linger is a wait on the stop event)."""
    lingering = threading.Event()

    def run_batch(revoking_only: bool) -> int:
        if revoking_only:
            return 0
        lingering.set()
        return 1  # short: a linger of 30 s follows

    pool = ApplierPool(run_batch, threads=1, poll_interval=30.0, batch=BATCH, linger=30.0)
    pool.start()
    assert lingering.wait(10)
    started = time.monotonic()
    pool.stop(timeout=10)
    assert time.monotonic() - started < 10  # not the 30 s linger
    assert not any(thread.is_alive() for thread in pool._threads)


class _Orig(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


def _database_error(sqlstate: str) -> Exception:
    from sqlalchemy.exc import OperationalError

    return OperationalError("UPDATE …", {}, _Orig(sqlstate))


def test_a_batch_rolled_back_to_break_a_deadlock_is_retried_at_once_and_other_failures_wait(
        caplog: pytest.LogCaptureFixture) -> None:
    """A deadlock or a serialization failure (PostgreSQL rolled the batch back to let another transaction go on)
    is retried at once and logged as a warning without a traceback; any other failure waits a poll interval."""
    failures = [_database_error("40P01"), _database_error("40001"), _database_error("57P01")]
    calls: list[float] = []
    done = threading.Event()

    def run_batch(revoking_only: bool) -> int:
        if revoking_only:
            return 0
        calls.append(time.monotonic())
        if failures:
            raise failures.pop(0)
        done.set()
        return 0

    pool = ApplierPool(run_batch, threads=1, poll_interval=0.5, batch=BATCH)
    with caplog.at_level(logging.WARNING, logger="hatidata_auth.services.applier_pool"):
        pool.start()
        assert done.wait(10)
        pool.stop(timeout=10)
    assert calls[1] - calls[0] < 0.25
    assert calls[2] - calls[1] < 0.25  # both conflicts retried at once
    assert calls[3] - calls[2] >= 0.45  # the other failure waited the poll interval
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage().split("(")[1].split(")")[0] for r in warnings] == ["deadlock detected",
                                                                             "serialization failure"]
    assert all(r.exc_info is None for r in warnings)
    assert [r.levelno for r in caplog.records if r.levelno >= logging.ERROR] == [logging.ERROR]


def test_a_conflict_that_comes_back_every_time_waits_the_poll_interval_after_a_few_retries() -> None:
    """A batch that raises a deadlock at once every time (no passing conflict: nothing another transaction ends)
    is retried at once only a few times in a row, then waits the poll interval: no hot loop of claims and
    warnings. A batch that gets through resets the count."""
    calls: list[float] = []

    def run_batch(revoking_only: bool) -> int:
        if revoking_only:
            return 0
        calls.append(time.monotonic())
        raise _database_error("40P01")

    pool = ApplierPool(run_batch, threads=1, poll_interval=0.3, batch=BATCH)
    pool.start()
    time.sleep(1.0)
    pool.stop(timeout=10)
    assert 4 <= len(calls) <= 20, len(calls)  # a few retries at once, then one try per poll interval
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert max(gaps) >= 0.25
