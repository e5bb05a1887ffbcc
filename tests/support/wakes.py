"""Recording the applier wakes a webhook's acknowledgement makes (``inbox_runtime.acknowledged``), and the
``NOTIFY`` signals the inbox's writers send (PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from flask import Flask

from hatidata_auth import inbox_runtime
from hatidata_auth.causes import Actor, Cause
from hatidata_auth.extensions import db
from hatidata_auth.models.inbox import INBOX_CHANNEL
from hatidata_auth.services import inbox


@contextmanager
def inbox_listener(app: Flask) -> Iterator[psycopg.Connection[Any]]:
    """A connection of its own listening on the appliers' channel (``LISTEN``), as another process's appliers do;
    read what it heard with ``listener.notifies(timeout=...)``."""
    with app.app_context():
        dsn = inbox_runtime.listen_dsn(app)
    assert dsn is not None
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute(f"LISTEN {INBOX_CHANNEL}")
        yield listener


class Wakes:
    """Stands in for the app's applier pool (``inbox_runtime.EXTENSION``): records each wake's *revoking*."""

    def __init__(self, running: bool = False) -> None:
        self.running = running  # whether it stands for a process's started appliers (inbox_runtime.wakes_itself)
        self.calls: list[bool] = []

    def wake(self, revoking: bool = True) -> None:
        self.calls.append(revoking)


def acknowledge_recording_wakes(app: Flask, payload: dict[str, Any], *, running: bool = False) -> list[bool]:
    """Store *payload* as the webhook view does (``notify`` as a process running appliers if *running*) and
    acknowledge it; the wakes it made, in order."""
    wakes = Wakes(running)
    app.extensions[inbox_runtime.EXTENSION] = wakes
    try:
        with app.test_request_context("/webhooks/workos", method="POST"):
            assert inbox.store(db.session(), payload, notify=not running) == "received"
            inbox_runtime.acknowledged(app, payload, Cause.by(Actor.workos()))
            db.session.remove()
    finally:
        del app.extensions[inbox_runtime.EXTENSION]
    return wakes.calls
