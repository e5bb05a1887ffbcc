"""Passwords of seed users: ``password: generate`` in a seed gives the user a random password, made once per data
folder (``<data_dir>/seed_passwords.json``, owner-only) so that none is committed; ``make run`` prints it and
tests read it through ``GET /_emulator/seed_passwords``. Any other string is taken as the password itself."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from .authkit import hash_password
from .store import Store

GENERATE = "generate"
FILENAME = "seed_passwords.json"


def _wanted(seed: dict[str, Any]) -> dict[str, str]:
    return {str(u["email"]).lower(): str(u["password"]) for u in seed.get("users") or [] if u.get("password")}


def _load(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _resolve(data_dir: str, seed: dict[str, Any]) -> tuple[dict[str, str], set[str]]:
    """``{email: password}`` for every seed user with a ``password``, and the emails whose password was generated
    just now (none was kept in the data folder)."""
    wanted = _wanted(seed)
    if not wanted:
        return {}, set()
    path = Path(data_dir) / FILENAME
    if path.exists():
        os.chmod(path, 0o600)  # tightened at start, as the state file and the signing key
    kept = _load(path)
    out: dict[str, str] = {}
    for email, value in wanted.items():
        out[email] = (kept.get(email) or secrets.token_urlsafe(12)) if value == GENERATE else value
    fresh = {e for e in out if wanted[e] == GENERATE and kept.get(e) != out[e]}
    if fresh:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({**kept, **{e: out[e] for e in fresh}}, fh, indent=2)
    return out, fresh


def resolve(data_dir: str, seed: dict[str, Any]) -> dict[str, str]:
    """``{email: password}`` for every seed user with a ``password``, generating (and keeping) missing ones."""
    return _resolve(data_dir, seed)[0]


def apply_seed_passwords(store: Store, seed: dict[str, Any], data_dir: str) -> None:
    """Hash the seed users' passwords into ``store.passwords``."""
    for email, password in resolve(data_dir, seed).items():
        user = store.user_by_email(email)
        if user is not None:
            store.passwords[user["id"]] = hash_password(password)


def sync_seed_passwords(store: Store, seed: dict[str, Any], data_dir: str) -> dict[str, str]:
    """The seed users' passwords, as the store accepts them: a password generated now (its file was deleted, the
    saved state kept) replaces the forgotten one in ``store.passwords``, so the password shown always signs in."""
    passwords, fresh = _resolve(data_dir, seed)
    for email in fresh:
        user = store.user_by_email(email)
        if user is not None:
            store.passwords[user["id"]] = hash_password(passwords[email])
    return passwords
