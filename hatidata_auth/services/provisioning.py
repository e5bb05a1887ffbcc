"""Granting and removing a member's access: role changes, deprovisioning and reactivation.

Deprovisioning a membership revokes the member's sessions in that organization (here and at WorkOS),
evicts them from the session cache once the transaction commits, and suspends the API keys they own
there. Reactivation restores the membership only: suspended keys stay suspended until an admin
reinstates them.

The session and API-key work is delegated to ``services.sessions`` and ``services.api_keys`` (issue #3).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..causes import Cause
from ..models import ROLES, ApiKey, AuthSession, Membership, utcnow
from ..roles import Role
from ..unit_of_work import invalidate_after_commit
from ..workos import WorkOSClient
from . import audit

log = logging.getLogger(__name__)
ADMIN = Role.ADMIN.value

@dataclass(frozen=True, slots=True)
class AccessChange:
    """What changed on one membership."""

    membership_id: str
    user_id: str
    from_role: str | None
    to_role: str | None
    from_status: str
    to_status: str

    @property
    def lost_access(self) -> bool:
        """Whether the member had access before and has none now."""
        return self.from_status == "active" and self.to_status != "active"


def revoke_member_sessions(
    session: Session,
    client: WorkOSClient | None,
    *,
    organization_id: str,
    user_id: str,
    cause: Cause,
) -> int:
    """Revoke every live session of a user in one organization (here and at WorkOS, via
    ``services.sessions``, which evicts each from the cache once the transaction commits)."""
    from . import sessions as sessions_service

    return int(sessions_service.revoke_user_sessions(
        session, client, organization_id=organization_id, user_id=user_id, cause=cause,
    ))


def suspend_member_keys(session: Session, *, organization_id: str, user_id: str, cause: Cause) -> int:
    """Suspend the active API keys a user owns in one organization (``services.api_keys``)."""
    from . import api_keys

    return int(api_keys.suspend_user_keys(session, organization_id=organization_id, user_id=user_id,
                                          cause=cause))


def end_credentials_before(session: Session, client: WorkOSClient | None, *, organization_id: str, user_id: str,
                           by: datetime, cause: Cause) -> tuple[int, int]:
    """What a deprovisioning ended, ended now though it changes no state (it was delivered after WorkOS's newer word,
    which gave access back): the user's sessions in the organization begun *by* then and their active keys there
    created by then (the caller allows for the clocks). Returns (sessions revoked, keys suspended)."""
    from . import api_keys
    from . import sessions as sessions_service

    revoked = sessions_service.revoke_user_sessions(session, client, organization_id=organization_id,
                                                    user_id=user_id, cause=cause, begun_by=by)
    suspended = api_keys.suspend_user_keys(session, organization_id=organization_id, user_id=user_id, cause=cause,
                                           created_by=by)
    return int(revoked), int(suspended)


REMOVED_HERE = "removed_here"
"""``Membership.details`` key of an admin's removal (``services.workos_memberships.remove_here``): when
(``at``) and the WorkOS membership id the row knew (``id``). Dropped when the member is active again, whoever made
them so."""
ACCESS_SEQ = "access_seq"
"""``details`` key: how many changes of access :func:`set_access` has made to the membership (so a caller can tell
whether anything else changed it since it last did: ``workos_memberships``)."""


def set_access(
    session: Session,
    client: WorkOSClient | None,
    membership: Membership,
    *,
    role: str | None,
    role_source: str,
    active: bool,
    cause: Cause,
    inactive_status: str = "deprovisioned",
    details: dict[str, Any] | None = None,
    dormant_role: bool = False,
) -> AccessChange | None:
    """Give *membership* its role and status; deprovision or reactivate as needed; audit every change.

    A member is active only with a role: ``active=True`` with ``role=None`` (no mapped group and no default
    role) leaves the membership ``inactive``. A membership that is not active keeps its role, unless
    *dormant_role*: then it holds *role* (and *role_source*) for when it is active again (a new WorkOS membership
    seen inactive).
    Returns ``None`` when nothing changed.
    """
    if role is not None and role not in ROLES:
        raise ValueError(f"cannot grant unknown role {role!r}")
    new_status = "active" if active and role is not None else (inactive_status if not active else "inactive")
    new_role = role if new_status == "active" or dormant_role else membership.role
    old_role, old_status, old_source = membership.role, membership.status, membership.role_source
    sourced = new_status == "active" or dormant_role  # the role set is *role*: so is how it was decided
    new_source = role_source if sourced else old_source
    if old_role == new_role and old_status == new_status and old_source == new_source:
        return None
    membership.role, membership.role_source = new_role, new_source
    membership.status = new_status
    membership.updated_at = utcnow()
    kept = {k: v for k, v in (membership.details or {}).items() if not (new_status == "active" and k == REMOVED_HERE)}
    membership.details = {**kept, ACCESS_SEQ: int(kept.get(ACCESS_SEQ) or 0) + 1}
    change = AccessChange(membership.id, membership.user_id, old_role if old_status == "active" else None,
                          new_role if new_status == "active" else None, old_status, new_status)
    extra = dict(details or {})

    def record(action: str, info: dict[str, Any]) -> None:
        audit.record(session, action=action, cause=cause, organization_id=membership.organization_id,
                     target_type="membership", target_id=membership.id,
                     details={**extra, "user_id": membership.user_id, "reason": cause.reason, **info})

    if change.lost_access:
        revoked = revoke_member_sessions(session, client, organization_id=membership.organization_id,
                                         user_id=membership.user_id, cause=cause)
        suspended = suspend_member_keys(session, organization_id=membership.organization_id,
                                        user_id=membership.user_id, cause=cause)
        record("membership.deprovisioned", {"status": new_status, "previous_status": old_status,
                                            "previous_role": old_role, "previous_role_source": old_source,
                                            "role": new_role, "role_source": new_source,
                                            "sessions_revoked": revoked, "keys_suspended": suspended})
    elif old_status != "active" and new_status == "active":
        record("membership.activated", {"role": new_role, "role_source": new_source, "previous_status": old_status,
                                        "previous_role": old_role, "previous_role_source": old_source})
    else:  # the role, how it was decided, or an inactive status changed
        record("membership.role_changed", {"from": old_role, "to": new_role, "role_source": new_source,
                                           "previous_role_source": old_source, "status": new_status,
                                           "previous_status": old_status})
        if old_status == "active" and new_status == "active" and old_role != new_role:
            invalidate_member_caches(session, organization_id=membership.organization_id,
                                     user_id=membership.user_id)
    if ADMIN in (change.from_role, change.to_role) and change.from_role != change.to_role:
        from . import last_admin

        last_admin.reconcile(session, membership.organization_id, cause, membership)
    return change


def invalidate_member_caches(session: Session, *, organization_id: str, user_id: str) -> None:
    """Once the transaction commits, evict the cached status (which carries the role) of the member's live
    sessions and API keys in *organization_id*, in every process, so a role change is seen at once."""
    sids = session.scalars(select(AuthSession.workos_session_id).where(
        AuthSession.organization_id == organization_id, AuthSession.user_id == user_id,
        AuthSession.revoked_at.is_(None)))
    for sid in sids:
        invalidate_after_commit(session, "session", sid)
    keys = session.execute(select(ApiKey.id, ApiKey.key_hash).where(
        ApiKey.organization_id == organization_id, ApiKey.owner_user_id == user_id, ApiKey.status != "revoked"))
    for key_id, key_hash in keys:
        invalidate_after_commit(session, "api_key", key_id, key_hash)
