"""Transactions PostgreSQL rolls back to break a conflict with another, and running one again.

Writers that wait for locks in different orders can wait for each other; PostgreSQL then rolls one back (SQLSTATE
``40P01``, after ``deadlock_timeout``) and the other goes on. The orders are as consistent as the work allows
(``services.person_email``), but an applier holds its events' keys from its claim before it locks their
organizations, where the writers that wait for keys lock the organization first. So the loser is run again: an
applier's batch by its pool (``services.applier_pool``), a sign-in's transaction by :func:`retrying`."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.orm import Session

log = logging.getLogger(__name__)
T = TypeVar("T")

CONFLICTS = {"40P01": "deadlock detected", "40001": "serialization failure"}
"""The SQLSTATEs with which PostgreSQL rolls back a transaction to break a conflict with another (a fan-out or a
resync page holding members' keys may cross a batch holding some of them from its claim). Not the freed-email
path: there a transaction holds only its own entity key (and the email's lock), and the users waiting for the
email are linked by jobs under their own keys (``services.freed_email_jobs``); when the freeing transaction took
their keys itself, an immediate retry of a rotation's ring of deadlocks met the same ring again (a livelock)."""

ATTEMPTS = 3
"""Times :func:`retrying` runs a transaction the database keeps rolling back to break conflicts."""

KEY_HELD = "a member's key held"
KEY_HELD_PAUSES = (0.02, 0.05, 0.1, 0.2, 0.4, 0.8)
"""Seconds :func:`retrying` waits (at most; jittered down to half) before each new attempt of a transaction that met
:class:`KeyHeld`, holding nothing: about 1.6 s in all, enough for an applier's batch to commit. Apart from the
:data:`ATTEMPTS` of the database's conflicts."""


class KeyHeld(Exception):
    """A member's entity key (``fanout_jobs.member_key``) is held by another transaction (that member's event being
    applied), and the writer asking for it holds the member's organization's row, so it must not wait: the event's
    transaction shares that row after its claim took the key, and the two waited for each other until PostgreSQL
    rolled one back after ``deadlock_timeout`` (a break-it review, F5). The writer's transaction is rolled back and
    run again after a pause (:func:`retrying`, :data:`KEY_HELD_PAUSES`); past them, the app answers 503
    ``service_unavailable`` with ``Retry-After`` (``errors``)."""

    def __init__(self, message: str = "A directory event of this member is being applied; retry shortly.") -> None:
        super().__init__(message)
        self.message = message


UNIQUE_VIOLATION = "23505"
LOCK_TIMEOUT = "55P03"
"""A statement waited for a lock longer than ``lock_timeout`` (``HATIDATA_DB_LOCK_TIMEOUT``): not run again at once
(it would wait as long again), answered 503 with ``Retry-After``."""


def waited_too_long(exc: BaseException) -> bool:
    """Whether *exc* is PostgreSQL's ``lock_timeout`` giving up a lock wait."""
    return str(getattr(getattr(exc, "orig", None), "sqlstate", None)) == LOCK_TIMEOUT


def created_meanwhile(exc: BaseException) -> bool:
    """Whether *exc* is a unique violation: another transaction inserted the row first (committed while this
    one's insert waited for it); a later try, its reads taken afresh, finds that row."""
    return str(getattr(getattr(exc, "orig", None), "sqlstate", None)) == UNIQUE_VIOLATION


def conflict(exc: BaseException) -> str | None:
    """What conflict the database broke by rolling back the transaction that raised *exc*, or :data:`KEY_HELD` for
    a writer that did not wait for a member's key (:class:`KeyHeld`); ``None``: another error."""
    if isinstance(exc, KeyHeld):
        return KEY_HELD
    return CONFLICTS.get(str(getattr(getattr(exc, "orig", None), "sqlstate", None)))


def retrying(session: Session, work: Callable[[], T], *, what: str, attempts: int = ATTEMPTS,
             lasted: Callable[[], tuple[str, ...]] | None = None) -> T:
    """Run *work* (which ends by committing *session*'s transaction) and return what it returns; when the database
    rolled it back to break a conflict, roll the session back (also when it is not run again) and run it again, at
    most *attempts* times in all (logged as a warning, naming *what*). *lasted*, asked after a conflict and before
    the next attempt, names why *work* may not run again (what its attempt did that the rollback did not undo:
    ``lasting_effects.since``; its caller's grant gone); when it names anything, *work* is not run again (logged)
    and the conflict is raised. A conflict *lasted* itself meets (its locks, ``caller_grants``) uses an attempt like
    one of *work*'s, and *lasted* is asked again. A :class:`KeyHeld` is met again after a pause, on a budget of its
    own (:data:`KEY_HELD_PAUSES`). Raises what *work* or *lasted* raise otherwise, and the last conflict."""
    last: Exception | None = None
    lost = held = 0  # attempts the database rolled back; attempts that met a held key
    while True:
        try:
            if last is not None:
                kept = lasted() if lasted is not None else ()
                if kept:
                    log.warning("%s rolled back by the database (%s); not run again: %s", what, conflict(last),
                                "; ".join(kept))
                    break
                if isinstance(last, KeyHeld):
                    log.info("%s met %s; running it again after a pause (attempt %d)", what, KEY_HELD, held + 1)
                else:
                    log.warning("%s rolled back by the database (%s); running it again (attempt %d of %d)", what,
                                conflict(last), lost + 1, attempts)
            return work()
        except Exception as exc:
            if conflict(exc) is None:
                raise
            session.rollback()  # now, whatever comes next: what is undone on a rollback is undone before the answer
            if isinstance(exc, KeyHeld):
                if held == len(KEY_HELD_PAUSES):
                    raise
                time.sleep(KEY_HELD_PAUSES[held] * random.uniform(0.5, 1.0))  # jittered: reruns spread
                held += 1
            else:
                lost += 1
                if lost == attempts:
                    raise
            last = exc
    assert last is not None  # the loop returns, raises, or breaks after a conflict
    raise last
