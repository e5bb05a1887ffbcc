"""Dashboard session records: their policy, lookup, listing and revocation.

Logging in is :mod:`~hatidata_auth.services.login`; refreshing and switching organization is
:mod:`~hatidata_auth.services.session_refresh`. Functions here flush but do not commit: the caller commits the
change together with its audit events, and cached status is evicted when that commit happens
(:func:`hatidata_auth.unit_of_work.invalidate_after_commit`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Select, or_, select
from sqlalchemy.orm import Session

from ..causes import Actor, Cause
from ..errors import AppError
from ..models import AuthSession, Membership, Organization, utcnow
from ..unit_of_work import invalidate_after_commit
from ..workos import WorkOSClient, WorkOSFailure, WorkOSNotFound, WorkOSUnavailable, translate_errors
from . import audit, paging, workos_revocations

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """How long sessions last: ``active_ttl`` slides with use, ``remembered_ttl`` is fixed from login."""

    active_ttl: int = 24 * 3600
    remembered_ttl: int = 7 * 24 * 3600

    def ttl(self, organization: Organization | None, remembered: bool) -> int:
        """The lifetime for a new session in *organization* (its overrides win)."""
        if remembered:
            return int((organization and organization.session_remembered_ttl) or self.remembered_ttl)
        return int((organization and organization.session_active_ttl) or self.active_ttl)


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One session as listed: our record's fields (``workos_session_id`` is WorkOS's id, a credential to end it)."""

    id: str
    workos_session_id: str
    user_id: str
    organization_id: str
    auth_method: str | None
    auth_organization_id: str | None
    auth_connection_id: str | None
    ip_address: str | None
    user_agent: str | None
    remembered: bool
    created_at: datetime | None
    last_seen_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None
    revoked_by: str | None
    revoked_reason: str | None

    @classmethod
    def of(cls, record: AuthSession) -> SessionInfo:
        """The values of a session record."""
        return cls(
            id=record.id, workos_session_id=record.workos_session_id, user_id=record.user_id,
            organization_id=record.organization_id, auth_method=record.auth_method,
            auth_organization_id=record.auth_organization_id, auth_connection_id=record.auth_connection_id,
            ip_address=record.ip_address, user_agent=record.user_agent, remembered=bool(record.remembered),
            created_at=record.created_at, last_seen_at=record.last_seen_at, expires_at=record.expires_at,
            revoked_at=record.revoked_at, revoked_by=record.revoked_by, revoked_reason=record.revoked_reason,
        )


def _actor_label(actor: Actor) -> str:
    return str(actor.email or actor.id or actor.type)[:320]


# --- lookup and listing ------------------------------------------------------------------------------------


def get_session(db: Session, *, organization_id: str, session_id: str) -> AuthSession | None:
    """One session of an organization, by our id."""
    return db.scalar(select(AuthSession).where(AuthSession.organization_id == organization_id,
                                               AuthSession.id == session_id))


def session_info(db: Session, *, organization_id: str, session_id: str) -> SessionInfo | None:
    """One session of an organization, by our id, as a frozen value."""
    record = get_session(db, organization_id=organization_id, session_id=session_id)
    return None if record is None else SessionInfo.of(record)


def find_by_workos_session_id(db: Session, workos_session_id: str) -> AuthSession | None:
    """Our record of a WorkOS session (the ``sid`` is globally unique and names its organization)."""
    return db.scalar(select(AuthSession).where(AuthSession.workos_session_id == workos_session_id))


def sessions_query(*, organization_id: str, user_id: str | None = None,
                   include_ended: bool = False) -> Select[tuple[AuthSession]]:
    """The sessions of an organization (optionally of one user), active only unless *include_ended*."""
    query = select(AuthSession).where(AuthSession.organization_id == organization_id)
    if user_id is not None:
        query = query.where(AuthSession.user_id == user_id)
    if not include_ended:
        query = query.where(AuthSession.revoked_at.is_(None), AuthSession.expires_at > utcnow())
    return query


