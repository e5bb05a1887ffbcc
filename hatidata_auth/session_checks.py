"""The checks a session credential passes on every request, and this process's memo of their outcome.

A bearer access token or a session cookie becomes an :class:`~.identity.Identity` through cached layers: the
token's verification, the session's status, the organization's access policy, the identity built from them. Each
is a lookup of its own, and together they were most of what ``/api/v1/me`` cost beyond ``/healthz``.
:class:`IdentityMemo` keeps the outcome per credential and answers with it only while nothing it was decided from
can have changed:

- the revocation bus is live in this process (it has applied every eviction published so far) and has evicted
  nothing since the identity was resolved (``bus.epoch``): a revocation, a role or membership change, an
  organization switch, a policy change and a missed message each evict, so each drops every memo at once;
- the clock is before the entry's ``until``: the earliest of the token's expiry, the session's expiry, the
  status's ``max_age`` bound and the instant the policy's absolute lifetime or idle timeout would end it
  (:func:`~.services.access_policy.session_allowed_until`);
- the request comes from the address it was resolved for (the IP allowlist);
- a session whose last-seen time is due is noted from the memo (as the full path notes it), the entry left as it is:
  with many live sessions most uses of each are due, and resolving each again made the cost of a request grow
  with the sessions (``bench/auth.py``).

An entry also lapses after a third of the status TTL, so the full path reaches the session's status entry at least
once while less than half of its TTL is left, and renews it (and the layers beneath) the way their own hits did
(kept half the TTL, the next full path could come just after the status entry had lapsed). Only identities are
remembered: a refusal is decided again each time.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flask import request

from . import step_up
from .causes import Actor
from .local_cache import LocalCache
from .security_reports import report as report_failure
from .services.access_policy import AccessPolicy, session_allowed_until, session_refusal
from .services.credential_status import SessionStatus
from .services.credentials import AddressNotAllowed, SessionEnded

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from .embedding import AuthRuntime
    from .revocation_bus import RevocationBus
    from .services.introspection import Introspector

_ENDED = {"session_idle_timeout": "The session ended after a period of inactivity; sign in again.",
          "session_expired": "The session reached its organization's maximum lifetime; sign in again."}


# --- the access policy of a session request -------------------------------------------------------------------


def _policy_refusal(rt: AuthRuntime, db: Session, status: SessionStatus, authenticated_at: float | None
                    ) -> tuple[str | None, AccessPolicy | None]:
    policy = rt.introspector.policy(db, status.organization_id)
    if policy is None:
        return None, None
    return session_refusal(policy, created_at=status.created_at, last_seen_at=status.last_seen_at,
                           remembered=status.remembered, address=request.remote_addr, now=rt.introspector.clock(),
                           authenticated_at=authenticated_at), policy


def enforce_session_policy(rt: AuthRuntime, db: Session, status: SessionStatus, authenticated_at: float | None
                           ) -> tuple[SessionStatus, AccessPolicy | None]:
    """The organization's access policy, from memory: ``(the status, the policy it passed)``, or 401 when it
    ended the session, 403 off its allowlist. Past the absolute lifetime ``details.login_url`` asks AuthKit for a
    fresh sign-in (``max_age=0``: no loop)."""
    refusal, policy = _policy_refusal(rt, db, status, authenticated_at)
    if refusal == "session_idle_timeout":
        # The cached status may predate another worker's last-seen write: only the database may end it for idling.
        fresh = rt.introspector.reload_session(db, status.workos_session_id)
        if fresh is not None:
            status = fresh
            refusal, policy = _policy_refusal(rt, db, status, authenticated_at)
    if refusal is None:
        return status, policy
    report_failure("access_policy", refusal, organization_id=status.organization_id,
                   actor=Actor("user", status.user_id, status.email), target_type="session",
                   target_id=status.session_id)
    if refusal == "ip_not_allowed":
        raise AddressNotAllowed("Your address is not in your organization's IP allowlist.",
                                details={"address": request.remote_addr})
    login_url = step_up.reauthenticate_url(status.organization_id, step_up.coming_back_to()) \
        if refusal == "session_expired" else None
    raise SessionEnded(refusal, _ENDED[refusal], login_url=login_url)


def allowed_until(introspector: Introspector, token_expires_at: float, status: SessionStatus,
                  policy: AccessPolicy | None, authenticated_at: float | None) -> float:
    """Until when (epoch seconds) a session request that passed every check would pass them again, nothing else
    changing: the earliest of the token's and the session's expiry, the status's ``max_age`` bound and the
    policy's rules of time."""
    until = min(token_expires_at, status.expires_at, status.loaded_at + introspector.max_age)
    if policy is not None:
        until = min(until, session_allowed_until(policy, created_at=status.created_at,
                                                 last_seen_at=status.last_seen_at, remembered=status.remembered,
                                                 authenticated_at=authenticated_at))
    return until


# --- the memo ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Remembered:
    """An identity resolved from a session credential, and what it was decided from."""

    identity: Any  # the frozen Identity
    status: tuple[Any, ...]  # tuple(SessionStatus): untracked by the collector (docs/auth.md)
    epoch: int
    until: float  # epoch seconds
    address: str | None


class IdentityMemo:
    """Identities resolved from session credentials (bearer tokens, cookies), by credential; see the module.

    ``maxsize`` entries (one per session in use), each kept at most ``ttl`` seconds (monotonic)."""

    def __init__(self, bus: RevocationBus, introspector: Introspector, *, maxsize: int, ttl: float) -> None:
        self.bus = bus
        self.introspector = introspector
        self.ttl = ttl
        self.cache: LocalCache[Remembered] = LocalCache(maxsize)

    @staticmethod
    def key(kind: bytes, credential: str) -> bytes:
        """The entry's key: a digest of *credential* (``b"b"`` a bearer token, ``b"c"`` a cookie)."""
        return kind + hashlib.sha256(credential.encode()).digest()

    def epoch(self) -> int | None:
        """The bus's epoch to resolve a credential under, read before anything is, or ``None`` when the bus is
        not live (then nothing is remembered)."""
        return self.bus.epoch if self.bus.local_enabled() else None

    def get(self, key: bytes, address: str | None) -> Any | None:
        """The identity remembered under *key* if it may still be trusted for a request from *address*."""
        epoch = self.epoch()  # applies pending evictions first (the revocation log, without Redis)
        found = self.cache.get(key)
        if found is None or found.epoch != epoch or found.address != address:
            return None
        # Both clocks: the one the checks read (a test may set it) and the one the token's expiry is on.
        if found.until <= max(time.time(), self.introspector.clock()):
            return None
        status = SessionStatus._make(found.status)
        if self.introspector.should_touch(status):
            # Due: note the use as the full path would (queued for the last-seen writer) and go on answering. The
            # entry is left as it is: the writer remembers the note (``due`` is false again until the interval
            # has passed), and its ``until``, decided from the older last-seen time, ends it no later than an
            # idle timeout counted from the new one would. A new entry per use made the collector's oldest
            # generation turn over with the sessions (``docs/auth.md``, "Memory the collector does not walk").
            self.introspector.touch(status)
        return found.identity

    def keep(self, key: bytes, epoch: int | None, identity: Any, status: SessionStatus, until: float,
             address: str | None) -> None:
        """Remember *identity*, resolved under *epoch* (from :meth:`epoch`), if nothing was evicted since."""
        if epoch is None or self.bus.epoch != epoch:
            return
        self.cache.set(key, Remembered(identity, tuple(status), epoch, until, address),
                       time.monotonic() + min(self.ttl, status.cache_ttl / 3))
