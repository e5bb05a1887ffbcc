"""Render stored entities in the exact JSON shapes the WorkOS API (and the SDK's models) use."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

from . import idp
from .ids import iso, parse_iso, utcnow
from .store import Entity, Store

_ONE_MS = timedelta(milliseconds=1)


def _public(entity: Entity) -> Entity:
    """Copy an entity without internal ``_``-prefixed keys."""
    return {k: copy.deepcopy(v) for k, v in entity.items() if not k.startswith("_")}


def organization_domain(d: Entity) -> Entity:
    """OrganizationDomain."""
    return {"object": "organization_domain", **_public(d)}


def organization(store: Store, org: Entity) -> Entity:
    """Organization with embedded domains."""
    out = {"object": "organization", **_public(org)}
    out["domains"] = [organization_domain(d) for d in store.org_domains(org["id"])]
    return out


def connection(store: Store, conn: Entity) -> Entity:
    """Connection (REST shape); domains are the owning organization's domains."""
    out = {"object": "connection", **_public(conn)}
    out.pop("external_key", None)
    out.pop("external_id", None)
    out["status"] = "linked" if conn["state"] == "active" else "unlinked"
    out["domains"] = [
        {"id": d["id"], "object": "connection_domain", "domain": d["domain"]}
        for d in store.org_domains(conn.get("organization_id") or "")
    ]
    return out


def connection_event(store: Store, conn: Entity, *, full: bool = True) -> Entity:
    """Payload of ``connection.activated``/``deactivated`` (``full``) or ``connection.deleted``."""
    out = {
        "object": "connection",
        "id": conn["id"],
        "organization_id": conn.get("organization_id"),
        "state": conn["state"],
        "name": conn["name"],
        "connection_type": conn["connection_type"],
        "created_at": conn["created_at"],
        "updated_at": conn["updated_at"],
    }
    if full:
        out["external_key"] = conn["external_key"]
        out["status"] = "linked" if conn["state"] == "active" else "unlinked"
        out["domains"] = connection(store, conn)["domains"]
    return out


def directory(store: Store, d: Entity) -> Entity:
    """Directory (REST shape) with user/group counts in ``metadata``."""
    out = {"object": "directory", **_public(d)}
    users = [u for u in store.directory_users.values() if u["directory_id"] == d["id"]]
    active = sum(1 for u in users if u["state"] == "active")
    groups = sum(1 for g in store.directory_groups.values() if g["directory_id"] == d["id"])
    out["metadata"] = {"users": {"active": active, "inactive": len(users) - active}, "groups": groups}
    return out


_EVENT_DIR_STATE = {"linked": "active", "unlinked": "inactive"}


def directory_event(store: Store, d: Entity, *, deleted: bool = False) -> Entity:
    """Payload of ``dsync.activated`` (or ``dsync.deleted`` when ``deleted``)."""
    out: Entity = {
        "object": "directory",
        "id": d["id"],
        "organization_id": d["organization_id"],
        "type": d["type"],
        "state": "deleting" if deleted else _EVENT_DIR_STATE.get(d["state"], d["state"]),
        "name": d["name"],
        "created_at": d["created_at"],
        "updated_at": d["updated_at"],
    }
    if not deleted:
        out["external_key"] = d["external_key"]
        out["domains"] = [
            {"object": "organization_domain", "id": x["id"], "domain": x["domain"]}
            for x in store.org_domains(d["organization_id"])
        ]
    return out


def directory_group(g: Entity) -> Entity:
    """DirectoryGroup."""
    return {"object": "directory_group", **_public(g)}


def directory_user(store: Store, u: Entity, *, with_groups: bool = True) -> Entity:
    """DirectoryUser (``with_groups`` adds the embedded ``groups`` list of DirectoryUserWithGroups)."""
    out = {"object": "directory_user", **_public(u)}
    if "raw_attributes" not in u:
        d = store.directories.get(u["directory_id"])
        names = [g["name"] for g in store.groups_of(u["id"])]
        out["raw_attributes"] = idp.directory_raw_attributes(d["type"] if d else "", u, names)
    first, last = u.get("first_name"), u.get("last_name")
    out["name"] = " ".join(x for x in (first, last) if x) or None
    if with_groups:
        out["groups"] = [directory_group(g) for g in store.groups_of(u["id"])]
    return out


def user(u: Entity) -> Entity:
    """User Management User."""
    return {"object": "user", **_public(u)}


def membership(store: Store, m: Entity, *, embed_user: bool = True) -> Entity:
    """OrganizationMembership (``embed_user=False`` gives the event payload shape)."""
    out: Entity = {
        "object": "organization_membership",
        "id": m["id"],
        "user_id": m["user_id"],
        "organization_id": m["organization_id"],
        "status": m["status"],
        "directory_managed": m["directory_managed"],
        "role": {"slug": m["role_slug"]},
        "roles": [{"slug": m["role_slug"]}],
        "custom_attributes": copy.deepcopy(m.get("custom_attributes") or {}),
        "created_at": m["created_at"],
        "updated_at": m["updated_at"],
    }
    org = store.organizations.get(m["organization_id"])
    if embed_user:
        if org is not None:
            out["organization_name"] = org["name"]
        u = store.users.get(m["user_id"])
        if u is not None:
            out["user"] = user(u)
    return out


def session(s: Entity) -> Entity:
    """UserSessionsListItem; the status becomes ``expired`` once ``expires_at`` has passed."""
    out = {"object": "session", **_public(s)}
    if out["status"] == "active" and parse_iso(out["expires_at"]) <= utcnow():
        out["status"] = "expired"
    return out


def role(r: Entity) -> Entity:
    """Role."""
    return {"object": "role", **_public(r)}


def webhook_endpoint(w: Entity) -> Entity:
    """WebhookEndpoint."""
    return {"object": "webhook_endpoint", **_public(w)}


def touch(entity: Entity) -> str:
    """Bump ``updated_at`` (strictly increasing) and return it."""
    now = iso()
    if entity.get("updated_at") and now <= entity["updated_at"]:
        now = iso(parse_iso(entity["updated_at"]) + _ONE_MS)
    entity["updated_at"] = now
    return now


def snapshot(data: Any) -> Any:
    """Deep copy for event payloads (events must not change when state changes later)."""
    return copy.deepcopy(data)

