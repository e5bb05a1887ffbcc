"""What the app sends to its database, as tests count it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask
from sqlalchemy import event


@contextmanager
def sent_statements(app: Flask, keep: Callable[[str], bool]) -> Iterator[list[str]]:
    """Every statement the app's engine sends while the block runs that *keep* accepts (as sent), in order."""
    from hatidata_auth.extensions import db

    found: list[str] = []
    with app.app_context():
        engine = db.engine

    def note(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if keep(statement):
            found.append(statement)

    event.listen(engine, "before_cursor_execute", note)
    try:
        yield found
    finally:
        event.remove(engine, "before_cursor_execute", note)
