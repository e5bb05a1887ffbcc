"""What a request did that a rollback cannot undo: the transactions it committed and the writes it sent to WorkOS.

Both are counted per context (a request's thread), so that a view the database rolled back to break a lock
conflict is run again only when nothing of its attempt outlived the rollback (``conflict_reruns``): a view that
committed a first step (an audit event, a stored webhook event) or asked WorkOS to create, change or delete
something would do it twice. Nothing of the app, Flask or SQLAlchemy here: the WorkOS transport (the lowest layer)
notes its writes, and the app factory has every session of ours (``unit_of_work.AppSession``) note its commits
(:func:`note_commit`).
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
"""HTTP methods that ask, never change (RFC 9110 §9.2.1): a WorkOS call by one of them is not a lasting effect."""

_commits: ContextVar[int] = ContextVar("hatidata_commits", default=0)
_outside_writes: ContextVar[int] = ContextVar("hatidata_outside_writes", default=0)


@dataclass(frozen=True, slots=True)
class Mark:
    """The counts of this context's commits and WorkOS writes at one moment (:func:`mark`)."""

    commits: int
    outside_writes: int


def mark() -> Mark:
    """This context's counts now, to compare with :func:`since` later."""
    return Mark(_commits.get(), _outside_writes.get())


def since(start: Mark) -> tuple[str, ...]:
    """What this context did since *start* that a rollback cannot undo: ``"committed"`` and/or
    ``"called WorkOS"`` (empty: nothing)."""
    return tuple(what for what, moved in (("committed", _commits.get() != start.commits),
                                          ("called WorkOS", _outside_writes.get() != start.outside_writes))
                 if moved)


def note_outside_write(method: str) -> None:
    """Count a request to WorkOS by *method* (nothing for a safe method). Noted before it is sent: a write that
    timed out may still have been applied."""
    if method.upper() not in SAFE_METHODS:
        _outside_writes.set(_outside_writes.get() + 1)


def note_commit(session: Any) -> None:
    """Count a committed transaction (SQLAlchemy's ``after_commit`` session event: the app factory listens with it
    on ``unit_of_work.AppSession``)."""
    _commits.set(_commits.get() + 1)
