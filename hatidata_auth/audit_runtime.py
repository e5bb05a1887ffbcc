"""The audit worker of one app process: signs checkpoints and runs export jobs in a background thread, like the
inbox appliers (started with the first request or gunicorn's ``post_worker_init``; never under ``TESTING``
unless ``HATIDATA_AUDIT_WORKER`` says so; ``hatidata audit work`` runs the same pass from the command line).

Settings: ``HATIDATA_AUDIT_SIGNING_KEY``, ``HATIDATA_AUDIT_CHECKPOINT_EVERY``, ``HATIDATA_AUDIT_CHECKPOINT_INTERVAL``,
``HATIDATA_AUDIT_EXPORT_DIR``, ``HATIDATA_AUDIT_EXPORT_RETENTION``, ``HATIDATA_AUDIT_EXPORT_MAX_JOBS``,
``HATIDATA_AUDIT_EXPORT_LEASE``, ``HATIDATA_AUDIT_WORKER``, the ``HATIDATA_AUDIT_STREAM*`` settings of the sinks
(:func:`stream_policy`; docs/audit.md).
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from flask import Flask

from .config import DEFAULTS
from .extensions import db
from .models import AuditExportJob
from .services import audit_checkpoints, audit_exports, audit_sinks
from .services.audit_signing import Signer, load_signer

log = logging.getLogger(__name__)

EXTENSION = "hatidata_audit_worker"
SIGNER = "hatidata_audit_signer"


def setting(app: Flask, key: str) -> Any:
    value = app.config.get(key)
    return DEFAULTS[key] if value is None else value


def signer(app: Flask) -> Signer | None:
    """The deployment's signing key (``None``: none configured, no checkpoints)."""
    if SIGNER not in app.extensions:
        app.extensions[SIGNER] = load_signer(app.config.get("HATIDATA_AUDIT_SIGNING_KEY"))
    return app.extensions[SIGNER]


def export_dir(app: Flask) -> Path:
    """Where export jobs write their files (``HATIDATA_AUDIT_EXPORT_DIR``, default ``instance/audit-exports``)."""
    configured = app.config.get("HATIDATA_AUDIT_EXPORT_DIR")
    return Path(configured) if configured else Path(app.instance_path) / "audit-exports"


def stream_policy(app: Flask) -> audit_sinks.Policy:
    """How this app delivers audit streams (``HATIDATA_AUDIT_STREAM_*``)."""
    return audit_sinks.Policy(
        batch=max(1, int(setting(app, "HATIDATA_AUDIT_STREAM_BATCH"))),
        max_attempts=max(1, int(setting(app, "HATIDATA_AUDIT_STREAM_MAX_ATTEMPTS"))),
        backoff=float(setting(app, "HATIDATA_AUDIT_STREAM_BACKOFF")),
        backoff_max=float(setting(app, "HATIDATA_AUDIT_STREAM_BACKOFF_MAX")),
        timeout=float(setting(app, "HATIDATA_AUDIT_STREAM_TIMEOUT")),
        lease=float(setting(app, "HATIDATA_AUDIT_STREAM_LEASE")),
        allow_loopback=bool(setting(app, "HATIDATA_AUDIT_STREAM_ALLOW_LOOPBACK_HTTP")),
        ca_bundle=app.config.get("HATIDATA_AUDIT_STREAM_CA_BUNDLE") or None)


def seal_key(app: Flask) -> str:
    """The key sinks' secrets are sealed with (derived from ``HATIDATA_COOKIE_KEY``)."""
    return str(app.config["HATIDATA_COOKIE_KEY"])


def run_once(app: Flask, *, now: datetime | None = None) -> dict[str, int]:
    """One pass: due checkpoints of every chain, then every due audit stream (its batches after its cursor, with
    the checkpoints just signed), then every export job waiting or orphaned (running past its lease: its worker
    died), each after a checkpoint of its organization's head so its trailer carries a signature, then expired
    files. *now* (default the clock) is the pass's time. Returns what it did. A sink's failure fails that sink
    only (``audit_sinks.run``); anything else a pass raises ends the pass (the worker's loop logs it and goes on).
    """
    every = int(setting(app, "HATIDATA_AUDIT_CHECKPOINT_EVERY"))
    interval = float(setting(app, "HATIDATA_AUDIT_CHECKPOINT_INTERVAL"))
    key = signer(app)
    with app.app_context():
        try:
            return _pass(app, key, every=every, interval=interval, now=now)
        finally:
            db.session.remove()


def _pass(app: Flask, key: Signer | None, *, every: int, interval: float, now: datetime | None) -> dict[str, int]:
    session = db.session()
    trusted = app.config.get("HATIDATA_AUDIT_TRUSTED_KEYS")
    made = audit_checkpoints.run(session, key, every=every, interval=interval, now=now, previous=trusted)
    streamed = sum(r.delivered for r in audit_sinks.run(session, seal_key=seal_key(app),
                                                        policy=stream_policy(app), now=now))
    jobs = 0
    for job_id in audit_exports.active_jobs(session, now=now):
        job = session.get(AuditExportJob, job_id)
        if key is not None and job is not None:
            made += len(audit_checkpoints.advance(session, job.organization_id, key, every=every, interval=0,
                                                  now=now, previous=trusted))
            session.commit()
        if audit_exports.run_job(session, job_id, export_dir(app),
                                 retention=int(setting(app, "HATIDATA_AUDIT_EXPORT_RETENTION")),
                                 lease=float(setting(app, "HATIDATA_AUDIT_EXPORT_LEASE")), now=now):
            jobs += 1
    expired = audit_exports.expire(session, export_dir(app), now=now)
    return {"checkpoints": made, "streamed": streamed, "jobs": jobs, "expired": expired}


class AuditWorker:
    """A daemon thread calling :func:`run_once` every few seconds, or at once when woken."""

    def __init__(self, app: Flask, period: float) -> None:
        self.app, self.period = app, period
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="hatidata-audit-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                run_once(self.app)
            except Exception:  # the worker serves every organization: no pass may end it
                log.warning("audit worker pass failed; retrying", exc_info=True)
            self._wake.wait(self.period)
            self._wake.clear()


def init_app(app: Flask) -> None:
    """Load the signing key (a malformed one stops start-up) and give *app* its worker when configured."""
    signer(app)
    configured = app.config.get("HATIDATA_AUDIT_WORKER")
    enabled = bool(int(configured)) if configured is not None else not app.config.get("TESTING")
    if not enabled:
        return
    period = min(5.0, float(setting(app, "HATIDATA_AUDIT_CHECKPOINT_INTERVAL")))
    worker = AuditWorker(app, period)
    app.extensions[EXTENSION] = worker

    @app.before_request
    def _start_audit_worker() -> None:
        if not worker.running:
            worker.start()


def wake(app: Flask) -> None:
    """An export job was queued: run it now in this process (others poll)."""
    worker = app.extensions.get(EXTENSION)
    if worker is not None:
        worker.wake()


def start(app: Any) -> None:
    """Start *app*'s audit worker now if it has one (gunicorn's ``post_worker_init``)."""
    worker = getattr(app, "extensions", {}).get(EXTENSION)
    if worker is not None:
        worker.start()


def stop(app: Any) -> None:
    """Stop *app*'s audit worker (a pass in progress finishes)."""
    worker = getattr(app, "extensions", {}).get(EXTENSION)
    if worker is not None:
        worker.stop()
