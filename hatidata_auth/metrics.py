"""Prometheus metrics: every metric object lives here, with small functions other modules call (no Flask: the
services and the WorkOS boundary import it; the request hooks and ``GET /metrics`` are in
:mod:`~hatidata_auth.metrics_views`).

``GET /metrics`` serves them in the Prometheus text format. Under gunicorn with several workers set
``PROMETHEUS_MULTIPROC_DIR`` to an empty, writable folder (wiped before the master starts; see
``config/gunicorn.conf.py``): every worker then writes its samples there and any worker's ``/metrics``
aggregates all of them.

What is measured, and where:

- requests and latency by endpoint template (``metrics_views.init_app``'s request hooks; the URL rule, never the
  raw path);
- logins (their failures one by one, with every other unauthenticated failure: :func:`security_event`),
  revocations and every audit action (a SQLAlchemy session hook counts the audit
  events of each *committed* transaction, so a rolled-back change is never counted);
- webhook events by type and outcome (:func:`webhook_event`, called by the webhook view);
- the appliers' batch sizes (:func:`inbox_batch`, ``hatidata_inbox_batch_events``);
- the inbox backlog (events ``failed``/``received``, read from the database at scrape time);
- cache lookups by cache and result (:func:`cache_lookup`; the hit ratio is ``hits / (hits + misses)``);
- WorkOS calls: latency and errors by method and path template (:class:`~hatidata_auth.workos.transport.
  InstrumentedBackend`, the SDK's HTTP backend built by :class:`~hatidata_auth.workos.WorkOSGateway`);
- audit streams: batches and lines by sink kind and outcome, and the lag of a confirmed batch
  (:func:`audit_stream`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

from prometheus_client import Counter, Histogram

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

_LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

HTTP_REQUESTS = Counter("hatidata_http_requests_total", "HTTP requests answered, by endpoint template",
                        ["method", "endpoint", "status"])
HTTP_LATENCY = Histogram("hatidata_http_request_duration_seconds", "HTTP request latency by endpoint template",
                         ["method", "endpoint"], buckets=_LATENCY_BUCKETS)
LOGINS = Counter("hatidata_logins_total", "Completed login attempts, by outcome", ["outcome"])
LOGIN_FAILURES = Counter("hatidata_login_failures_total", "Failed logins, by reason", ["reason"])
REVOCATIONS = Counter("hatidata_revocations_total", "Sessions and API keys revoked or suspended", ["kind"])
AUDIT_EVENTS = Counter("hatidata_audit_events_total", "Committed audit events, by action and outcome",
                       ["action", "outcome"])
SECURITY_EVENTS = Counter("hatidata_security_events_total",
                          "Unauthenticated failures (webhook_signature, login_failure, api_key), by kind and reason",
                          ["kind", "reason"])
WEBHOOK_EVENTS = Counter("hatidata_webhook_events_total", "WorkOS webhook events received, by type and outcome",
                         ["event_type", "outcome"])
CACHE_LOOKUPS = Counter("hatidata_cache_lookups_total", "Cache lookups, by cache and result (hit or miss)",
                        ["cache", "result"])
WORKOS_LATENCY = Histogram("hatidata_workos_request_duration_seconds", "WorkOS API call latency",
                           ["method", "path"], buckets=_LATENCY_BUCKETS)
WORKOS_ERRORS = Counter("hatidata_workos_errors_total",
                        "WorkOS API calls that failed (kind: connect, timeout, transport, http_4xx, http_5xx)",
                        ["method", "path", "kind"])

AUDIT_STREAM_EVENTS = Counter("hatidata_audit_stream_events_total",
                              "Audit stream lines (events and checkpoints) delivered or failed, by sink kind",
                              ["kind", "outcome"])
AUDIT_STREAM_DELIVERIES = Counter("hatidata_audit_stream_deliveries_total",
                                  "Audit stream batches, by sink kind and outcome (delivered, failed, dead_letter)",
                                  ["kind", "outcome"])
AUDIT_STREAM_LAG = Histogram("hatidata_audit_stream_lag_seconds",
                             "Age of the newest event of a confirmed batch when its sink confirmed it, by sink kind",
                             ["kind"], buckets=(0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 86400.0))
INBOX_BATCH = Histogram("hatidata_inbox_batch_events",
                        "Events per applier batch that took any, by thread (batch; revoking: the deprovisioning one)",
                        ["thread"], buckets=(1, 2, 3, 5, 8, 13, 20, 50, 100, 200, 500))
INBOX_GAVE_WAY = Counter("hatidata_inbox_gave_way_seconds_total",
                         "Seconds applier threads of web processes waited for a pause in the requests before a claim, "
                         "by thread (batch: the revoking one never waits)", ["thread"])
STREAM_KINDS = frozenset({"https", "splunk_hec", "datadog", "syslog_tls"})
STREAM_OUTCOMES = frozenset({"delivered", "failed", "dead_letter"})

_REVOKING_ACTIONS = {"session.revoked": "session", "api_key.revoked": "api_key", "api_key.suspended": "api_key"}

# --- functions other modules call ----------------------------------------------------------------------------


_SERIES: dict[tuple[Any, ...], Any] = {}


def _series(metric: Any, *values: str) -> Any:
    """*metric*'s series of the label *values* (in the metric's label order), looked up once per process:
    ``labels()`` costs about four times an increment and an observation together, and the hottest requests count
    several series (a cookie's three cache lookups). Every label value here comes from a bounded set (see
    :func:`method_label` and below): each series lives until the process ends anyway."""
    key = (metric, *values)
    series = _SERIES.get(key)
    if series is None:
        series = _SERIES.setdefault(key, metric.labels(*values))
    return series


def audit_stream(kind: str, outcome: str, lines: int, lag: float | None = None) -> None:
    """One audit stream batch: *lines* delivered or failed (labels: the kind and outcome only, never an
    organization or a sink id; unknown values collapse to ``other``)."""
    kind = kind if kind in STREAM_KINDS else "other"
    outcome = outcome if outcome in STREAM_OUTCOMES else "other"
    _series(AUDIT_STREAM_DELIVERIES, kind, outcome).inc()
    _series(AUDIT_STREAM_EVENTS, kind, "delivered" if outcome == "delivered" else "failed").inc(lines)
    if lag is not None:
        _series(AUDIT_STREAM_LAG, kind).observe(max(lag, 0.0))


def http_request(method: str, endpoint: str, status: str, seconds: float) -> None:
    """Count one answered request and observe its latency in *seconds*; *method* and *status* are labels
    (:func:`method_label`, :func:`status_label`), *endpoint* the URL rule."""
    _series(HTTP_REQUESTS, method, endpoint, status).inc()
    _series(HTTP_LATENCY, method, endpoint).observe(seconds)


def inbox_batch(events: int, *, revoking_only: bool = False) -> None:
    """One applier batch that claimed *events* events (its size: the fixed cost of a batch is shared by them)."""
    _series(INBOX_BATCH, "revoking" if revoking_only else "batch").observe(events)


def inbox_gave_way(seconds: float) -> None:
    """An applier thread waited *seconds* for a pause in its process's requests (``applier_pool.GiveWay``)."""
    _series(INBOX_GAVE_WAY, "batch").inc(seconds)


