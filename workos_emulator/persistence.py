"""The emulator's state in its data folder (SQLite, stdlib ``sqlite3``), so that a restart forgets nothing.

WorkOS never forgets what was created through its API; an app that restarts ``make run`` still holds the ids of
connections, organizations and sessions it created. Every ``Store`` field (all but ``lock``) is saved as one
JSON row, generically: a new field is persisted without code here. The app saves before each response, under
``Store.lock``, only the fields whose JSON changed. State belongs to its data folder: only a fresh folder (or a
reset) applies the seed, and a seed file changed since then only earns a notice. The file is owner-only (it holds
password hashes, live codes and refresh tokens) and is validated at load: a file that is not this emulator's state
stops the start with :class:`StateFileError`, which names the file and the remedy.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import sys
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from .store import Store

STATE_FILE = "state.sqlite3"
SCHEMA_VERSION = "1"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS store_fields (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)
# The JSON type of each value of a field, by the inner type of its annotation (``dict[str, <inner>]``).
_INNER = {"Entity": dict, "dict": dict, "str": str, "list": list}


READ_ONLY = "emulator_read_only"


def read_only(view: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a view that never changes the store: its responses skip the save (which serializes every field to
    compare it, a cost that grows with the store, e.g. on every page of a 30,000-user directory)."""
    setattr(view, READ_ONLY, True)
    return view


class StateFileError(Exception):
    """The data folder's state file cannot be used; the message names it and what to do."""


def store_field_names() -> list[str]:
    """The persisted fields of ``Store``: every dataclass field but the lock."""
    return [f.name for f in fields(Store) if f.name != "lock"]


def seed_digest(seed_path: str | None) -> str:
    """Identity of a seed: sha256 of its file, or ``"empty"`` without one."""
    if not seed_path:
        return "empty"
    return hashlib.sha256(Path(seed_path).read_bytes()).hexdigest()


def _shape_error(name: str, value: Any) -> str | None:
    """Why the saved JSON of field *name* does not fit ``Store`` (``None``: it fits)."""
    field = next(f for f in fields(Store) if f.name == name)
    annotation = str(field.type)
    outer = list if annotation.startswith("list") else dict
    if not isinstance(value, outer):
        return f"field {name!r} is not a JSON {outer.__name__}"
    items = value.values() if isinstance(value, dict) else value
    inner = dict if outer is list else _INNER.get(annotation.removeprefix("dict[str, ").split("[")[0].rstrip("]"))
    if annotation != "Entity" and inner is not None and not all(isinstance(v, inner) for v in items):
        return f"field {name!r} holds a value that is not a JSON {inner.__name__}"
    return None


class StatePersistence:
    """One SQLite file per data folder; callers hold ``Store.lock`` around :meth:`load` and :meth:`save`."""

    def __init__(self, data_dir: str, seed: str) -> None:
        os.makedirs(data_dir, exist_ok=True)
        self.path = os.path.join(data_dir, STATE_FILE)
        self._seed = seed
        # Owner-only before SQLite opens it: SQLite gives its journal / WAL files the database file's mode.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        for name in os.listdir(data_dir):
            if name.startswith(STATE_FILE):
                os.chmod(os.path.join(data_dir, name), 0o600)
        # One connection shared by the server's threads; Store.lock serializes every use of it.
        self._conn = sqlite3.connect(self.path, check_same_thread=False)
        try:
            with self._conn:
                for statement in _SCHEMA:
                    self._conn.execute(statement)
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise self._unusable(str(exc)) from None
        self._saved: dict[str, str] = {}

    def _unusable(self, reason: str) -> StateFileError:
        return StateFileError(f"{self.path} is not usable emulator state ({reason}): delete {self.path} or start "
                              f"with a fresh data folder (--data-dir)")

    def _read(self) -> tuple[dict[str, str], dict[str, Any]]:
        """The meta rows and the decoded, validated field rows (:class:`StateFileError` when they do not fit)."""
        try:
            meta = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
            rows = dict(self._conn.execute("SELECT name, value FROM store_fields").fetchall())
        except sqlite3.DatabaseError as exc:
            raise self._unusable(str(exc)) from None
        if meta.get("schema", SCHEMA_VERSION) != SCHEMA_VERSION:
            raise self._unusable(f"schema version {meta['schema']!r}, this emulator reads {SCHEMA_VERSION!r}")
        values: dict[str, Any] = {}
        for name in store_field_names():
            if name not in rows:
                continue
            try:
                values[name] = json.loads(rows[name])
            except (TypeError, ValueError):
                raise self._unusable(f"field {name!r} is not JSON") from None
            problem = _shape_error(name, values[name])
            if problem is not None:
                raise self._unusable(problem)
        return meta, values

    def load(self, store: Store) -> bool:
        """Fill ``store`` from the file; ``False`` (store untouched) for a fresh data folder. Prints a notice when
        the seed file changed since the state was seeded (the saved state is kept)."""
        meta, values = self._read()
        if "seed" not in meta:
            return False
        for name, value in values.items():
            setattr(store, name, value)
            self._saved[name] = json.dumps(value, separators=(",", ":"), allow_nan=False)
        if meta["seed"] != self._seed:
            print(f"workos_emulator: the seed file changed since {self.path} was seeded; keeping the saved state "
                  f"(POST /_emulator/reset applies the new seed)", file=sys.stderr, flush=True)
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
        self._saved.update(changed)

    def seeded(self, store: Store) -> None:
        """Save ``store`` just filled from the seed, and record which seed (and schema) it came from."""
        self.save(store)
        with self._conn:
            self._conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [("seed", self._seed), ("schema", SCHEMA_VERSION)],
            )

    def load_or_seed(self, store: Store, seed: Callable[[Store], None]) -> None:
        """Load the saved state, else fill ``store`` with ``seed`` and save it."""
        if not self.load(store):
            seed(store)
            self.seeded(store)

    def close(self) -> None:
        """Close the SQLite connection."""
        self._conn.close()
