"""Control API, directory side: the customer's IdP changing users, groups and directories (``/_emulator/``).
Each change bumps ``updated_at``, is recorded as a WorkOS event and delivered as a webhook."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from . import dsync, serialize
from .http import json_body, opt_str
from .ids import iso, new_id, token
from .state import emulator

bp = Blueprint("control_directory", __name__, url_prefix="/_emulator")


@bp.post("/directories/<directory_id>/users")
def create_directory_user(directory_id: str) -> Any:
    """Create a directory user: ``{email, first_name, last_name, idp_id?, groups?: [id|name], state?, ...}``."""
    return jsonify(dsync.create_user(emulator(), directory_id, json_body())), 201


@bp.patch("/directory_users/<user_id>")
def patch_directory_user(user_id: str) -> Any:
    """Update any attributes incl. ``email``, names, ``state``, ``custom_attributes`` and ``groups``."""
    return jsonify(dsync.update_user(emulator(), user_id, json_body()))


@bp.post("/directory_users/<user_id>/suspend")
def suspend_directory_user(user_id: str) -> Any:
    """State ``suspended``."""
    return jsonify(dsync.set_state(emulator(), user_id, "suspended"))


@bp.post("/directory_users/<user_id>/deactivate")
def deactivate_directory_user(user_id: str) -> Any:
    """State ``inactive``."""
    return jsonify(dsync.set_state(emulator(), user_id, "inactive"))


@bp.post("/directory_users/<user_id>/reactivate")
def reactivate_directory_user(user_id: str) -> Any:
    """State ``active``."""
    return jsonify(dsync.set_state(emulator(), user_id, "active"))


@bp.delete("/directory_users/<user_id>")
def delete_directory_user(user_id: str) -> Any:
    """Hard delete (``dsync.user.deleted``)."""
    dsync.delete_user(emulator(), user_id)
    return Response(status=204)


@bp.post("/directories/<directory_id>/groups")
def create_directory_group(directory_id: str) -> Any:
    """Create a group: ``{name, idp_id?}``."""
    return jsonify(dsync.create_group(emulator(), directory_id, json_body())), 201


@bp.patch("/directory_groups/<group_id>")
def patch_directory_group(group_id: str) -> Any:
    """Rename a group: ``{name}``."""
    return jsonify(dsync.update_group(emulator(), group_id, json_body()))


@bp.delete("/directory_groups/<group_id>")
def delete_directory_group(group_id: str) -> Any:
    """Delete a group (``dsync.group.deleted``)."""
    dsync.delete_group(emulator(), group_id)
    return Response(status=204)


@bp.post("/directory_groups/<group_id>/members/<user_id>")
def add_group_member(group_id: str, user_id: str) -> Any:
    """Add a member (``dsync.group.user_added``)."""
    added = dsync.add_member(emulator(), group_id, user_id)
    return jsonify({"added": added})


@bp.delete("/directory_groups/<group_id>/members/<user_id>")
def remove_group_member(group_id: str, user_id: str) -> Any:
    """Remove a member (``dsync.group.user_removed``)."""
    removed = dsync.remove_member(emulator(), group_id, user_id)
    return jsonify({"removed": removed})


@bp.delete("/directories/<directory_id>")
def delete_directory(directory_id: str) -> Any:
    """Delete the directory (``dsync.deleted``)."""
    dsync.delete_directory(emulator(), directory_id)
    return Response(status=204)


@bp.post("/directories/<directory_id>/activate")
def activate_directory(directory_id: str) -> Any:
    """Emit ``dsync.activated`` for the directory (state ``linked``)."""
    emu = emulator()
    with emu.store.lock:
        d = emu.store.get("directories", directory_id, "Directory")
        d["state"] = "linked"
        serialize.touch(d)
        emu.emit("dsync.activated", serialize.directory_event(emu.store, d), d["organization_id"])
        return jsonify(serialize.directory(emu.store, d))


@bp.post("/organizations/<org_id>/directories")
def create_directory(org_id: str) -> Any:
    """``{type?, name?}``: connect a new (empty) directory to the organization and emit ``dsync.activated``."""
    data = json_body()
    emu = emulator()
    with emu.store.lock:
        org = emu.store.get("organizations", org_id, "Organization")
        now = iso()
        domains = emu.store.org_domains(org_id)
        d: dict[str, Any] = {"id": new_id("directory"), "organization_id": org_id, "external_key": token(12),
             "type": opt_str(data, "type") or "generic scim v2.0", "state": "linked",
             "name": opt_str(data, "name") or f"{org['name']} directory",
             "domain": domains[0]["domain"] if domains else None, "created_at": now, "updated_at": now}
        emu.store.directories[d["id"]] = d
        emu.emit("dsync.activated", serialize.directory_event(emu.store, d), org_id)
        return jsonify(serialize.directory(emu.store, d)), 201


@bp.post("/directories/<directory_id>/bulk")
def bulk_directory(directory_id: str) -> Any:
    """``{groups: [...], users: [...], emit_events?: bool}``: create many objects in one call."""
    return jsonify(dsync.bulk(emulator(), directory_id, json_body())), 201