def webhook_event(event_type: str, outcome: str) -> None:
    """Count one webhook delivery (``applied``, ``ignored``, ``duplicate``, ``failed``, ``rejected`` ...)."""
    _series(WEBHOOK_EVENTS, event_type_label(event_type), _label(outcome)).inc()


def login(outcome: str, reason: str | None = None) -> None:
    """Count one login (``succeeded`` or ``failed``, with the failure's reason)."""
    _series(LOGINS, outcome).inc()
    if outcome != "succeeded":
        _series(LOGIN_FAILURES, _label(reason or "unknown")).inc()


def security_event(kind: str, reason: str) -> None:
    """Count one unauthenticated failure (every one; the audit log keeps only rate-limited summaries)."""
    _series(SECURITY_EVENTS, _label(kind), _label(reason)).inc()
    if kind == "login_failure":
        login("failed", reason)


def revocation(kind: str) -> None:
    """Count one revoked session or API key."""
    _series(REVOCATIONS, kind).inc()


def cache_lookup(cache: str, hit: bool) -> None:
    """Count one cache lookup."""
    _series(CACHE_LOOKUPS, cache, "hit" if hit else "miss").inc()


def audit_committed(action: str, outcome: str, details: dict[str, Any] | None) -> None:
    """Count one committed audit event, and the login / revocation it stands for."""
    _series(AUDIT_EVENTS, _label(action), _label(outcome)).inc()
    if action == "auth.login.succeeded":
        login("succeeded")
    # Failed logins are counted one by one by security_event: their audit rows are rate-limited summaries.
    kind = _REVOKING_ACTIONS.get(action)
    if kind:
        revocation(kind)


def _label(value: str | None, limit: int = 64) -> str:
    return (value or "unknown")[:limit]


# Every label value comes from a fixed set, whoever chose the input: a client's invented method, path or
# status must not add a series (each lives until the process ends).
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"})
_STATUSES = frozenset(str(int(code)) for code in HTTPStatus)


def method_label(method: str | None) -> str:
    """A standard HTTP method, else ``OTHER``."""
    return method if method in HTTP_METHODS else "OTHER"


def status_label(status: int | str) -> str:
    """A registered HTTP status code, else ``other``."""
    return str(status) if str(status) in _STATUSES else "other"


