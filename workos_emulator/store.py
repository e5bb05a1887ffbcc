"""State of the emulator. All access goes through ``Store.lock`` (one re-entrant lock).

Every field but ``lock`` holds plain JSON data (dicts with string keys, lists, strings, numbers, booleans,
``None``): ``persistence.py`` saves the fields generically, so a new field needs no code there.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import not_found

Entity = dict[str, Any]


@dataclass
class AuthRequest:
    """A pending browser authorization (AuthKit or standalone SSO) awaiting the hosted login."""

    id: str
    kind: str  # "authkit" | "sso"
    client_id: str
    redirect_uri: str
    state: str | None = None
    code_challenge: str | None = None
    code_challenge_method: str | None = None
    organization_id: str | None = None
    connection_id: str | None = None
    provider: str | None = None
    login_hint: str | None = None
    nonce: str | None = None
    created_at: float = 0.0
    max_age: int | None = None  # AuthKit's ``max_age``: seconds since the last active authentication

    def to_dict(self) -> Entity:
        """The plain form kept in ``Store.auth_requests``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Entity) -> AuthRequest:
        """Rebuild from :meth:`to_dict`."""
        return cls(**data)


@dataclass
class Store:
    """All emulator entities, keyed by id (dicts preserve insertion order)."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    organizations: dict[str, Entity] = field(default_factory=dict)
    organization_domains: dict[str, Entity] = field(default_factory=dict)
    connections: dict[str, Entity] = field(default_factory=dict)
    directories: dict[str, Entity] = field(default_factory=dict)
    directory_users: dict[str, Entity] = field(default_factory=dict)
    directory_groups: dict[str, Entity] = field(default_factory=dict)
    group_members: dict[str, dict[str, None]] = field(default_factory=dict)  # group id -> user ids
    user_groups: dict[str, dict[str, None]] = field(default_factory=dict)  # directory user id -> group ids
    users: dict[str, Entity] = field(default_factory=dict)
    memberships: dict[str, Entity] = field(default_factory=dict)
    sessions: dict[str, Entity] = field(default_factory=dict)
    roles: dict[str, Entity] = field(default_factory=dict)  # slug -> role
    webhook_endpoints: dict[str, Entity] = field(default_factory=dict)
    # {"payload": event, "organization_id": str | None} (the organization for the ``organization_id`` filter)
    events: list[Entity] = field(default_factory=list)
    profiles: dict[str, str] = field(default_factory=dict)  # profile_key(connection id, email) -> prof id
    profile_data: dict[str, Entity] = field(default_factory=dict)  # prof id -> last profile
    auth_requests: dict[str, Entity] = field(default_factory=dict)  # id -> AuthRequest.to_dict()
    codes: dict[str, Entity] = field(default_factory=dict)
    refresh_tokens: dict[str, Entity] = field(default_factory=dict)
    sso_access_tokens: dict[str, str] = field(default_factory=dict)  # token -> prof id
    logout_tokens: dict[str, Entity] = field(default_factory=dict)
    portal_links: dict[str, Entity] = field(default_factory=dict)
    application: Entity = field(default_factory=dict)
    # AuthKit's own methods (authkit.py): all plain JSON-able data so that persisting the Store covers them.
    passwords: dict[str, str] = field(default_factory=dict)  # user id -> salted scrypt hash
    magic_auths: dict[str, Entity] = field(default_factory=dict)  # magic_auth id -> code record
    pending_authentications: dict[str, Entity] = field(default_factory=dict)  # token -> {"kind", "user_id", ...}
    rate_limits: dict[str, list[float]] = field(default_factory=dict)  # "bucket:email" -> request times
    sign_in_failures: dict[str, Entity] = field(default_factory=dict)  # email -> idp_failures failure
    # the browser's AuthKit session (authkit_session.py): cookie token -> {"user_id", "auth_time", "method"}
    browser_sessions: dict[str, Entity] = field(default_factory=dict)

    # ---- lookups -------------------------------------------------------------------------------
    @staticmethod
    def profile_key(connection_id: str, email: str) -> str:
        """Key of ``profiles``: one profile id per connection and (lower-cased) email."""
        return f"{connection_id} {email.lower()}"

    def get(self, collection: str, entity_id: str, kind: str) -> Entity:
        """Return ``getattr(self, collection)[entity_id]`` or raise a 404 ``entity_not_found``."""
        item = getattr(self, collection).get(entity_id)
        if item is None:
            raise not_found(kind, entity_id)
        return item

    def org_domains(self, org_id: str) -> list[Entity]:
        """Domains of an organization in creation order."""
        return [d for d in self.organization_domains.values() if d["organization_id"] == org_id]

    def org_for_domain(self, domain: str, *, verified_only: bool = True) -> Entity | None:
        """The organization owning ``domain`` (case-insensitive), if any. Only a verified domain belongs to its
        organization for sign-in (home-realm discovery, SSO enforcement), as WorkOS applies domain policies;
        ``verified_only=False`` also finds a pending claim (a domain is claimed by one organization at a time)."""
        domain = domain.lower()
        for d in self.organization_domains.values():
            if d["domain"].lower() == domain and (d.get("state") == "verified" or not verified_only):
                return self.organizations.get(d["organization_id"])
        return None

    def user_by_email(self, email: str) -> Entity | None:
        """The User Management user with this email (case-insensitive)."""
        email = email.lower()
        for u in self.users.values():
            if u["email"].lower() == email:
                return u
        return None

    def membership(self, user_id: str, org_id: str) -> Entity | None:
        """The membership of ``user_id`` in ``org_id``, if any."""
        for m in self.memberships.values():
            if m["user_id"] == user_id and m["organization_id"] == org_id:
                return m
        return None

    def user_memberships(self, user_id: str, *, active_only: bool = True) -> list[Entity]:
        """Memberships of a user (active ones only by default)."""
        return [
            m
            for m in self.memberships.values()
            if m["user_id"] == user_id and (not active_only or m["status"] == "active")
        ]

    def org_connection(self, org_id: str) -> Entity | None:
        """The organization's first active (else any) SSO connection."""
        conns = [c for c in self.connections.values() if c.get("organization_id") == org_id]
        active = [c for c in conns if c["state"] == "active"]
        return (active or conns)[0] if conns else None

    def org_directories(self, org_id: str) -> list[Entity]:
        """Directories of an organization."""
        return [d for d in self.directories.values() if d["organization_id"] == org_id]

    def directory_user_by_email(self, org_id: str, email: str) -> Entity | None:
        """A directory user of the organization with this email (case-insensitive)."""
        email = email.lower()
        for du in self.directory_users.values():
            if du["organization_id"] == org_id and (du.get("email") or "").lower() == email:
                return du
        return None

    def groups_of(self, directory_user_id: str) -> list[Entity]:
        """Directory groups the directory user belongs to."""
        return [
            self.directory_groups[g]
            for g in self.user_groups.get(directory_user_id, {})
            if g in self.directory_groups
        ]

    def add_member(self, group_id: str, user_id: str) -> bool:
        """Add a user to a group; returns False when already a member."""
        members = self.group_members.setdefault(group_id, {})
        if user_id in members:
            return False
        members[user_id] = None
        self.user_groups.setdefault(user_id, {})[group_id] = None
        return True

    def remove_member(self, group_id: str, user_id: str) -> bool:
        """Remove a user from a group; returns False when not a member."""
        members = self.group_members.get(group_id, {})
        if user_id not in members:
            return False
        del members[user_id]
        self.user_groups.get(user_id, {}).pop(group_id, None)
        return True
