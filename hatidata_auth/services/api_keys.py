"""Agent API keys: ``hd_live_`` + 256 random bits, shown once, stored as a SHA-256 hash.

Functions flush but do not commit (the caller commits with the audit events); cached key status is
invalidated when that commit happens.

Least privilege: a member's operation on one key (revoke, rotate, suspend, reinstate) names its
:class:`Caller`. Their own keys need ``keys:write``, any other member's key ``keys:manage``, reinstating
always ``keys:manage`` (a suspension is containment: deprovisioning or an admin). A rotation or
reinstatement never yields a key whose scopes exceed the caller's permissions right now.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ..causes import Actor, Cause
from ..errors import AppError
from ..models import ApiKey, Membership, User, utcnow
from ..roles import permissions_for, unknown_scopes
from ..unit_of_work import invalidate_after_commit
from . import audit, paging, person_email
from .credentials import token_hash

CARRIED_BY_ROTATION = frozenset({"organization_id", "owner_user_id", "name", "scopes", "expires_at", "ip_allowlist"})
"""The columns of ``api_keys`` a rotation's successor copies from the old key: what the key may do, for whom, until
when and from where. Every other column is the successor's own (its id, secret, status, use and lifecycle)."""
KEY_PREFIX = "hd_live_"
SECRET_BYTES = 32  # 256 bits
PUBLIC_PREFIX_CHARS = 8
TRUSTED_ACTORS = frozenset({"system", "workos"})
"""Actors that act for the service itself (deprovisioning, CLI) and need no :class:`Caller`."""


@dataclass(frozen=True, slots=True)
class Caller:
    """The member a key operation is done for and their effective permissions right now.

    ``user_id`` is the signed-in member, or the owner of the API key used (``None``: not a member);
    ``permissions`` are the session role's, or the key's scopes within its owner's current role.
    """

    user_id: str | None
    permissions: frozenset[str]


