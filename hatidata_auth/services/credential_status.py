"""Session and API-key status records: what a request needs to know, read from the database and (de)serialized
for the shared cache."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from ..models import ApiKey, AuthSession, Membership, Organization, User
from ..roles import key_permissions


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


class SessionStatus(NamedTuple):
    """What a request needs to know about one session, cached in memory and in the shared cache.

    A named tuple of strings, numbers and ``None`` only: this process's memory keeps it as the plain tuple
    ``tuple(status)`` (back with ``SessionStatus._make``), which the cyclic garbage collector stops tracking within
    its first two collections, as it does the cache entry holding it (``docs/auth.md``, "Memory the collector does not
    walk"). Derive a changed copy with ``_replace``."""

    session_id: str
    workos_session_id: str
    user_id: str
    email: str
    organization_id: str
    workos_organization_id: str | None
    role: str | None
    active: bool
    expires_at: float
    remembered: bool
    last_seen_at: float | None
    cache_ttl: int
    sliding_ttl: int | None
    loaded_at: float = 0.0
    """Wall-clock seconds when read from the database (0: unknown, as old as can be); see the cache's max age."""
    created_at: float | None = None
    """When the session was created (sign-in; its absolute lifetime runs from here); ``None``: not known."""

    def seen(self, at: float) -> SessionStatus:
        """This status as a use at *at* (epoch s) leaves it: seen then, and a sliding expiry slid to
        ``at + sliding_ttl`` (never back)."""
        expires_at = self.expires_at if self.sliding_ttl is None else max(self.expires_at, at + self.sliding_ttl)
        return self._replace(last_seen_at=max(self.last_seen_at or 0.0, at), expires_at=expires_at)


@dataclass(frozen=True, slots=True)
class ApiKeyStatus:
    """What a request needs to know about one API key."""

    key_id: str
    key_hash: str
    name: str
    prefix: str
    organization_id: str
    owner_user_id: str | None
    owner_email: str | None
    owner_role: str | None
    scopes: tuple[str, ...]
    status: str
    expires_at: float | None
    grace_until: float | None
    cache_ttl: int
    permissions: frozenset[str] = field(default_factory=frozenset)
    loaded_at: float = 0.0
    """As :attr:`SessionStatus.loaded_at`."""
    ip_allowlist: tuple[str, ...] = ()
    """The key's own CIDR allowlist (empty: the organization's policy decides)."""

    def usable(self, now: float) -> bool:
        """Active, owned by an active member, not expired, and (after a rotation) within its grace period."""
        if self.status != "active" or self.owner_user_id is None or self.owner_role is None:
            return False
        if self.expires_at is not None and self.expires_at <= now:
            return False
        return self.grace_until is None or self.grace_until > now


def load_session_status(db: Session, workos_session_id: str, *, default_cache_ttl: int,
                        active_ttl: int) -> SessionStatus | None:
    """Read one session's status from the database (``None`` when we never recorded it)."""
    row = db.execute(
        select(AuthSession, User.email, Organization.workos_organization_id, Organization.live,
               Organization.session_cache_ttl, Organization.session_active_ttl, Membership.role, Membership.status)
        .join(User, User.id == AuthSession.user_id)
        .join(Organization, Organization.id == AuthSession.organization_id)
        .outerjoin(Membership, and_(Membership.organization_id == AuthSession.organization_id,
                                    Membership.user_id == AuthSession.user_id))
        .where(AuthSession.workos_session_id == workos_session_id)
        .execution_options(populate_existing=True)
    ).first()
    if row is None:
        return None
    record, email, workos_org_id, org_live, org_cache_ttl, org_active_ttl, role, membership_status = row
    active = record.revoked_at is None and bool(org_live) and membership_status == "active"
    return SessionStatus(
        session_id=record.id, workos_session_id=record.workos_session_id, user_id=record.user_id, email=email,
        organization_id=record.organization_id, workos_organization_id=workos_org_id, role=role,
        active=active, expires_at=record.expires_at.timestamp(), remembered=record.remembered,
        last_seen_at=_ts(record.last_seen_at), cache_ttl=int(org_cache_ttl or default_cache_ttl),
        sliding_ttl=None if record.remembered else int(org_active_ttl or active_ttl),
        created_at=_ts(record.created_at),
    )


def load_api_key_status(db: Session, key_hash: str, *, default_cache_ttl: int) -> ApiKeyStatus | None:
    """Read one API key's status by the hash of its secret."""
    row = db.execute(
        select(ApiKey, User.email, Membership.role, Membership.status, Organization.live,
               Organization.session_cache_ttl)
        .join(Organization, Organization.id == ApiKey.organization_id)
        .outerjoin(User, User.id == ApiKey.owner_user_id)
        .outerjoin(Membership, and_(Membership.organization_id == ApiKey.organization_id,
                                    Membership.user_id == ApiKey.owner_user_id))
        .where(ApiKey.key_hash == key_hash)
        .execution_options(populate_existing=True)
    ).first()
    if row is None:
        return None
    key, email, role, membership_status, org_live, org_cache_ttl = row
    owner_role = role if membership_status == "active" and org_live else None
    status = key.status if org_live else "suspended"
    return ApiKeyStatus(
        key_id=key.id, key_hash=key.key_hash, name=key.name, prefix=key.prefix,
        organization_id=key.organization_id, owner_user_id=key.owner_user_id, owner_email=email,
        owner_role=owner_role, scopes=tuple(key.scopes or ()), status=status,
        expires_at=_ts(key.expires_at), grace_until=_ts(key.grace_until),
        cache_ttl=int(org_cache_ttl or default_cache_ttl),
        permissions=key_permissions(key.scopes or (), owner_role), ip_allowlist=tuple(key.ip_allowlist or ()),
    )


def status_to_dict(status: SessionStatus | ApiKeyStatus) -> dict[str, Any]:
    """The JSON-safe form of a status, for the shared cache."""
    data = status._asdict() if isinstance(status, SessionStatus) else asdict(status)
    if isinstance(status, ApiKeyStatus):
        data["permissions"] = sorted(status.permissions)
        data["scopes"] = list(status.scopes)
        data["ip_allowlist"] = list(status.ip_allowlist)
    return data


def api_key_from_dict(data: dict[str, Any]) -> ApiKeyStatus:
    """An API key's status back from the shared cache."""
    data = dict(data)
    data["permissions"] = frozenset(data.get("permissions") or ())
    data["scopes"] = tuple(data.get("scopes") or ())
    data["ip_allowlist"] = tuple(data.get("ip_allowlist") or ())
    return ApiKeyStatus(**data)
