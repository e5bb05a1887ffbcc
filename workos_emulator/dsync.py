"""Directory mutations (played by the customer's IdP via the control API), each emitting ``dsync.*`` events."""

from __future__ import annotations

from typing import Any

from . import idp, serialize
from .errors import ApiError, invalid_params
from .ids import iso, new_id
from .seed import directory_user_entity
from .state import Emulator
from .store import Entity, Store

USER_FIELDS = ("email", "first_name", "last_name", "job_title", "username", "idp_id", "custom_attributes",
               "raw_attributes")


def _user_payload(store: Store, u: Entity) -> Entity:
    return serialize.directory_user(store, u, with_groups=False)


_NOT_ATTRIBUTES = frozenset({"object", "id", "directory_id", "organization_id", "created_at", "updated_at", "groups"})
_NESTED = ("raw_attributes", "custom_attributes")


def previous_attributes(before: Entity, after: Entity) -> Entity:
    """``previous_attributes`` as WorkOS documents it: the old value of each changed root attribute (``emails``
    included), and for raw and custom attributes only their changed keys, a newly added one as ``None``."""
    out: Entity = {}
    for key in sorted(set(before) | set(after)):
        if key in _NOT_ATTRIBUTES or key in _NESTED or before.get(key) == after.get(key):
            continue
        out[key] = before.get(key)
    for key in _NESTED:
        old, new = before.get(key) or {}, after.get(key) or {}
        changed = {k: old.get(k) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}
        if changed:
            out[key] = changed
    return out


def _resolve_group(store: Store, directory_id: str, ref: str) -> Entity:
    """A group of the directory by id, idp_id or name."""
    g = store.directory_groups.get(ref)
    if g is not None and g["directory_id"] == directory_id:
        return g
    for g in store.directory_groups.values():
        if g["directory_id"] == directory_id and ref in (g["name"], g["idp_id"]):
            return g
    raise ApiError(404, f"DirectoryGroup not found: '{ref}'.", "entity_not_found")


def _sync_membership_role(emu: Emulator, u: Entity) -> None:
    """IdP role assignment: recompute a directory-managed membership's role from the user's groups."""
    store = emu.store
    if not u.get("email"):
        return
    um = store.user_by_email(u["email"])
    if um is None:
        return
    m = store.membership(um["id"], u["organization_id"])
    if m is None or not m["directory_managed"]:
        return
    role = idp.role_for_groups([g["name"] for g in store.groups_of(u["id"])])
    status = "active" if u["state"] == "active" else "inactive"
    if role != m["role_slug"] or status != m["status"]:
        m["role_slug"], m["status"] = role, status
        serialize.touch(m)
        emu.emit("organization_membership.updated", serialize.membership(store, m, embed_user=False))


def create_user(emu: Emulator, directory_id: str, data: dict[str, Any], *, emit: bool = True) -> Entity:
    """Create a directory user (``dsync.user.created`` + ``dsync.group.user_added`` per group)."""
    store = emu.store
    with store.lock:
        d = store.get("directories", directory_id, "Directory")
        email = data.get("email")
        if email is not None and not isinstance(email, str):
            raise invalid_params("email must be a string.", "email")
        groups = [_resolve_group(store, directory_id, str(ref)) for ref in data.get("groups") or []]
        uid = data.get("id") or new_id("directory_user")
        if uid in store.directory_users:
            raise ApiError(409, f"Directory user {uid} already exists.", "conflict")
        u = directory_user_entity(uid, directory_id, d["organization_id"], data, iso())
        if not data.get("idp_id"):
            u["idp_id"] = new_id("idp")[4:]
        store.directory_users[uid] = u
        if emit:
            emu.emit("dsync.user.created", _user_payload(store, u))
        for g in groups:
            store.add_member(g["id"], uid)
            if emit:
                emu.emit("dsync.group.user_added",
                         {"directory_id": directory_id, "user": _user_payload(store, u),
                          "group": serialize.directory_group(g)})
        return serialize.directory_user(store, u)