@dataclass(frozen=True, slots=True)
class ApiKeyView:
    """A key as listed (never its secret)."""

    id: str
    name: str
    prefix: str
    organization_id: str
    owner_user_id: str | None
    scopes: list[str]
    status: str
    expires_at: datetime | None
    last_used_at: datetime | None
    created_at: datetime
    revoked_at: datetime | None
    grace_until: datetime | None
    rotated_from_id: str | None

    @classmethod
    def of(cls, key: ApiKey) -> ApiKeyView:
        """The view of a stored key."""
        return cls(id=key.id, name=key.name, prefix=key.prefix, organization_id=key.organization_id,
                   owner_user_id=key.owner_user_id, scopes=list(key.scopes or []), status=key.status,
                   expires_at=key.expires_at, last_used_at=key.last_used_at, created_at=key.created_at,
                   revoked_at=key.revoked_at, grace_until=key.grace_until, rotated_from_id=key.rotated_from_id)

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        def iso(value: datetime | None) -> str | None:
            return None if value is None else value.isoformat()

        return {"id": self.id, "name": self.name, "prefix": self.prefix, "organization_id": self.organization_id,
                "owner_user_id": self.owner_user_id, "scopes": self.scopes, "status": self.status,
                "expires_at": iso(self.expires_at), "last_used_at": iso(self.last_used_at),
                "created_at": iso(self.created_at), "revoked_at": iso(self.revoked_at),
                "grace_until": iso(self.grace_until), "rotated_from_id": self.rotated_from_id}


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A new key: ``secret`` is shown to the caller once and never stored."""

    secret: str
    key: ApiKeyView


def generate_secret() -> tuple[str, str]:
    """A new ``hd_live_…`` secret and its public prefix."""
    secret = KEY_PREFIX + secrets.token_urlsafe(SECRET_BYTES)
    return secret, secret[: len(KEY_PREFIX) + PUBLIC_PREFIX_CHARS]


def looks_like_key(value: str) -> bool:
    """Whether a bearer credential is shaped like one of our keys (not a JWT)."""
    return value.startswith(KEY_PREFIX) and 40 <= len(value) <= 128


def _key(db: Session, organization_id: str, key_id: str, *, for_update: bool = False) -> ApiKey:
    """A key of the organization (404 otherwise). ``for_update``: under a row lock, re-read, as every status
    transition reads it: a concurrent transition (a revocation racing a deprovisioning suspension) has committed
    by the time the lock is granted, so a revoked key is never turned back into a suspended (reinstatable) one."""
    query = select(ApiKey).where(ApiKey.organization_id == organization_id, ApiKey.id == key_id)
    if for_update:
        query = query.with_for_update().execution_options(populate_existing=True)
    key = db.scalar(query)
    if key is None:
        raise AppError("No such API key.", status=404, code="not_found")
    return key


def _authorize(key: ApiKey, actor: Actor, caller: Caller | None, *, manage_only: bool = False,
               issues_key: bool = False) -> None:
    """Refuse (403, ``details.missing_permissions``) a member who may not act on *key*, or who would receive
    a key carrying permissions they lack (``issues_key``: rotation, reinstatement)."""
    if caller is None:
        if actor.type in TRUSTED_ACTORS:
            return
        raise ValueError(f"a key operation by a {actor.type} actor needs its Caller")
    own = key.owner_user_id is not None and key.owner_user_id == caller.user_id and not manage_only
    allowed = "keys:manage" in caller.permissions or (own and "keys:write" in caller.permissions)
    if not allowed:
        needed = "keys:write" if own else "keys:manage"
        message = ("You lack a permission this needs." if own
                   else "Acting on another member's key (or reinstating one) needs keys:manage.")
        raise AppError(message, status=403, code="forbidden", details={"missing_permissions": [needed]})
    beyond = sorted(set(key.scopes or ()) - caller.permissions) if issues_key else []
    if beyond:
        raise AppError("The resulting key would carry permissions you lack.", status=403, code="forbidden",
                       details={"missing_permissions": beyond})


def _owner_role(db: Session, organization_id: str, owner_user_id: str) -> str | None:
    """The role of *owner_user_id*'s active membership in the organization (``None``: not an active member), read
    under a shared lock on that membership until the transaction ends. Every path that issues a key or gives one
    back (creation, rotation, reinstatement) reads it so, before it locks or writes the key: a removal or a
    deprovisioning locks the membership, then suspends the owner's keys, so it either is seen here (committed
    first) or waits for the new key and suspends it. Read without the lock, a key created while its owner was being
    removed stayed active (a break-it review: 4 of 8 races on ``make run``).

    The organization's row is held ``FOR KEY SHARE`` first (``person_email.hold_organization``, what the key's
    insert takes anyway): the order organization, membership, key of an admin's removal or role change, which
    holds the row ``FOR UPDATE`` and then the membership; taken after the membership, the insert and that admin
    waited for each other (a break-it review)."""
    person_email.hold_organization(db, organization_id)
    return db.scalar(select(Membership.role).where(Membership.organization_id == organization_id,
                                                   Membership.user_id == owner_user_id,
                                                   Membership.status == "active").with_for_update(read=True))


def _lock_owner_of(db: Session, organization_id: str, key_id: str) -> str | None:
    """:func:`_owner_role` of the owner of the key *key_id* (404 for an unknown key), before the key's own lock: the
    order of a removal (the organization, the membership, then the keys)."""
    owner = _key(db, organization_id, key_id).owner_user_id
    return None if owner is None else _owner_role(db, organization_id, owner)


def _scopes_within(role: str | None, scopes: list[str]) -> list[str]:
    """*scopes*, sorted and unique, when known and within *role* (the owner's, :func:`_owner_role`); 422
    ``invalid_scopes`` or ``invalid_owner`` (``None``: not an active member) otherwise."""
    bad = unknown_scopes(scopes)
    if bad:
        raise AppError("Unknown scopes.", status=422, code="invalid_scopes", details={"unknown": bad})
    if role is None:
        raise AppError("The owner is not an active member of the organization.", status=422,
                       code="invalid_owner")
    beyond = sorted(set(scopes) - permissions_for(role))
    if beyond:
        raise AppError("Scopes exceed the owner's role.", status=422, code="invalid_scopes",
                       details={"beyond_role": beyond, "role": role})
    return sorted(set(scopes))


def _audit(db: Session, action: str, key: ApiKey, cause: Cause, **details: Any) -> None:
    audit.record(db, action=action, cause=cause, organization_id=key.organization_id, target_type="api_key",
                 target_id=key.id, details={"name": key.name, "prefix": key.prefix, **details})


def _insert(db: Session, *, organization_id: str, owner_user_id: str, name: str, scopes: list[str],
            expires_at: datetime | None, rotated_from_id: str | None = None,
            ip_allowlist: list[str] | None = None) -> tuple[str, ApiKey]:
    while True:
        secret, prefix = generate_secret()
        if db.scalar(select(ApiKey.id).where(ApiKey.prefix == prefix)) is None:
            break
    key = ApiKey(organization_id=organization_id, owner_user_id=owner_user_id, name=name, prefix=prefix,
                 key_hash=token_hash(secret), scopes=scopes, status="active", expires_at=expires_at,
                 rotated_from_id=rotated_from_id, ip_allowlist=ip_allowlist)
    db.add(key)
    db.flush()
    return secret, key


def create_key(db: Session, *, organization_id: str, owner_user_id: str, name: str, scopes: list[str],
               cause: Cause, expires_at: datetime | None = None) -> CreatedKey:
    """Create a key for an agent owned by a member; its scopes may not exceed the owner's role."""
    name = (name or "").strip()
    if not name or len(name) > 255:
        raise AppError("A key needs a name (1-255 characters).", status=422, code="invalid_name")
    if expires_at is not None and expires_at <= utcnow():
        raise AppError("expires_at must be in the future.", status=422, code="invalid_expiry")
    scopes = _scopes_within(_owner_role(db, organization_id, owner_user_id), scopes)
    secret, key = _insert(db, organization_id=organization_id, owner_user_id=owner_user_id, name=name,
                          scopes=scopes, expires_at=expires_at)
    _audit(db, "api_key.created", key, cause, scopes=scopes, owner_user_id=owner_user_id,
           expires_at=expires_at.isoformat() if expires_at else None)
    return CreatedKey(secret=secret, key=ApiKeyView.of(key))


PAGE_KEY = paging.key_kind(ApiKey.id)


def keys_page(db: Session, page: paging.PageRequest, *, organization_id: str,
              owner_user_id: str | None = None) -> paging.Page[ApiKeyView]:
    """One page of the keys of an organization (optionally of one owner), in id order."""
    query = select(ApiKey).where(ApiKey.organization_id == organization_id)
    if owner_user_id is not None:
        query = query.where(ApiKey.owner_user_id == owner_user_id)
    return paging.paginate(db, query, ApiKey.id, page, ApiKeyView.of)


def get_key(db: Session, *, organization_id: str, key_id: str) -> ApiKeyView:
    """One key of an organization."""
    return ApiKeyView.of(_key(db, organization_id, key_id))


def revoke_key(db: Session, *, organization_id: str, key_id: str, cause: Cause,
               caller: Caller | None = None) -> ApiKeyView:
    """Revoke a key for good (idempotent); 403 when *caller* may not act on it."""
    key = _key(db, organization_id, key_id, for_update=True)
    _authorize(key, cause.actor, caller)
    if key.status != "revoked":
        key.status = "revoked"
        key.revoked_at = utcnow()
        key.revoked_by = str(cause.actor.email or cause.actor.id or cause.actor.type)[:320]
        db.flush()
        _audit(db, "api_key.revoked", key, cause, reason=cause.reason)
        invalidate_after_commit(db, "api_key", key.id, key.key_hash)
    return ApiKeyView.of(key)


def rotate_key(db: Session, *, organization_id: str, key_id: str, cause: Cause, grace_seconds: int,
               caller: Caller | None = None) -> CreatedKey:
    """Issue a replacement key; the old one stays valid for ``grace_seconds`` (0: revoked at once). The successor
    carries every restriction of the old key (:data:`CARRIED_BY_ROTATION`: owner, name, scopes, expiry, IP
    allowlist); an allowlist left behind let a key's holder lift an admin's restriction by rotating it.

    403 when *caller* may not act on the key or lacks one of its scopes; 409 when it is not rotatable; 422
    ``invalid_owner`` when its owner is no longer an active member.
    """
    owner_role = _lock_owner_of(db, organization_id, key_id)
    old = _key(db, organization_id, key_id, for_update=True)
    _authorize(old, cause.actor, caller, issues_key=True)
    if old.status != "active" or (old.grace_until is not None):
        raise AppError("Only an active key that was not rotated yet can be rotated.", status=409,
                       code="invalid_state", details={"status": old.status})
    if old.owner_user_id is None:
        raise AppError("The key has no owner; create a new one.", status=409, code="invalid_state")
    if owner_role is None:
        raise AppError("The owner is not an active member of the organization.", status=422, code="invalid_owner")
    secret, new = _insert(db, organization_id=organization_id, owner_user_id=old.owner_user_id, name=old.name,
                          scopes=list(old.scopes or []), expires_at=old.expires_at, rotated_from_id=old.id,
                          ip_allowlist=None if old.ip_allowlist is None else list(old.ip_allowlist))
    now = utcnow()
    if grace_seconds <= 0:
        old.status, old.revoked_at = "revoked", now
        old.revoked_by = str(cause.actor.email or cause.actor.id or cause.actor.type)[:320]
    else:
        old.grace_until = now + timedelta(seconds=grace_seconds)
    db.flush()
    _audit(db, "api_key.rotated", old, cause, new_key_id=new.id, new_prefix=new.prefix,
           grace_seconds=max(grace_seconds, 0))
    _audit(db, "api_key.created", new, cause, scopes=list(new.scopes), rotated_from_id=old.id,
           owner_user_id=new.owner_user_id, ip_allowlist=new.ip_allowlist)
    invalidate_after_commit(db, "api_key", old.id, old.key_hash)
    return CreatedKey(secret=secret, key=ApiKeyView.of(new))


def suspend_key(db: Session, *, organization_id: str, key_id: str, cause: Cause,
                caller: Caller | None = None) -> ApiKeyView:
    """Suspend an active key (an admin may reinstate it); 403 when *caller* may not act on it."""
    key = _key(db, organization_id, key_id, for_update=True)
    _authorize(key, cause.actor, caller)
    if key.status == "active":
        key.status = "suspended"
        db.flush()
        _audit(db, "api_key.suspended", key, cause)
        invalidate_after_commit(db, "api_key", key.id, key.key_hash)
    return ApiKeyView.of(key)


def reinstate_key(db: Session, *, organization_id: str, key_id: str, cause: Cause,
                  caller: Caller | None = None) -> ApiKeyView:
    """Reinstate a suspended key (its owner must be an active member again).

    403 unless *caller* holds ``keys:manage`` and every scope of the key; 409/422 for a wrong state or owner.
    """
    owner_role = _lock_owner_of(db, organization_id, key_id)
    key = _key(db, organization_id, key_id, for_update=True)
    _authorize(key, cause.actor, caller, manage_only=True, issues_key=True)
    if key.status != "suspended":
        raise AppError("Only a suspended key can be reinstated.", status=409, code="invalid_state",
                       details={"status": key.status})
    if key.owner_user_id is None:
        raise AppError("The key has no owner.", status=409, code="invalid_state")
    _scopes_within(owner_role, list(key.scopes or []))
    key.status = "active"
    db.flush()
    _audit(db, "api_key.reinstated", key, cause)
    invalidate_after_commit(db, "api_key", key.id, key.key_hash)
    return ApiKeyView.of(key)


def suspend_user_keys(db: Session, *, organization_id: str, user_id: str, cause: Cause,
                      created_by: datetime | None = None) -> int:
    """Suspend every active key a user owns in an organization (deprovisioning), with *created_by* only those created
    then or before; returns how many."""
    created = [] if created_by is None else [ApiKey.created_at <= created_by]
    keys = db.scalars(select(ApiKey).where(ApiKey.organization_id == organization_id,
                                           ApiKey.owner_user_id == user_id, ApiKey.status == "active", *created)
                      .with_for_update().execution_options(populate_existing=True)).all()
    for key in keys:
        key.status = "suspended"
        db.flush()
        _audit(db, "api_key.suspended", key, cause, reason="owner deprovisioned")
        invalidate_after_commit(db, "api_key", key.id, key.key_hash)
    return len(keys)


def owner_email(db: Session, key: ApiKeyView) -> str | None:
    """The email of a key's owner."""
    if key.owner_user_id is None:
        return None
    return db.scalar(select(User.email).where(User.id == key.owner_user_id))


class UsageRecorder:
    """Keeps ``last_used_at`` without a database write per request: at most one write per key per
    ``interval`` seconds in each process."""

    def __init__(self, interval: float = 60.0) -> None:
        self.interval = interval
        self._written: dict[str, float] = {}
        self._lock = threading.Lock()

    def due(self, key_id: str) -> bool:
        """Whether this process should write the key's ``last_used_at`` now (claims the slot if so)."""
        now = time.monotonic()
        last = self._written.get(key_id)
        if last is not None and now - last < self.interval:
            return False
        with self._lock:
            last = self._written.get(key_id)
            if last is not None and now - last < self.interval:
                return False
            if len(self._written) > 100_000:
                self._written.clear()
            self._written[key_id] = now
        return True

    @staticmethod
    def write(db: Session, *, organization_id: str, key_id: str, at: datetime | None = None) -> None:
        """Write ``last_used_at`` (commits)."""
        db.execute(update(ApiKey).where(ApiKey.organization_id == organization_id, ApiKey.id == key_id)
                   .values(last_used_at=at or utcnow()))
        db.commit()
