"""Applier threads of one process (:class:`ApplierPool`): they run the inbox's batches
(:func:`~hatidata_auth.services.inbox_worker.apply_batch`), woken by PostgreSQL ``LISTEN`` (``NOTIFY`` is sent by
:func:`~hatidata_auth.services.inbox.store`'s transaction), by :meth:`ApplierPool.wake` in the same process, or else
every *poll_interval* seconds, and pause after a short batch so that the next one is bigger (:class:`Linger`). In a
web process they give way to its requests for a while (:class:`GiveWay`, fed by a :class:`RequestGauge`). Nothing
here knows Flask: the pool is given the function that runs a batch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ..models.inbox import INBOX_CHANNEL, REVOKING_NOTE
from .db_conflicts import conflict
from .inbox_claim import DEFAULT_BATCH

__all__ = ["LINGER", "LINGER_BACKOFF_MAX", "WAKE_COALESCE", "ApplierPool", "GiveWay", "Linger", "RequestGauge"]

log = logging.getLogger(__name__)

WAKE_COALESCE = 0.05
"""Seconds an applier that was idle waits after its wake-up before it claims (see :class:`ApplierPool`)."""
LINGER = 0.05
"""Seconds an applier waits after a short batch before it claims again (``HATIDATA_INBOX_LINGER``; see
:class:`Linger`)."""
LINGER_BACKOFF_MAX = 64
"""At most this many short batches in a row go without a linger after lingers that did not pay."""


class Linger:
    """When an applier thread pauses before its next claim. A batch that came back short (fewer events than the
    batch size, yet some) means the backlog is thin: waiting *seconds* lets the events arriving meanwhile make the
    next batch bigger, and a batch's fixed cost (the claim, the tenant's lock, the audit chain's head, the commit)
    is then shared by more events. A linger pays when the next batch is bigger than the one before it; one that
    did not pay (a backlog behind a single entity key, which a claim takes one event at a time, or a trickle)
    turns lingering off for the next 1, 2, 4 … :data:`LINGER_BACKOFF_MAX` short batches, so such a backlog is
    slowed by one linger per that many batches at most. A full batch never lingers; an empty claim (caught up)
    starts afresh. One per thread: not thread-safe.

    The sizes alone cannot tell a key's backlog from a trickle once other events arrive too: each linger then
    brings the key's next event plus those that arrived meanwhile, more than the batch before it, so it "paid"
    and back-off never held (a 200-event backlog of one user under a trickle of one event every 30 ms drained in
    10.4 s against 3.2 s without lingering). *behind* (asked only when a linger is due: whether events still
    wait on the keys of the batch just applied) says so: the next batch takes one of them at once whatever the
    wait, and its batches are as many however full, so no linger then (and no change to the back-off)."""

    def __init__(self, seconds: float, batch: int, behind: Callable[[], bool] | None = None) -> None:
        self.seconds, self.batch, self._behind = seconds, batch, behind
        self._lingered_after: int | None = None  # the size of the short batch the last linger followed
        self._skip = 0  # short batches still to go without a linger
        self._backoff = 1  # how many the next linger that does not pay turns it off for

    def after(self, claimed: int) -> float:
        """Seconds to wait after a batch of *claimed* events (0: claim again at once)."""
        if self._lingered_after is not None:
            if claimed > self._lingered_after:
                self._backoff = 1
            else:
                self._skip, self._backoff = self._backoff, min(2 * self._backoff, LINGER_BACKOFF_MAX)
            self._lingered_after = None
        if claimed <= 0:
            self._skip, self._backoff = 0, 1
            return 0.0
        if self.seconds <= 0 or claimed >= self.batch:
            return 0.0
        if self._skip:
            self._skip -= 1
            return 0.0
        if self._behind is not None and self._behind():
            return 0.0
        self._lingered_after = claimed
        return self.seconds


QUIET_AFTER = 0.005
"""Seconds after a request ends that its process still counts as serving (a keep-alive client's next request is
usually this close behind; :class:`RequestGauge`)."""
GIVE_WAY_STEP = 0.05
"""Seconds between two looks at the gauge while an applier gives way."""


class RequestGauge:
    """Whether the process is serving requests: how many are in flight and when the last one ended. Thread-safe;
    *clock* is :func:`time.monotonic`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._in_flight = 0
        self._ended = float("-inf")

    def enter(self) -> None:
        """A request started."""
        with self._lock:
            self._in_flight += 1

    def leave(self) -> None:
        """A request ended (one :meth:`enter` each)."""
        with self._lock:
            self._in_flight -= 1
            self._ended = self._clock()

    def busy(self) -> bool:
        """A request is in flight, or one ended less than :data:`QUIET_AFTER` seconds ago."""
        with self._lock:
            return self._in_flight > 0 or self._clock() - self._ended < QUIET_AFTER


