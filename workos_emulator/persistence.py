"""The emulator's state in its data folder (SQLite, stdlib ``sqlite3``), so that a restart forgets nothing.

WorkOS never forgets what was created through its API; an app that restarts ``make run`` still holds the ids of
connections, organizations and sessions it created. Every ``Store`` field (all but ``lock``) is saved as one
JSON row, generically: a new field is persisted without code here. The app saves before each response, under
``Store.lock``, only the fields whose JSON changed. State saved for another seed file is ignored (the emulator
then starts from its own seed), and so is a fresh data folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

from .store import Store

STATE_FILE = "state.sqlite3"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS store_fields (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)


def store_field_names() -> list[str]:
    """The persisted fields of ``Store``: every dataclass field but the lock."""
    return [f.name for f in fields(Store) if f.name != "lock"]


def seed_digest(seed_path: str | None) -> str:
    """Identity of a seed: sha256 of its file, or ``"empty"`` without one."""
    if not seed_path:
        return "empty"
    return hashlib.sha256(Path(seed_path).read_bytes()).hexdigest()


class StatePersistence:
    """One SQLite file per data folder; callers hold ``Store.lock`` around :meth:`load` and :meth:`save`."""

    def __init__(self, data_dir: str, seed: str) -> None:
        os.makedirs(data_dir, exist_ok=True)
        self.path = os.path.join(data_dir, STATE_FILE)
        self._seed = seed
        # One connection shared by the server's threads; Store.lock serializes every use of it.
        self._conn = sqlite3.connect(self.path, check_same_thread=False)
        with self._conn:
            for statement in _SCHEMA:
                self._conn.execute(statement)
        self._saved: dict[str, str] = {}

    def load(self, store: Store) -> bool:
        """Fill ``store`` from the file; ``False`` (store untouched) when it holds no state for this seed."""
        meta = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("seed") != self._seed:
            return False
        rows = dict(self._conn.execute("SELECT name, value FROM store_fields").fetchall())
        for name in store_field_names():
            if name in rows:
                setattr(store, name, json.loads(rows[name]))
                self._saved[name] = rows[name]
        return True

    def save(self, store: Store) -> None:
        """Write the fields whose JSON changed since the last save, in one transaction."""
        changed: dict[str, str] = {}
        for name in store_field_names():
            text = json.dumps(getattr(store, name), separators=(",", ":"), allow_nan=False)
            if self._saved.get(name) != text:
                changed[name] = text
        if not changed:
            return
        with self._conn:
            self._conn.executemany(
                "INSERT INTO store_fields (name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                list(changed.items()),
            )
            self._conn.execute(
                "INSERT INTO meta (key, value) VALUES ('seed', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (self._seed,),
            )
        self._saved.update(changed)

    def load_or_seed(self, store: Store, seed: Callable[[Store], None]) -> None:
        """Load the saved state, else fill ``store`` with ``seed`` and save it."""
        if not self.load(store):
            seed(store)
            self.save(store)

    def close(self) -> None:
        """Close the SQLite connection."""
        self._conn.close()
