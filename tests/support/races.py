"""Two transactions racing on PostgreSQL: the first held open while the second runs in another connection."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from hatidata_auth.unit_of_work import INVALIDATOR, AppSession

HOLD_SECONDS = 0.4


def race(app: Any, first: Callable[[AppSession], object], second: Callable[[AppSession], object]) -> list[Any]:
    """Run *first*, hold its transaction open while *second* runs in another connection; commit both.

    Returns what either step raised (the caller asserts on it), in the order raised."""
    from hatidata_auth.extensions import db

    held, errors = threading.Event(), []

    def run(step: Callable[[AppSession], object], hold: bool) -> None:
        try:
            with app.app_context(), AppSession(db.engine, invalidator=app.extensions[INVALIDATOR]) as session:
                step(session)
                if hold:
                    held.set()
                    time.sleep(HOLD_SECONDS)
                session.commit()
        except BaseException as exc:  # noqa: BLE001 - the caller inspects what a step raised
            errors.append(exc)
            held.set()

    a = threading.Thread(target=run, args=(first, True))
    a.start()
    assert held.wait(10)
    b = threading.Thread(target=run, args=(second, False))
    b.start()
    a.join(10)
    b.join(10)
    return errors
