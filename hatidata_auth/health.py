"""Liveness and readiness probes.

``/readyz`` is anonymous, so what it spends is bounded: the database and cache checks are local round trips, and
the WorkOS check (a call against the API key's rate limit, which sign-ins and refreshes share) runs at most once
per ``HATIDATA_READINESS_CACHE_SECONDS`` (default 5; 0 checks every time): its outcome is kept in the shared cache
for every worker, and in each process for when the shared cache is down.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from .config import DEFAULTS
from .extensions import cache, db, never_rate_limited
from .random_ids import uuid4_hex
from .workos import WorkOSFailure

bp = Blueprint("health", __name__)

OK = "ok"
# How long a worker that lost the claim waits for the winner's WorkOS outcome (the check's own timeout is 3 s).
CLAIM_WAIT_SECONDS = 3.5
_POLL_SECONDS = 0.05


SERVICE = "hatidata-auth"
"""``/healthz``'s ``service``: what tells this app from another service answering ``/healthz`` at a URL
(``cli_webhook_secret``'s probe)."""


@bp.get("/healthz")
@never_rate_limited
def healthz() -> Response:
    """The process is up: ``{"status": "ok", "service": SERVICE}``."""
    return jsonify(status="ok", service=SERVICE)


def _check_database() -> None:
    db.session.execute(text("SELECT 1"))


class CacheNotKept(Exception):
    """The cache answered but did not keep a value."""


def _check_cache() -> None:
    key = f"readyz:{uuid4_hex()}"
    if not cache.set(key, "1", timeout=10) or cache.get(key) != "1":
        raise CacheNotKept("cache did not keep a value")
    cache.delete(key)


def _check_workos() -> None:
    # The answer names our WorkOSFailure subclass, never an SDK class.
    current_app.extensions["hatidata_workos"].ping(timeout=3)


class CachedCheck:
    """A check whose outcome (``"ok"`` or the class name of one of *errors*, the failures that mean "not
    ready") is reused for *interval* seconds: by this process (*clock*: monotonic seconds) and, through *shared*
    (a Flask-Caching cache) under *key*, by every worker; a worker claims the run with ``add`` so that one call
    is made per interval. Raises only what is not one of *errors* (a bug)."""

    def __init__(self, check: Callable[[], None], *, interval: float, key: str,
                 clock: Callable[[], float] = time.monotonic,
                 errors: tuple[type[Exception], ...] = (WorkOSFailure,)) -> None:
        self.check, self.interval, self.key, self.clock, self.errors = check, interval, key, clock, errors
        self._lock = threading.Lock()
        self._kept: tuple[float, str] | None = None

    def outcome(self, shared: Any) -> str:
        """``"ok"`` or the failure's class name, from a run at most *interval* seconds old."""
        if self.interval <= 0:
            return self._run()
        with self._lock:  # the threads of one worker wait for one run
            now = self.clock()
            if self._kept is not None and now - self._kept[0] < self.interval:
                return self._kept[1]
            found = self._shared_get(shared)
            if found is None:
                found = self._run() if self._claim(shared) else self._await(shared)
                self._shared_set(shared, found)
            self._kept = (now, found)
            return found

    def _run(self) -> str:
        try:
            self.check()
        except self.errors as exc:
            return type(exc).__name__
        return OK

    def _claim(self, shared: Any) -> bool:
        try:
            return bool(shared.add(f"{self.key}:claim", "1", timeout=max(1, int(self.interval))))
        except Exception:  # noqa: BLE001 - the shared cache is down: this process checks for itself
            return True

    def _await(self, shared: Any) -> str:
        deadline = time.monotonic() + CLAIM_WAIT_SECONDS
        while time.monotonic() < deadline:
            time.sleep(_POLL_SECONDS)
            found = self._shared_get(shared)
            if found is not None:
                return found
        return self._run()  # the claimant died or was slower than its own timeout

    def _shared_get(self, shared: Any) -> str | None:
        try:
            found = shared.get(self.key)
        except Exception:  # noqa: BLE001 - the shared cache is down
            return None
        return found if isinstance(found, str) else None

    def _shared_set(self, shared: Any, found: str) -> None:
        with contextlib.suppress(Exception):  # the shared cache is down: this process keeps it alone
            shared.set(self.key, found, timeout=max(1, int(self.interval)))


def _workos_check(app: Flask) -> CachedCheck:
    found = app.extensions.get("hatidata_readiness_workos")
    if found is None:
        target = hashlib.sha256(str(app.config.get("WORKOS_BASE_URL")).encode()).hexdigest()[:16]
        setting = "HATIDATA_READINESS_CACHE_SECONDS"
        found = CachedCheck(_check_workos, interval=float(app.config.get(setting, DEFAULTS[setting])),
                            key=f"readyz:workos:{target}")
        app.extensions["hatidata_readiness_workos"] = found
    return found


# Each local check with the failures that mean its part is not ready (anything else is a bug: a 500).
CHECKS: dict[str, tuple[Callable[[], None], tuple[type[Exception], ...]]] = {
    "database": (_check_database, (SQLAlchemyError,)),
    "cache": (_check_cache, (RedisError, CacheNotKept)),
}


@bp.get("/readyz")
@never_rate_limited
def readyz() -> tuple[Response, int]:
    """Database, cache and WorkOS are reachable; otherwise 503 naming what failed."""
    results: dict[str, Any] = {}
    failed: list[str] = []
    for name, (check, errors) in CHECKS.items():
        try:
            check()
        except errors as exc:
            results[name] = {"ok": False, "error": type(exc).__name__}
            failed.append(name)
            if name == "database":
                db.session.rollback()
        else:
            results[name] = {"ok": True}
    db.session.remove()
    workos = _workos_check(current_app._get_current_object()).outcome(cache)  # type: ignore[attr-defined]
    results["workos"] = {"ok": True} if workos == OK else {"ok": False, "error": workos}
    if workos != OK:
        failed.append("workos")
    if failed:
        body = {"status": "unavailable", "failed": failed, "checks": results,
                "error": {"code": "not_ready", "message": f"not ready: {', '.join(failed)} unreachable",
                          "details": {"failed": failed}}}
        return jsonify(body), 503
    return jsonify(status="ready", checks=results), 200