class GiveWay:
    """How long an applier thread of a web process waits for a pause in its requests before it claims: while the
    *gauge* says busy, at most *seconds* in all from the moment it first gave way until it finds the inbox empty
    (:meth:`caught_up`). An acknowledgement costs one insert and an applied event several statements: on a busy
    machine the acknowledgements of a burst go first, and events wait at most *seconds* longer to be applied (a
    longer burst is then applied alongside, as without giving way). Events declared as taking access away are not
    held: the request applies a person's (``inbox_runtime.acknowledged``), and the revoking thread, which does not
    give way, takes the head of every key holding one (``inbox_claim.claim``). *seconds* 0: never wait. One per
    thread: not thread-safe."""

    def __init__(self, gauge: RequestGauge | None, seconds: float, clock: Callable[[], float] = time.monotonic,
                 step: float = GIVE_WAY_STEP) -> None:
        self._gauge, self._seconds, self._clock, self._step = gauge, seconds, clock, step
        self._since: float | None = None  # when this thread first gave way since it last caught up

    def wait(self, stop: threading.Event) -> float:
        """Wait while the gauge says busy, within what is left of the allowance; returns the seconds waited."""
        if self._gauge is None or self._seconds <= 0:
            return 0.0
        started = self._clock()
        while self._gauge.busy() and not stop.is_set():
            now = self._clock()
            if self._since is None:
                self._since = now
            left = self._since + self._seconds - now
            if left <= 0:
                break
            stop.wait(min(self._step, left))
        return self._clock() - started

    def caught_up(self) -> None:
        """The inbox had nothing for this thread: the next backlog gets the whole allowance."""
        self._since = None


CONFLICT_RETRIES = 3
"""Conflicts in a row an applier retries at once; past them it waits the poll interval (a conflict that comes back
at once every time is no passing one: a hot loop of claims and warnings otherwise)."""


