"""Sessions' last-seen time and sliding expiry, written off the request path in batches, once per interval across
every process.

A request whose session is due (:meth:`LastSeenWriter.due`: not seen for ``interval`` seconds, by the status it
holds or by this process) only notes it (:meth:`LastSeenWriter.note`, a dictionary write). A background thread per
process flushes the notes every ``flush_every`` seconds: with a claimer (Redis: ``SET NX EX interval`` per
session, pipelined) only the sessions no other process claimed within the interval go on, and one transaction
updates them all, each row only if no process wrote it within the interval (the condition holds the throttle
across processes without Redis too). The flush never waits for a row (PostgreSQL: ``SKIP LOCKED``): a note whose
row another transaction holds goes back for the next flush. A note not yet flushed when the process dies is lost:
the session's last-seen time is then up to ``flush_every`` seconds older than it could be.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import Engine, and_, bindparam, func, or_, select, update

from ..models import AuthSession
from .credential_status import SessionStatus

log = logging.getLogger(__name__)

Claimer = Callable[[list[str], int], set[str]]
"""``claim(session ids, seconds)``: the ids this process may write now (claimed for *seconds* everywhere)."""


class Seen(NamedTuple):
    """One pending write: the session (id, organization) was used at ``at`` (epoch s), sliding to ``expires_at``.

    Pending, it is kept as the plain tuple ``tuple(seen)``, which the collector stops tracking within its first
    two collections: a note lives until the next flush, long enough to reach the oldest generation, and a tracked one
    counted towards the next full collection (``docs/auth.md``, "Memory the collector does not walk")."""

    session_id: str
    organization_id: str
    at: float
    expires_at: float | None
    claimed: bool = False
    """Put back by a flush that had claimed it (the claim holds for the interval: not asked again)."""


def _after_fork(ref: weakref.ref[LastSeenWriter]) -> None:
    writer = ref()
    if writer is not None:
        writer._lock = threading.Lock()
        writer._pid, writer._thread, writer._pending = os.getpid(), None, {}


class LastSeenWriter:
    """Pending last-seen writes of this process and the thread that flushes them.

    *engine* returns the database engine (looked up lazily, in the flush thread); *claim*, when given, throttles
    across processes before the database does.
    """

    def __init__(self, engine: Callable[[], Engine], *, interval: float, flush_every: float = 1.0,
                 claim: Claimer | None = None, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self.interval = interval
        self.flush_every = flush_every
        self._claim = claim
        self.clock = clock
        self._pending: dict[str, tuple[Any, ...]] = {}  # tuple(Seen)
        self._noted: OrderedDict[str, float] = OrderedDict()  # session id -> noted at, oldest first
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._thread: threading.Thread | None = None
        # A child forked while another thread held the lock would inherit it held for ever.
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _after_fork(ref))

    def due(self, status: SessionStatus) -> bool:
        """Whether the session's last-seen time is due to be written."""
        last = max(status.last_seen_at or 0.0, self._noted.get(status.session_id, 0.0))
        return self.clock() - last >= self.interval

    def note(self, status: SessionStatus) -> SessionStatus:
        """Queue the write for the flush thread; returns the status as it will be (seen now, expiry slid)."""
        now = self.clock()
        seen = status.seen(now)
        with self._lock:
            if self._pid != os.getpid():  # a forked child: no thread, and its parent's notes are the parent's
                self._pid, self._thread, self._pending = os.getpid(), None, {}
            # Every note within the last interval, no other: a use answered from memory (the identity memo keeps
            # the status it was resolved from) is not due again only while its note is here. A bound on the count
            # that forgot recent notes made every memo hit due again after each clear.
            self._noted[status.session_id] = now
            self._noted.move_to_end(status.session_id)
            horizon = now - self.interval
            while self._noted and self._noted[oldest := next(iter(self._noted))] <= horizon:
                del self._noted[oldest]
            self._pending[status.session_id] = (status.session_id, status.organization_id, now,
                                                seen.expires_at if status.sliding_ttl is not None else None, False)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="hatidata-last-seen", daemon=True)
                self._thread.start()
        return seen

    @property
    def pending(self) -> int:
        """How many writes wait for the next flush."""
        return len(self._pending)

    def flush(self) -> int:
        """Write what is pending now (the flush thread calls it; tests may too); returns the rows written."""
        # The notes stay plain tuples (tuple(Seen), fields by position) while written: a batch of named views
        # outlived enough collections during a slow write to count towards a full one (docs/auth.md).
        with self._lock:
            batch, self._pending = list(self._pending.values()), {}
        if not batch:
            return 0
        if self._claim is not None:
            try:
                mine = self._claim([note[0] for note in batch if not note[4]], max(1, int(self.interval)))
                batch = [note for note in batch if note[4] or note[0] in mine]
            except Exception:  # noqa: BLE001 - without the claim the database condition still throttles
                log.warning("last-seen claim unavailable; relying on the database condition")
        if not batch:
            return 0
        written, held = self._write(batch)
        if held:  # another transaction holds their rows: the next flush tries again (a newer note wins)
            stale = self.clock() - self.interval  # its claim has expired: another process may note it now
            with self._lock:
                for note in held:
                    newer = self._pending.get(note[0], note)
                    if newer[2] > stale:
                        self._pending[note[0]] = (*newer[:4], True)
        return written

    def _write(self, batch: Iterable[tuple[Any, ...]]) -> tuple[int, list[tuple[Any, ...]]]:
        """Write *batch* (``tuple(Seen)`` each); ``(rows written, the notes whose rows another transaction holds)``."""
        # Never waits for a row lock: revocations lock sessions in id order, but an applier's batch locks them in
        # its events' order, so a flush that waited (in any order) could close a cycle with one (a break-it
        # review) and lose its whole batch. A session another transaction holds is handed back instead (most
        # likely it is being ended, and the next flush finds it revoked).
        ordered, held = sorted(batch), []  # by session id first
        condition = and_(AuthSession.id == bindparam("sid"), AuthSession.organization_id == bindparam("org"),
                         AuthSession.revoked_at.is_(None),
                         or_(AuthSession.last_seen_at.is_(None), AuthSession.last_seen_at < bindparam("before")))
        slid = func.coalesce(bindparam("exp", type_=AuthSession.expires_at.type), AuthSession.expires_at)
        with self._engine().begin() as conn:
            if conn.dialect.name == "postgresql":
                free = set(conn.scalars(select(AuthSession.id).where(
                    AuthSession.id.in_([note[0] for note in ordered]))
                    .order_by(AuthSession.id).with_for_update(skip_locked=True)))
                others = [note[0] for note in ordered if note[0] not in free]
                present = set(conn.scalars(select(AuthSession.id).where(AuthSession.id.in_(others)))) \
                    if others else set()
                held = [note for note in ordered if note[0] in present]  # not a row deleted since
                ordered = [note for note in ordered if note[0] in free]
            rows = [{"sid": sid, "org": org, "at": datetime.fromtimestamp(at, UTC),
                     "before": datetime.fromtimestamp(at - self.interval, UTC),
                     "exp": None if exp is None else datetime.fromtimestamp(exp, UTC)}
                    for sid, org, at, exp, _claimed in ordered]
            if not rows:
                return 0, held
            return int(conn.execute(update(AuthSession).where(condition).values(
                last_seen_at=bindparam("at"), expires_at=slid), rows).rowcount), held

    # --- the flush thread -------------------------------------------------------------------------------------

    def _run(self) -> None:
        # Runs while there is something to write: an idle process (or app) keeps no thread.
        while True:
            time.sleep(self.flush_every)
            try:
                self.flush()
            except Exception:  # a database hiccup loses one batch of last-seen times, no more
                log.exception("could not write last-seen times")
            with self._lock:
                if not self._pending:
                    self._thread = None
                    return


def redis_claimer(client: object, prefix: str) -> Claimer:
    """Claims through Redis: ``SET <prefix>seen:<id> 1 NX EX seconds`` for each id, in one pipeline."""

    def claim(session_ids: list[str], seconds: int) -> set[str]:
        pipe = client.pipeline(transaction=False)  # type: ignore[attr-defined]
        for sid in session_ids:
            pipe.set(f"{prefix}seen:{sid}", b"1", nx=True, ex=seconds)
        return {sid for sid, won in zip(session_ids, pipe.execute(), strict=True) if won}

    return claim