PAGE_KEY = paging.key_kind(AuthSession.id)


def sessions_page(db: Session, page: paging.PageRequest, *, organization_id: str, user_id: str | None = None,
                  include_ended: bool = False) -> paging.Page[SessionInfo]:
    """One page of :func:`sessions_query`, in id order, uncapped: the listing reaches every session."""
    query = sessions_query(organization_id=organization_id, user_id=user_id, include_ended=include_ended)
    return paging.paginate(db, query, AuthSession.id, page, SessionInfo.of)


# --- revocation --------------------------------------------------------------------------------------------


UNAVAILABLE = f"failed:{WorkOSUnavailable.__name__}"
""":func:`revoke_at_workos`'s outcome when WorkOS did not answer."""


def revoke_at_workos(client: WorkOSClient | None, workos_session_id: str, *, raise_unavailable: bool = False) -> str:
    """End one session at WorkOS: ``"revoked"``, ``"not_found"``, ``"skipped"`` (no client) or ``"failed:<error>"``
    (logged); with *raise_unavailable*, WorkOS unreachable raises ``WorkOSUnavailable`` (for a retried job)."""
    if client is None:
        return "skipped"
    try:
        with translate_errors():
            client.user_management.revoke_session(session_id=workos_session_id,
                                                  request_options={"max_retries": 1})
    except WorkOSNotFound:
        return "not_found"
    except WorkOSUnavailable:
        if raise_unavailable:
            raise
        log.warning("WorkOS did not revoke session %s: unavailable", workos_session_id)
        return UNAVAILABLE
    except (WorkOSFailure, OSError) as exc:
        log.warning("WorkOS did not revoke session %s: %s", workos_session_id, exc)
        return f"failed:{type(exc).__name__}"
    return "revoked"


def lock_for_update(db: Session, record: AuthSession) -> AuthSession:
    """*record* re-read under a row lock (``SELECT ... FOR UPDATE``; SQLite serializes writers anyway).

    Every state transition of a session reads its state this way first: a concurrent transaction that ended
    it (an admin, a ``session.revoked`` webhook, a policy refusal) has committed by the time the lock is
    granted, so its who and why are seen and never overwritten (no lost update).
    """
    locked = db.scalar(select(AuthSession).where(AuthSession.id == record.id).with_for_update()
                       .execution_options(populate_existing=True))
    return locked if locked is not None else record


def revoke_records(db: Session, client: WorkOSClient | None, records: Sequence[AuthSession], *, cause: Cause,
                   locked: bool = False) -> int:
    """End each active one of *records* here and at WorkOS (without *client*: here only), audited; how many.
    Each is re-read under its row lock first (:func:`lock_for_update`), unless *locked*: read under it already,
    by this transaction, in id order (:func:`_locked_where`).

    At WorkOS at once (the outcome in the audit event's ``workos``), or, inside an applier's transaction
    (``workos_revocations.deferred_in``) and when WorkOS is unavailable at once, queued for the appliers, which
    retry it (``workos``: ``queued``)."""
    now = utcnow()
    count = 0
    for record in sorted(records, key=lambda r: r.id):  # one lock order everywhere: no deadlock between two batches
        if (record if locked else lock_for_update(db, record)).revoked_at is not None:
            continue
        record.revoked_at = now
        record.revoked_by = _actor_label(cause.actor)
        record.revoked_reason = (cause.reason or "revoked")[:255]
        db.flush()
        if client is not None and workos_revocations.is_deferred(db):
            workos_revocations.queue(db, organization_id=record.organization_id, session_id=record.id,
                                     user_id=record.user_id, cause=cause)
            workos_outcome = "queued"
        else:
            workos_outcome = revoke_at_workos(client, record.workos_session_id)
            if workos_outcome == UNAVAILABLE:  # not lost: the appliers retry it (a break-it review's kind of fault)
                workos_revocations.queue(db, organization_id=record.organization_id, session_id=record.id,
                                         user_id=record.user_id, cause=cause)
                workos_outcome = "queued"
        audit.record(db, action="session.revoked", cause=cause, organization_id=record.organization_id,
                     target_type="session", target_id=record.id,
                     details={"reason": cause.reason, "user_id": record.user_id,
                              "session_id": record.id, "workos": workos_outcome})
        invalidate_after_commit(db, "session", record.workos_session_id)
        count += 1
    return count


