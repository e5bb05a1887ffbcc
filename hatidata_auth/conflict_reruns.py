"""Write views that run again when the database rolled their transaction back to break a lock conflict.

Writers that wait for locks in different orders can wait for each other (``services.db_conflicts``): PostgreSQL
breaks the cycle by rolling one of them back, the applier's pool runs its batch again, and a view wrapped here runs
again too (at most ``db_conflicts.ATTEMPTS`` times in all) instead of answering 503. An admin's change that holds
the organization and needs a member's key (a removal, a role change) takes the key without waiting and, when that
member's event holds it, runs again after a pause (``db_conflicts.KeyHeld``): that event shares the organization's
row after its claim took the key, so waiting closed a cycle (a mapping edit queues its recompute instead:
``fanout_jobs.try_hold_members``; ``fanout_jobs.hold_member_of``).

The rule: a view runs again only when nothing of its attempt outlived the rollback (``lasting_effects``). A view
that commits once, at its end, loses all it wrote, audited or queued with the rollback (``unit_of_work``); one
that committed a first step (an audit event before paging a resync, a stored event before its replay's audit) or
sent WorkOS a write (a new connection, a certificate added to one) would do it twice, so its conflict answers 503
``service_unavailable`` with ``Retry-After`` as before. Uploaded files are rewound for the next attempt. Safe
methods (``GET``, ``HEAD``, ``OPTIONS``) are passed through untouched.

A rerun is authorized again: the transaction that won the conflict may have been the one revoking the caller (its
key, its session, its membership, a role that held a permission). The caller was authorized once, before the first
attempt; a rerun goes on only while its credential grants, by the database's committed rows
(``caller_grants.grant_now``, no cache, its rows locked against a winner yet to commit), the same organization and
permissions to the request's address under the organization's access policy; else 503 too, and the client's retry
is authorized anew (401 or 403). The request's own authorization counts as a use of its session (its idle timeout
and sliding expiry run from then), as it does once its queued last-seen write lands (``services.last_seen``). The
step-up window of a sensitive route is not asked again.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from flask import request

from . import lasting_effects
from .extensions import db
from .services import caller_grants, db_conflicts

F = TypeVar("F", bound=Callable[..., Any])
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MARK = "hatidata_reruns_on_conflict"
"""The attribute :func:`rerun_on_conflict` sets on the view it returns (what ``tests/test_conflict_reruns.py``
looks for along every write route's chain of wrapped views)."""


def rerun_on_conflict(view: F) -> F:
    """*view*, run again (after a rollback of the request's session) when the database rolled its transaction back
    to break a deadlock or a serialization failure and the attempt neither committed nor sent WorkOS a write; the
    last conflict, or one after such an effect, propagates (503 ``service_unavailable``)."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if request.method in SAFE_METHODS:
            return view(*args, **kwargs)
        start, attempts = lasting_effects.mark(), 0

        def attempt() -> Any:
            nonlocal attempts
            if attempts:
                for upload in request.files.values():
                    upload.stream.seek(0)
            attempts += 1
            return view(*args, **kwargs)

        def lasted() -> tuple[str, ...]:
            done = tuple(f"it {what} first" for what in lasting_effects.since(start))
            return done or _caller_changed()

        return db_conflicts.retrying(db.session(), attempt, what=f"{request.method} {request.path}", lasted=lasted)

    setattr(wrapped, MARK, True)
    return cast(F, wrapped)


def _caller_changed() -> tuple[str, ...]:
    """``("its caller's credential no longer grants what it did",)`` when the identity the request was authorized
    with no longer matches its credential's rows, locked and read after the rollback
    (``caller_grants.grant_now``: the locks last until the rerun's first commit); else ``()``."""
    from .identity import Identity, runtime

    identity = request.environ.get("hatidata.identity")
    if not isinstance(identity, Identity):
        return ()
    introspector = runtime().introspector
    grant = caller_grants.grant_now(
        db.session(), organization_id=identity.organization_id, user_id=identity.user_id,
        session_id=identity.session_id, api_key_id=identity.api_key_id, address=request.remote_addr,
        now=introspector.clock(), authenticated_at=identity.authenticated_at,
        seen_at=request.environ.get("hatidata.identity_at"),
        default_idle=introspector.active_ttl, default_remembered=introspector.remembered_ttl)
    if grant == (identity.organization_id, identity.permissions):
        return ()
    return ("its caller's credential no longer grants what it did",)


def reruns_on_conflict(view: Callable[..., Any]) -> bool:
    """Whether *view* or a view it wraps (``__wrapped__``, as :func:`functools.wraps` leaves it) is one of
    :func:`rerun_on_conflict`'s."""
    seen: Any = view
    while seen is not None:
        if getattr(seen, MARK, False):
            return True
        seen = getattr(seen, "__wrapped__", None)
    return False