_EVENT_TYPES: set[str] = set()


def label_event_types(types: Iterable[str]) -> None:
    """Declare the event types worth their own label (the handler registry declares the types it applies)."""
    _EVENT_TYPES.update(types)


def event_type_label(event_type: str | None) -> str:
    """An event type we apply, else ``other`` (a signed event can name any type)."""
    return event_type if event_type in _EVENT_TYPES else "other"


# --- WorkOS calls -------------------------------------------------------------------------------------------

# The literal path segments of the WorkOS API (every ``path=`` word of the SDK); any other segment is an
# identifier, which may come from a caller (``/auth/login?organization_id=...``).
WORKOS_PATH_WORDS = frozenset((
    "accept", "actions", "agents", "api-key", "api_keys", "applications", "approve", "attempts",
    "audit_log_configuration", "audit_logs", "audit_logs_retention", "auth", "auth_factors", "authenticate",
    "authkit", "authkit_oauth_resources", "authorization", "authorize", "authorized_applications", "blueprints",
    "by_token", "challenge", "challenges", "check", "claims", "client", "client-credentials", "client_secrets",
    "complete", "confirm", "connect", "connected_accounts", "connections", "cors_origins", "credentials",
    "data-integrations", "data-key", "data_integration_configurations", "data_providers", "deactivate", "decrypt",
    "deny", "device", "directories", "directory_groups", "directory_users", "disable", "email_change",
    "email_verification", "enable", "enroll", "entries", "events", "expire", "exports", "external_id", "factors",
    "feature-flags", "finish", "generate_link", "groups", "identities", "instances", "invitations", "invite",
    "it_contacts", "jwks", "jwt_template", "keys", "kv", "lists", "logout", "magic_auth", "metadata", "name", "oauth2",
    "organization", "organization-memberships", "organization_domains", "organization_memberships", "organizations",
    "password_reset", "passwordless", "permissions", "platform", "portal", "profile", "radar", "radar_challenges",
    "reactivate", "redirect_uris", "registrations", "rekey", "resend", "resources", "revoke", "revoke_link",
    "role_assignments", "roles", "saml_idp_signing_certs", "saml_sp_encryption_certs", "saml_sp_signing_cert",
    "schemas", "send", "sessions", "sso", "sync", "targets", "teams", "token", "tokens", "user_management", "users",
    "v1", "validate", "validations", "vault", "verify", "versions", "waitlist_entries", "waitlists",
    "webhook_endpoints", "widgets",
))
MAX_PATH_SEGMENTS = 8


def path_template(url: str) -> str:
    """``/organizations/org_01H…`` -> ``/organizations/{id}``: WorkOS's own words kept, every other segment
    ``{id}``, at most :data:`MAX_PATH_SEGMENTS` segments (then ``…``), no query: a bounded set of labels."""
    path = url.split("://", 1)[-1]
    path = path[path.find("/"):] if "/" in path else "/"
    parts = path.split("?", 1)[0].strip("/").split("/")
    words = ["{id}" if part not in WORKOS_PATH_WORDS else part for part in parts if part]
    if len(words) > MAX_PATH_SEGMENTS:
        words = [*words[:MAX_PATH_SEGMENTS], "…"]
    return "/" + "/".join(words)


# --- caches -------------------------------------------------------------------------------------------------


def instrument_cache_get(owner: Any, name: str, attribute: str = "get") -> None:
    """Count hits and misses of ``owner.get`` (an in-process or shared cache) under *name*; idempotent."""
    original = getattr(owner, attribute)
    if getattr(original, "_hatidata_metrics", False):
        return
    # the two series looked up once: the hottest requests count three lookups each
    hits, misses = _series(CACHE_LOOKUPS, name, "hit"), _series(CACHE_LOOKUPS, name, "miss")

    def get(*args: Any, **kwargs: Any) -> Any:
        value = original(*args, **kwargs)
        (hits if value is not None and value != "__stale__" else misses).inc()
        return value

    get._hatidata_metrics = True  # type: ignore[attr-defined]
    setattr(owner, attribute, get)


# --- audit events, counted once committed --------------------------------------------------------------------

PENDING_AUDIT = "hatidata_metrics_audit"
"""The ``session.info`` key of the audit events a transaction wrote, counted once it commits."""


def audit_written(session: Any, events: Any) -> None:
    """Note audit events written without the ORM's flush (``services.audit``'s one-statement path); they are
    counted, like flushed ones, once the transaction commits."""
    found = [(e.action, e.outcome, e.details) for e in events]
    if found:
        session.info.setdefault(PENDING_AUDIT, []).extend(found)


def mark_process_dead(pid: int) -> None:
    """gunicorn ``child_exit`` hook: drop a dead worker's live gauges (multi-process mode)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