def update_user(emu: Emulator, user_id: str, data: dict[str, Any]) -> Entity:  # noqa: C901 - mirrors WorkOS's field-by-field update semantics
    """Update attributes (and, with ``groups``, group membership) of a directory user."""
    store = emu.store
    with store.lock:
        u = store.get("directory_users", user_id, "DirectoryUser")
        before = serialize.snapshot(_user_payload(store, u))
        previous: dict[str, Any] = {}
        for field in (*USER_FIELDS, "state"):
            if field in data and data[field] != u.get(field):
                if field == "state" and data[field] not in ("active", "suspended", "inactive"):
                    raise invalid_params("state must be active, suspended or inactive.", "state")
                previous[field] = serialize.snapshot(u.get(field))
                u[field] = serialize.snapshot(data[field])
        for key in ("department", "job_title", "employee_type", "manager_email", "cost_center"):
            if key in data and u["custom_attributes"].get(key) != data[key]:
                previous.setdefault("custom_attributes", serialize.snapshot(u["custom_attributes"]))
                u["custom_attributes"][key] = data[key]
                if key == "department":
                    u["_department"] = data[key]
        if "email" in previous:
            u["emails"] = [{"primary": True, "type": "work", "value": u["email"]}] if u["email"] else []
        if previous:
            serialize.touch(u)
            after = _user_payload(store, u)
            emu.emit("dsync.user.updated", {**after, "previous_attributes": previous_attributes(before, after)})
        if "groups" in data:
            wanted = [_resolve_group(store, u["directory_id"], str(r)) for r in data["groups"] or []]
            current = {g["id"] for g in store.groups_of(user_id)}
            for g in wanted:
                if g["id"] not in current:
                    _add(emu, g, u)
            for gid in current - {g["id"] for g in wanted}:
                _remove(emu, store.directory_groups[gid], u)
        _sync_membership_role(emu, u)
        return serialize.directory_user(store, u)


def set_state(emu: Emulator, user_id: str, state: str) -> Entity:
    """Suspend / deactivate / reactivate (``dsync.user.updated`` with ``state``)."""
    return update_user(emu, user_id, {"state": state})


def delete_user(emu: Emulator, user_id: str) -> None:
    """Delete a directory user (``dsync.user.deleted``)."""
    store = emu.store
    with store.lock:
        u = store.get("directory_users", user_id, "DirectoryUser")
        for g in store.groups_of(user_id):
            store.remove_member(g["id"], user_id)
        u["state"] = "inactive"
        serialize.touch(u)
        payload = _user_payload(store, u)
        del store.directory_users[user_id]
        store.user_groups.pop(user_id, None)
        emu.emit("dsync.user.deleted", payload)
        _deactivate_membership(emu, u)


def _deactivate_membership(emu: Emulator, u: Entity) -> None:
    store = emu.store
    um = store.user_by_email(u.get("email") or "") if u.get("email") else None
    m = store.membership(um["id"], u["organization_id"]) if um else None
    if m is not None and m["directory_managed"] and m["status"] == "active":
        m["status"] = "inactive"
        serialize.touch(m)
        emu.emit("organization_membership.updated", serialize.membership(store, m, embed_user=False))


def create_group(emu: Emulator, directory_id: str, data: dict[str, Any], *, emit: bool = True) -> Entity:
    """Create a directory group (``dsync.group.created``)."""
    store = emu.store
    with store.lock:
        d = store.get("directories", directory_id, "Directory")
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise invalid_params("name is required.", "name")
        gid = data.get("id") or new_id("directory_group")
        if gid in store.directory_groups:
            raise ApiError(409, f"Directory group {gid} already exists.", "conflict")
        now = iso()
        g = {
            "id": gid,
            "idp_id": str(data.get("idp_id") or name),
            "directory_id": directory_id,
            "organization_id": d["organization_id"],
            "name": name,
            "raw_attributes": dict(data.get("raw_attributes") or {"displayName": name}),
            "created_at": now,
            "updated_at": now,
        }
        store.directory_groups[gid] = g
        if emit:
            emu.emit("dsync.group.created", serialize.directory_group(g))
        return serialize.directory_group(g)


