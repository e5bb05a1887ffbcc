"""What a caller's credential grants now, by the database's committed rows (never a cache): for a write that runs
again after a lock conflict (``conflict_reruns``), which the transaction that won may have won by revoking its
caller.

A plain read right after the rollback is not enough: PostgreSQL rolls the loser back while the winner still holds
its locks and has not committed, so the read sees the caller as it was; the rerun then waits for the winner on the
organization's lock and writes after the revocation (a break-it review's repro). So the caller's rows are locked
first, in the writers' order (the organization ``FOR NO KEY UPDATE``, then the member, then the key or session ``FOR
SHARE``): a winner that has written one of them is waited for and its commit read; one that has not yet must wait
for the rerun's commit, which is then ordered before it. The locks last until the rerun's first commit. A winner
that took them in another order meets a deadlock, which PostgreSQL breaks again; a conflict met by these locks uses
an attempt and the next one checks again (``db_conflicts.retrying``). SQLite runs one writer at a time and never
rolls one back to break a conflict, so nothing there reruns.
"""

from __future__ import annotations

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from ..models import ApiKey, AuthSession, Membership, Organization
from ..roles import permissions_for
from .access_policy import api_key_refusal, load_policy, networks, session_refusal
from .credential_status import load_api_key_status, load_session_status

Grant = tuple[str, frozenset[str]]
"""An organization id and the permissions held in it."""


def grant_now(db: Session, *, organization_id: str, user_id: str | None, session_id: str | None,
              api_key_id: str | None, address: str | None, now: float, authenticated_at: float | None,
              default_idle: int, default_remembered: int, seen_at: float | None = None) -> Grant | None:
    """The organization and permissions a session (by our id) or an API key (by its id) of *user_id* in
    *organization_id* grants a request from *address* at *now* (Unix seconds), after locking the rows it depends
    on for the transaction (module docstring); ``None`` when it grants nothing: revoked, expired, unknown, its
    member or organization no longer active, or refused by the organization's access policy (IP allowlist, the
    key's own allowlist, a session's absolute lifetime or idle timeout, counted from *authenticated_at* too).
    *seen_at* (epoch s) is the request's own use of the session: its idle timeout and sliding expiry run from it
    at the latest, whether or not the last-seen write it queued has landed (``services.last_seen``)."""
    # FOR NO KEY UPDATE, not FOR SHARE: reruns in one organization would each share it, then deadlock upgrading it
    # (``lock_organization``), and an applier's batch sharing it would be joined, then waited for while it writes
    # the caller's rows we hold. Sign-ins' key-share locks still pass (a break-it review).
    db.execute(select(Organization.id).where(Organization.id == organization_id).with_for_update(key_share=True))
    if user_id is not None:
        _lock(db, select(Membership.id).where(Membership.organization_id == organization_id,
                                              Membership.user_id == user_id))
    policy = load_policy(db, organization_id, default_idle=default_idle, default_remembered=default_remembered)
    if api_key_id is not None:
        key_hash = db.scalar(select(ApiKey.key_hash).where(ApiKey.id == api_key_id).with_for_update(read=True))
        key = load_api_key_status(db, key_hash, default_cache_ttl=0) if key_hash else None
        if key is None or not key.usable(now) or (
                policy is not None and api_key_refusal(policy, networks(key.ip_allowlist), address)):
            return None
        return key.organization_id, key.permissions
    workos_session_id = db.scalar(select(AuthSession.workos_session_id).where(AuthSession.id == session_id)
                                  .with_for_update(read=True))
    status = (load_session_status(db, workos_session_id, default_cache_ttl=0, active_ttl=default_idle)
              if workos_session_id else None)
    if status is not None and seen_at is not None:
        status = status.seen(min(seen_at, now))
    if status is None or not status.active or status.expires_at <= now or (
            policy is not None and session_refusal(
                policy, created_at=status.created_at, last_seen_at=status.last_seen_at, remembered=status.remembered,
                address=address, now=now, authenticated_at=authenticated_at)):
        return None
    return status.organization_id, permissions_for(status.role)


def _lock(db: Session, statement: Select[str]) -> None:
    db.execute(statement.with_for_update(read=True))