def revoke_session(db: Session, workos_client: WorkOSClient | None, *, organization_id: str, session_id: str,
                   cause: Cause) -> bool:
    """Revoke one session of an organization (by our id); returns whether it was active."""
    record = get_session(db, organization_id=organization_id, session_id=session_id)
    if record is None:
        raise AppError("No such session.", status=404, code="not_found")
    return revoke_records(db, workos_client, [record], cause=cause) == 1


def revoke_user_sessions(db: Session, workos_client: WorkOSClient | None, *, organization_id: str, user_id: str,
                         cause: Cause, begun_by: datetime | None = None) -> int:
    """Revoke every active session of a user in an organization (here and at WorkOS), and every session that
    organization's sign-in produced, wherever it was switched to since; returns how many. With *begun_by*, only the
    sessions created then or before. The sessions are selected and locked at once (:func:`_locked_where`)."""
    begun = [] if begun_by is None else [AuthSession.created_at <= begun_by]
    return revoke_records(db, workos_client, _locked_where(
        db, or_(AuthSession.organization_id == organization_id, AuthSession.auth_organization_id == organization_id),
        AuthSession.user_id == user_id, *begun), cause=cause, locked=True)


def revoke_member_sessions(db: Session, workos_client: WorkOSClient | None, *, organization_id: str, user_id: str,
                           cause: Cause) -> int:
    """:func:`revoke_user_sessions` for a member of the organization (any status); 404 for anyone else."""
    member = db.scalar(select(Membership.id).where(Membership.organization_id == organization_id,
                                                   Membership.user_id == user_id))
    if member is None:
        raise AppError("No such member.", status=404, code="not_found")
    return revoke_user_sessions(db, workos_client, organization_id=organization_id, user_id=user_id, cause=cause)


def revoke_organization_sessions(db: Session, workos_client: WorkOSClient | None, *, organization_id: str,
                                 cause: Cause) -> int:
    """Revoke every active session of an organization; returns how many (selected and locked at once:
    :func:`_locked_where`)."""
    return revoke_records(db, workos_client, _locked_where(db, AuthSession.organization_id == organization_id),
                          cause=cause, locked=True)


def _locked_where(db: Session, *conditions: ColumnElement[bool]) -> Sequence[AuthSession]:
    """The live sessions meeting *conditions*, locked ``FOR UPDATE`` in id order (the order of
    :func:`revoke_records`) by the statement that selects them. PostgreSQL checks *conditions* again on a row
    another transaction changed while this one waited for it: a session that no longer meets them (a switch moved
    it to another organization meanwhile, and its sign-in was not this organization's) is not ended (a break-it
    review: A's removal ended, and audited into B's chain, a session of B's sign-in just switched back to B). One
    that starts to meet them meanwhile (switched into the organization) is not found either."""
    return db.scalars(select(AuthSession).where(*conditions, AuthSession.revoked_at.is_(None))
                      .order_by(AuthSession.id).with_for_update()
                      .execution_options(populate_existing=True)).all()


def revoke_by_workos_session_id(db: Session, workos_client: WorkOSClient | None, *, workos_session_id: str,
                                cause: Cause,
                                call_workos: bool = True) -> bool:
    """Revoke our record of a WorkOS session (e.g. on ``session.revoked``); returns whether it was active.

    With ``call_workos=False`` (the event came from WorkOS) WorkOS is not called again.
    """
    record = find_by_workos_session_id(db, workos_session_id)
    if record is None:
        return False
    return revoke_records(db, workos_client if call_workos else None, [record], cause=cause) == 1