class ApplierPool:
    """Applier threads of one process: each runs *run_batch* (which returns how many events it claimed) until it
    claims nothing, then sleeps until woken or *poll_interval* seconds pass; woken, it waits
    :data:`WAKE_COALESCE` more, so the wake-ups of a burst cost one claim. After a batch shorter than *batch*
    events it waits *linger* seconds before it claims again (:class:`Linger`; 0: never), unless *behind* (called
    in the same thread, right after that batch) says events wait on the keys it applied. One more thread runs
    ``run_batch(True)``: it claims only events that take access away, so a deprovisioning never waits for the
    batches in progress (it never lingers).

    *listen_dsn* (a libpq connection string) adds a thread that ``LISTEN``\\ s on the inbox channel and wakes
    them on a ``NOTIFY`` (then once more for those that came in the next :data:`WAKE_COALESCE` seconds).

    With a *gauge* (the process's requests), a thread other than the revoking one gives way to them for at most
    *give_way* seconds per backlog (:class:`GiveWay`); *on_give_way* is told each wait's seconds.
    """

    def __init__(self, run_batch: Callable[[bool], int], *, threads: int, poll_interval: float = 1.0,
                 listen_dsn: str | None = None, name: str = "inbox-applier", batch: int = DEFAULT_BATCH,
                 linger: float = 0.0, behind: Callable[[], bool] | None = None,
                 gauge: RequestGauge | None = None, give_way: float = 0.0,
                 on_give_way: Callable[[float], None] | None = None) -> None:
        self._run_batch = run_batch
        self._gauge, self._give_way, self._on_give_way = gauge, give_way, on_give_way
        self._behind = behind
        self._count = threads
        self._poll = poll_interval
        self._listen_dsn = listen_dsn
        self._name = name
        self._batch = batch
        self._linger = linger
        self._wake = threading.Event()
        self._wake_urgent = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        """Whether the threads have been started (and not stopped)."""
        return bool(self._threads) and not self._stop.is_set()

    def start(self) -> None:
        """Start the threads (once; later calls do nothing)."""
        with self._lock:
            if self._threads or self._count <= 0:
                return
            targets: list[Callable[[], None]] = [self._loop] * self._count + [self._urgent_loop]
            if self._listen_dsn:
                targets.append(self._listen)
            for i, target in enumerate(targets):
                thread = threading.Thread(target=target, name=f"{self._name}-{i}", daemon=True)
                self._threads.append(thread)
                thread.start()

    def wake(self, revoking: bool = True) -> None:
        """Events may be waiting: wake the sleeping appliers (the revoking thread too unless *revoking* is false:
        none of them takes access away)."""
        self._wake.set()
        if revoking:
            self._wake_urgent.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the threads to stop and wait up to *timeout* seconds for each (a batch in progress finishes)."""
        self._stop.set()
        self.wake()
        for thread in self._threads:
            thread.join(timeout)

    def _loop(self, revoking_only: bool = False) -> None:
        wake = self._wake_urgent if revoking_only else self._wake
        linger = Linger(0.0 if revoking_only else self._linger, self._batch,
                        None if revoking_only or self._behind is None else self._behind_or_not)
        give_way = GiveWay(None if revoking_only else self._gauge, self._give_way)
        conflicts = 0
        while not self._stop.is_set():
            waited = give_way.wait(self._stop)
            if waited and self._on_give_way is not None:
                self._on_give_way(waited)
            wake.clear()
            try:
                claimed = self._run_batch(revoking_only)
            except Exception as exc:
                conflicts = conflicts + 1 if conflict(exc) else 0
                if conflicts and conflicts <= CONFLICT_RETRIES:  # rolled back to break a conflict: nothing wrong
                    log.warning("inbox applier batch rolled back by the database (%s); retrying at once",
                                conflict(exc))
                    continue
                if conflicts:
                    log.warning("inbox applier batch rolled back by the database (%s) %s times in a row; retrying "
                                "in %ss", conflict(exc), conflicts, self._poll)
                    self._stop.wait(self._poll)
                    continue
                log.exception("inbox applier batch failed; retrying in %ss", self._poll)
                self._stop.wait(self._poll)
                continue
            conflicts = 0
            if not claimed:
                give_way.caught_up()
            pause = linger.after(claimed)
            if pause:
                self._stop.wait(pause)
            elif not claimed and wake.wait(self._poll):
                # Caught up and woken: let a burst of NOTIFYs (one per stored event) gather, so that it
                # costs one claim per thread, not one per event.
                self._stop.wait(WAKE_COALESCE)

    def _behind_or_not(self) -> bool:
        assert self._behind is not None
        try:
            return self._behind()
        except Exception:  # the probe failing (the database gone) must not stop the thread: linger as before
            log.warning("inbox applier: probing the keys behind a batch failed; lingering", exc_info=True)
            return False

    def _urgent_loop(self) -> None:
        self._loop(revoking_only=True)

    def _listen(self) -> None:
        import psycopg

        while not self._stop.is_set():
            try:
                with psycopg.connect(self._listen_dsn or "", autocommit=True) as conn:
                    conn.execute(f"LISTEN {INBOX_CHANNEL}")
                    self.wake()  # catch up on what arrived while nobody listened
                    while not self._stop.is_set():
                        # Every note of the read that brings the first: stopped after one, the generator drops
                        # the rest of its packet (a revoking note sent behind a job's "" one).
                        notes = {note.payload for note in conn.notifies(timeout=1.0, stop_after=1)}
                        if not notes:
                            continue
                        # A burst sends a NOTIFY per stored event: woken once, the appliers take what arrived
                        # meanwhile in one claim, and this thread does not take the interpreter from the
                        # requests once per event; what arrived while it waited wakes them once more. The
                        # deprovisioning thread only for work that may take access away (REVOKING_NOTE).
                        self.wake(REVOKING_NOTE in notes)
                        self._stop.wait(WAKE_COALESCE)
                        later = {n.payload for n in conn.notifies(timeout=0)}
                        if later:
                            self.wake(REVOKING_NOTE in later)
            except psycopg.Error as exc:
                log.warning("inbox LISTEN connection lost (%s); polling every %ss until it is back", exc, self._poll)
                self._stop.wait(self._poll)
