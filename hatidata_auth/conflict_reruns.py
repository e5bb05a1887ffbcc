"""Write views that run again when the database rolled their transaction back to break a lock conflict.

An admin's change that holds the organization and then members' keys (a removal, a role change, a mapping edit:
``services.last_admin``, ``services.fanout_jobs.hold_members``) can cross an applier's batch that holds some of
those keys from its claim and then shares the organization's lock. PostgreSQL breaks the cycle by rolling one of
them back (``services.db_conflicts``); the applier's pool runs its batch again, and a view wrapped here runs again
too (at most ``db_conflicts.ATTEMPTS`` times in all) instead of answering 503. Running a view again is sound
because a write view commits once, at its end: what the rolled-back attempt wrote, audited or queued is gone with
it (``unit_of_work``), and its WorkOS calls are idempotent. Safe methods (``GET``, ``HEAD``, ``OPTIONS``) are
passed through untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from flask import request

from .extensions import db
from .services import db_conflicts

F = TypeVar("F", bound=Callable[..., Any])
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MARK = "hatidata_reruns_on_conflict"
"""The attribute :func:`rerun_on_conflict` sets on the view it returns (what ``tests/test_conflict_reruns.py``
looks for along every write route's chain of wrapped views)."""


def rerun_on_conflict(view: F) -> F:
    """*view*, run again (after a rollback of the request's session) when the database rolled its transaction back
    to break a deadlock or a serialization failure; the last conflict propagates (503 ``service_unavailable``)."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if request.method in SAFE_METHODS:
            return view(*args, **kwargs)
        return db_conflicts.retrying(db.session(), lambda: view(*args, **kwargs),
                                     what=f"{request.method} {request.path}")

    setattr(wrapped, MARK, True)
    return cast(F, wrapped)


def reruns_on_conflict(view: Callable[..., Any]) -> bool:
    """Whether *view* or a view it wraps (``__wrapped__``, as :func:`functools.wraps` leaves it) is one of
    :func:`rerun_on_conflict`'s."""
    seen: Any = view
    while seen is not None:
        if getattr(seen, MARK, False):
            return True
        seen = getattr(seen, "__wrapped__", None)
    return False