def update_group(emu: Emulator, group_id: str, data: dict[str, Any]) -> Entity:
    """Rename / change a group (``dsync.group.updated`` with ``previous_attributes``)."""
    store = emu.store
    with store.lock:
        g = store.get("directory_groups", group_id, "DirectoryGroup")
        previous: dict[str, Any] = {}
        for field in ("name", "idp_id", "raw_attributes"):
            if field in data and data[field] != g.get(field):
                if field == "name" and (not isinstance(data["name"], str) or not data["name"]):
                    raise invalid_params("name must be a non-empty string.", "name")
                previous[field] = g.get(field)
                g[field] = serialize.snapshot(data[field])
        if "name" in previous and isinstance(g.get("raw_attributes"), dict):
            g["raw_attributes"]["displayName"] = g["name"]
        if previous:
            serialize.touch(g)
            emu.emit("dsync.group.updated", {**serialize.directory_group(g), "previous_attributes": previous})
            for uid in list(store.group_members.get(group_id, {})):
                if uid in store.directory_users:
                    _sync_membership_role(emu, store.directory_users[uid])
        return serialize.directory_group(g)


def delete_group(emu: Emulator, group_id: str) -> None:
    """Delete a group (``dsync.group.deleted``); members silently lose the group."""
    store = emu.store
    with store.lock:
        g = store.get("directory_groups", group_id, "DirectoryGroup")
        members = list(store.group_members.pop(group_id, {}))
        for uid in members:
            store.user_groups.get(uid, {}).pop(group_id, None)
        del store.directory_groups[group_id]
        emu.emit("dsync.group.deleted", serialize.directory_group(g))
        for uid in members:
            if uid in store.directory_users:
                _sync_membership_role(emu, store.directory_users[uid])


def _add(emu: Emulator, g: Entity, u: Entity) -> bool:
    store = emu.store
    if not store.add_member(g["id"], u["id"]):
        return False
    emu.emit("dsync.group.user_added", {"directory_id": g["directory_id"], "user": _user_payload(store, u),
                                         "group": serialize.directory_group(g)})
    return True


def _remove(emu: Emulator, g: Entity, u: Entity) -> bool:
    store = emu.store
    if not store.remove_member(g["id"], u["id"]):
        return False
    emu.emit("dsync.group.user_removed", {"directory_id": g["directory_id"], "user": _user_payload(store, u),
                                           "group": serialize.directory_group(g)})
    return True


def add_member(emu: Emulator, group_id: str, user_id: str) -> bool:
    """Add a user to a group (``dsync.group.user_added``); False if already a member."""
    store = emu.store
    with store.lock:
        g = store.get("directory_groups", group_id, "DirectoryGroup")
        u = store.get("directory_users", user_id, "DirectoryUser")
        if g["directory_id"] != u["directory_id"]:
            raise invalid_params("User and group belong to different directories.", "user_id")
        added = _add(emu, g, u)
        _sync_membership_role(emu, u)
        return added


def remove_member(emu: Emulator, group_id: str, user_id: str) -> bool:
    """Remove a user from a group (``dsync.group.user_removed``); False if not a member."""
    store = emu.store
    with store.lock:
        g = store.get("directory_groups", group_id, "DirectoryGroup")
        u = store.get("directory_users", user_id, "DirectoryUser")
        removed = _remove(emu, g, u)
        _sync_membership_role(emu, u)
        return removed


def delete_directory(emu: Emulator, directory_id: str) -> None:
    """Delete a directory with its users and groups: one ``dsync.deleted`` event, no per-object events."""
    store = emu.store
    with store.lock:
        d = store.get("directories", directory_id, "Directory")
        d["state"] = "deleting"
        serialize.touch(d)
        payload = serialize.directory_event(store, d, deleted=True)
        for uid in [k for k, u in store.directory_users.items() if u["directory_id"] == directory_id]:
            del store.directory_users[uid]
            store.user_groups.pop(uid, None)
        for gid in [k for k, g in store.directory_groups.items() if g["directory_id"] == directory_id]:
            del store.directory_groups[gid]
            store.group_members.pop(gid, None)
        del store.directories[directory_id]
        emu.emit("dsync.deleted", payload, d["organization_id"])


def bulk(emu: Emulator, directory_id: str, data: dict[str, Any]) -> dict[str, Any]:
    """Create many groups and users fast. ``emit_events`` (default true) controls event emission."""
    emit = bool(data.get("emit_events", True))
    groups = data.get("groups") or []
    users = data.get("users") or []
    if not isinstance(groups, list) or not isinstance(users, list):
        raise invalid_params("groups and users must be lists.", "groups", "users")
    with emu.store.lock:
        created_groups = [create_group(emu, directory_id, g, emit=emit)["id"] for g in groups]
        created_users = [create_user(emu, directory_id, u, emit=emit)["id"] for u in users]
    return {"groups": created_groups, "users": created_users}
