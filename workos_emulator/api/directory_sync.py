"""Directory Sync read API (directories, directory users, directory groups) and directory deletion."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from .. import dsync, serialize
from ..pagination import paginate, paginate_collection
from ..persistence import read_only
from ..state import emulator

bp = Blueprint("directory_sync", __name__)


@bp.get("/directories")
@read_only
def list_directories() -> Any:
    """``GET /directories`` (filters: ``organization_id``, ``domain``, ``search``)."""
    emu = emulator()
    org_id = request.args.get("organization_id")
    domain = (request.args.get("domain") or "").lower()
    search = (request.args.get("search") or "").lower()
    with emu.store.lock:
        store = emu.store
        items = [
            d
            for d in store.directories.values()
            if (not org_id or d["organization_id"] == org_id)
            and (not domain or (d.get("domain") or "").lower() == domain)
            and (not search or search in d["name"].lower())
        ]
        return jsonify(paginate(items, lambda d: serialize.directory(store, d)))


@bp.get("/directories/<directory_id>")
@read_only
def get_directory(directory_id: str) -> Any:
    """``GET /directories/{id}``."""
    emu = emulator()
    with emu.store.lock:
        return jsonify(serialize.directory(emu.store, emu.store.get("directories", directory_id, "Directory")))


@bp.delete("/directories/<directory_id>")
def delete_directory(directory_id: str) -> Any:
    """``DELETE /directories/{id}`` (emits one ``dsync.deleted``)."""
    dsync.delete_directory(emulator(), directory_id)
    return Response(status=200)


@bp.get("/directory_users")
@read_only
def list_directory_users() -> Any:
    """``GET /directory_users`` (``directory`` or ``group`` filter; also ``email``/``idp_id``)."""
    emu = emulator()
    directory = request.args.get("directory")
    group = request.args.get("group")
    email = (request.args.get("email") or "").lower()
    idp_id = request.args.get("idp_id")
    with emu.store.lock:
        store = emu.store
        if directory:
            store.get("directories", directory, "Directory")

        def wanted(u: dict[str, Any]) -> bool:
            return ((not directory or u["directory_id"] == directory)
                    and (not email or (u.get("email") or "").lower() == email)
                    and (not idp_id or u["idp_id"] == idp_id))

        def render(u: dict[str, Any]) -> dict[str, Any]:
            return serialize.directory_user(store, u)

        if group:
            store.get("directory_groups", group, "DirectoryGroup")
            pool = [store.directory_users[u] for u in store.group_members.get(group, {}) if u in store.directory_users]
            return jsonify(paginate([u for u in pool if wanted(u)], render))
        return jsonify(paginate_collection(store.directory_users, render, wanted))


@bp.get("/directory_users/<user_id>")
@read_only
def get_directory_user(user_id: str) -> Any:
    """``GET /directory_users/{id}``."""
    emu = emulator()
    with emu.store.lock:
        u = emu.store.get("directory_users", user_id, "DirectoryUser")
        return jsonify(serialize.directory_user(emu.store, u))


@bp.get("/directory_groups")
@read_only
def list_directory_groups() -> Any:
    """``GET /directory_groups`` (``directory`` or ``user`` filter)."""
    emu = emulator()
    directory = request.args.get("directory")
    user = request.args.get("user")
    with emu.store.lock:
        store = emu.store
        if directory:
            store.get("directories", directory, "Directory")

        def wanted(g: dict[str, Any]) -> bool:
            return not directory or g["directory_id"] == directory

        if user:
            store.get("directory_users", user, "DirectoryUser")
            return jsonify(paginate([g for g in store.groups_of(user) if wanted(g)], serialize.directory_group))
        return jsonify(paginate_collection(store.directory_groups, serialize.directory_group, wanted))


@bp.get("/directory_groups/<group_id>")
@read_only
def get_directory_group(group_id: str) -> Any:
    """``GET /directory_groups/{id}``."""
    emu = emulator()
    with emu.store.lock:
        return jsonify(serialize.directory_group(emu.store.get("directory_groups", group_id, "DirectoryGroup")))
