"""The metrics' Flask side: the request hooks that time every request, the session hooks that count committed
audit events, and the ``GET /metrics`` endpoint.

The counters themselves live in :mod:`~hatidata_auth.metrics` (no Flask), which the services and the WorkOS
boundary import.
"""

from __future__ import annotations

import hmac
import os
import time
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from . import metrics
from .extensions import db
from .models import AuditEvent, WebhookEvent
from .models.inbox import status_is
from .unit_of_work import AppSession

bp = Blueprint("metrics", __name__)


def instrument_auth_runtime(app: Flask) -> None:
    """Count lookups in the auth caches (the identity memo, verified tokens, unsealed cookies, session and key
    status, the shared cache)."""
    rt = app.extensions.get("hatidata_auth")
    if rt is None:
        return
    metrics.instrument_cache_get(rt.identities, "identities")
    metrics.instrument_cache_get(rt.verifier.cache, "tokens")
    metrics.instrument_cache_get(rt.cookies.unsealed, "cookies")
    metrics.instrument_cache_get(rt.introspector.bus.sessions, "sessions_local")
    metrics.instrument_cache_get(rt.introspector.bus.api_keys, "api_keys_local")
    if rt.introspector.shared_cache is not None:
        metrics.instrument_cache_get(rt.introspector.shared_cache, "shared")


def install_session_hooks() -> None:
    """Count the audit events of each committed transaction of the app's sessions (once per process)."""
    if getattr(install_session_hooks, "done", False):
        return

    @event.listens_for(AppSession, "after_flush")
    def _collect(session: Session, _ctx: Any) -> None:
        found = [(e.action, e.outcome, e.details) for e in session.new if isinstance(e, AuditEvent)]
        if found:
            session.info.setdefault(metrics.PENDING_AUDIT, []).extend(found)

    @event.listens_for(AppSession, "after_commit")
    def _count(session: Session) -> None:
        for action, outcome, details in session.info.pop(metrics.PENDING_AUDIT, ()):
            metrics.audit_committed(str(action), str(outcome), details if isinstance(details, dict) else None)

    @event.listens_for(AppSession, "after_rollback")
    def _discard(session: Session) -> None:
        session.info.pop(metrics.PENDING_AUDIT, None)

    install_session_hooks.done = True  # type: ignore[attr-defined]


def init_app(app: Flask) -> None:
    """Time every request by its URL rule and mount ``GET /metrics``."""
    install_session_hooks()
    app.register_blueprint(bp)
    instrument_auth_runtime(app)

    @app.before_request
    def _start_timer() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _observe(response: Response) -> Response:
        started = g.pop("metrics_started", None)
        if started is not None:
            rule = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
            elapsed = time.perf_counter() - started
            metrics.http_request(metrics.method_label(request.method), rule,
                                 metrics.status_label(response.status_code), elapsed)
        return response


def _inbox_backlog() -> GaugeMetricFamily:
    family = GaugeMetricFamily("hatidata_inbox_backlog", "Webhook events not applied yet (failed: kept for retry)",
                               labels=["status"])
    try:
        # One count per status, each named as a literal: each reads its partial index (models.inbox).
        statuses = ("failed", "received")
        counts = db.session.execute(select(*(select(func.count()).select_from(WebhookEvent).where(status_is(s))
                                             .scalar_subquery() for s in statuses))).one()
        for status, n in zip(statuses, counts, strict=True):
            family.add_metric([status], float(n))
    except Exception:  # noqa: BLE001 - metrics must answer while the database is down
        db.session.rollback()
    finally:
        db.session.remove()
    return family


class _Collected:
    def __init__(self, families: list[Any]) -> None:
        self.families = families

    def collect(self) -> list[Any]:
        return self.families


def render() -> bytes:
    """The metrics of this process (or of every worker in multi-process mode), plus the inbox backlog."""
    if os.environ.get(metrics.MULTIPROC_ENV):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        main = generate_latest(registry)
    else:
        main = generate_latest(REGISTRY)
    extra = CollectorRegistry()
    extra.register(_Collected([_inbox_backlog()]))
    return main + generate_latest(extra)


@bp.get("/metrics")
def metrics_view() -> Response:
    """Prometheus scrape endpoint; with ``HATIDATA_METRICS_TOKEN`` set it needs ``Authorization: Bearer``."""
    token = current_app.config.get("HATIDATA_METRICS_TOKEN")
    if token:
        presented = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(presented.encode(), str(token).encode()):
            return Response("unauthorized\n", status=401, mimetype="text/plain")
    return Response(render(), content_type=CONTENT_TYPE_LATEST)
