"""Seed loading: build the in-memory store from a YAML/JSON seed file (format in ``seeds/demo.yaml``)."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import yaml

from .ids import new_id, token
from .store import Store

SEED_TIME = "2024-01-15T09:00:00.000Z"

DEFAULT_ROLES: list[dict[str, Any]] = [
    {
        "slug": "admin",
        "name": "Admin",
        "description": "Full access: members, API keys, SSO and directory settings, data.",
        "permissions": [
            "members:read", "members:write", "keys:read", "keys:write", "sso:manage", "dsync:manage",
            "audit:read", "billing:manage", "data:read", "data:write",
        ],
    },
    {
        "slug": "developer",
        "name": "Developer",
        "description": "Create API keys and read/write data.",
        "permissions": ["keys:read", "keys:write", "data:read", "data:write"],
    },
    {"slug": "viewer", "name": "Viewer", "description": "Read-only data access.", "permissions": ["data:read"]},
]

DEFAULT_APPLICATION = {
    "redirect_uris": ["http://localhost:5000/auth/callback"],
    "logout_redirect_uri": "http://localhost:5000/",
    "logout_redirect_uris": [],
    "loopback_redirects": True,  # the development default (docs/emulator.md); a seed sets false for WorkOS's rule
}


def load_seed_file(path: str | None) -> dict[str, Any]:
    """Read a seed file (YAML or JSON); ``None`` gives an empty seed. A fresh copy each call (the caller may
    change it); the file is parsed again only when its size or modification time changed."""
    if not path:
        return {}
    stat = Path(path).stat()
    return copy.deepcopy(_parsed_seed(path, stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=8)
def _parsed_seed(path: str, _mtime_ns: int, _size: int) -> dict[str, Any]:
    # Parsing the demo seed with PyYAML cost 0.05 s, 90 % of a reset (``POST /_emulator/reset``, once per test).
    text = Path(path).read_text(encoding="utf-8")
    data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"seed {path}: top level must be a mapping")
    return data


def _ts(item: dict[str, Any]) -> str:
    return str(item.get("created_at") or SEED_TIME)


def apply_seed(store: Store, seed: dict[str, Any]) -> None:
    """Populate ``store`` (assumed empty) from ``seed``. Objects keep the ids given in the seed."""
    store.application = {**DEFAULT_APPLICATION, **(seed.get("application") or {})}
    for r in seed.get("roles") or DEFAULT_ROLES:
        slug = r["slug"]
        store.roles[slug] = {
            "id": r.get("id") or f"role_{slug}",
            "slug": slug,
            "name": r.get("name") or slug.title(),
            "description": r.get("description"),
            "type": "EnvironmentRole",
            "resource_type_slug": "organization",
            "permissions": list(r.get("permissions") or []),
            "created_at": SEED_TIME,
            "updated_at": SEED_TIME,
        }
    for u in seed.get("users") or []:
        ts = _ts(u)
        store.users[u["id"]] = {
            "id": u["id"],
            "email": u["email"],
            "email_verified": bool(u.get("email_verified", True)),
            "first_name": u.get("first_name"),
            "last_name": u.get("last_name"),
            "profile_picture_url": u.get("profile_picture_url"),
            "external_id": u.get("external_id"),
            "metadata": dict(u.get("metadata") or {}),
            "last_sign_in_at": None,
            "locale": u.get("locale", "en-US"),
            "created_at": ts,
            "updated_at": ts,
        }
    for org in seed.get("organizations") or []:
        _apply_org(store, org)


def _apply_org(store: Store, org: dict[str, Any]) -> None:
    oid, ts = org["id"], _ts(org)
    store.organizations[oid] = {
        "id": oid,
        "name": org["name"],
        "allow_profiles_outside_organization": bool(org.get("allow_profiles_outside_organization", False)),
        "metadata": {str(k): str(v) for k, v in (org.get("metadata") or {}).items()},
        "external_id": org.get("external_id"),
        "created_at": ts,
        "updated_at": ts,
    }
    for d in org.get("domains") or []:
        d = {"domain": d} if isinstance(d, str) else d
        did = d.get("id") or new_id("org_domain")
        store.organization_domains[did] = {
            "id": did,
            "organization_id": oid,
            "domain": d["domain"],
            "state": d.get("state", "verified"),
            "verification_strategy": d.get("verification_strategy", "dns"),
            "verification_token": d.get("verification_token") or token(12),
            "verification_prefix": d.get("verification_prefix", "workos-verification"),
            "created_at": ts,
            "updated_at": ts,
        }
    conns = org.get("connections") or ([org["connection"]] if org.get("connection") else [])
    for c in conns:
        store.connections[c["id"]] = {
            "id": c["id"],
            "organization_id": oid,
            "connection_type": c["type"],
            "name": c.get("name") or f"{org['name']} {c['type']}",
            "state": c.get("state", "active"),
            "external_key": c.get("external_key") or token(12),
            "created_at": ts,
            "updated_at": ts,
            "_options": c.get("options") or {},
        }
    dirs = org.get("directories") or ([org["directory"]] if org.get("directory") else [])
    for d in dirs:
        _apply_directory(store, oid, org, d)
    for m in org.get("members") or []:
        user_id = m["user"]
        if user_id not in store.users:
            raise ValueError(f"seed: membership {m.get('id')} names unknown user {user_id}")
        mid = m.get("id") or new_id("om")
        store.memberships[mid] = {
            "id": mid,
            "user_id": user_id,
            "organization_id": oid,
            "status": m.get("status", "active"),
            "role_slug": m.get("role", "viewer"),
            "directory_managed": bool(m.get("directory_managed", False)),
            "custom_attributes": dict(m.get("custom_attributes") or {}),
            "created_at": ts,
            "updated_at": ts,
        }


def _apply_directory(store: Store, oid: str, org: dict[str, Any], d: dict[str, Any]) -> None:
    did, ts = d["id"], _ts(d)
    domains = org.get("domains") or []
    first_domain = domains[0] if domains else None
    if isinstance(first_domain, dict):
        first_domain = first_domain.get("domain")
    store.directories[did] = {
        "id": did,
        "organization_id": oid,
        "external_key": d.get("external_key") or token(12),
        "type": d["type"],
        "state": d.get("state", "linked"),
        "name": d.get("name") or f"{org['name']} directory",
        "domain": d.get("domain") or first_domain,
        "created_at": ts,
        "updated_at": ts,
    }
    by_name: dict[str, str] = {}
    for g in d.get("groups") or []:
        gid = g["id"]
        by_name[g["name"]] = gid
        store.directory_groups[gid] = {
            "id": gid,
            "idp_id": g.get("idp_id") or g["name"],
            "directory_id": did,
            "organization_id": oid,
            "name": g["name"],
            "raw_attributes": dict(g.get("raw_attributes") or {"displayName": g["name"]}),
            "created_at": ts,
            "updated_at": ts,
        }
    for u in d.get("users") or []:
        uid = u["id"]
        store.directory_users[uid] = directory_user_entity(uid, did, oid, u, ts)
        for gname in u.get("groups") or []:
            gid = by_name.get(gname, gname)
            if gid not in store.directory_groups:
                raise ValueError(f"seed: directory user {uid} names unknown group {gname}")
            store.add_member(gid, uid)


def directory_user_entity(uid: str, did: str, oid: str, u: dict[str, Any], ts: str) -> dict[str, Any]:
    """Build a stored directory user from seed/control-API attributes."""
    email = u.get("email")
    custom = dict(u.get("custom_attributes") or {})
    for key in ("department", "job_title", "employee_type", "manager_email", "cost_center"):
        if u.get(key) is not None and key not in custom:
            custom[key] = u[key]
    entity: dict[str, Any] = {
        "id": uid,
        "directory_id": did,
        "organization_id": oid,
        "idp_id": str(u.get("idp_id") or uid),
        "email": email,
        "first_name": u.get("first_name"),
        "last_name": u.get("last_name"),
        "emails": [{"primary": True, "type": "work", "value": email}] if email else [],
        "job_title": u.get("job_title"),
        "username": u.get("username") or email,
        "state": u.get("state", "active"),
        "custom_attributes": custom,
        "created_at": ts,
        "updated_at": ts,
        "_department": u.get("department") or custom.get("department"),
    }
    if u.get("raw_attributes") is not None:
        entity["raw_attributes"] = dict(u["raw_attributes"])
    if u.get("role"):
        entity["role"] = {"slug": u["role"]}
        entity["roles"] = [{"slug": u["role"]}]
    return entity
