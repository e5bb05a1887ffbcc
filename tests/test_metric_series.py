"""The counting functions of ``hatidata_auth.metrics`` look each labelled series up once per process
(``metrics._series``): every call still lands on exactly the series ``labels()`` names, once, for every function
and label set, and a second call reuses it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hatidata_auth import metrics

# (call, metric name as exported, labels the call must count under, amount)
CASES: list[tuple[Callable[[], None], str, dict[str, str], float]] = [
    (lambda: metrics.cache_lookup("session_status", True), "hatidata_cache_lookups_total",
     {"cache": "session_status", "result": "hit"}, 1),
    (lambda: metrics.cache_lookup("session_status", False), "hatidata_cache_lookups_total",
     {"cache": "session_status", "result": "miss"}, 1),
    (lambda: metrics.webhook_event("dsync.user.created", "received"), "hatidata_webhook_events_total",
     {"event_type": "dsync.user.created", "outcome": "received"}, 1),
    (lambda: metrics.webhook_event("made.up.type", "duplicate"), "hatidata_webhook_events_total",
     {"event_type": "other", "outcome": "duplicate"}, 1),
    (lambda: metrics.login("succeeded"), "hatidata_logins_total", {"outcome": "succeeded"}, 1),
    (lambda: metrics.security_event("api_key", "invalid_key"), "hatidata_security_events_total",
     {"kind": "api_key", "reason": "invalid_key"}, 1),
    (lambda: metrics.security_event("login_failure", "state_mismatch"), "hatidata_login_failures_total",
     {"reason": "state_mismatch"}, 1),
    (lambda: metrics.revocation("session"), "hatidata_revocations_total", {"kind": "session"}, 1),
    (lambda: metrics.inbox_batch(7), "hatidata_inbox_batch_events_sum", {"thread": "batch"}, 7),
    (lambda: metrics.inbox_batch(3, revoking_only=True), "hatidata_inbox_batch_events_sum",
     {"thread": "revoking"}, 3),
    (lambda: metrics.http_request("GET", "/api/v1/me", "200", 0.25), "hatidata_http_requests_total",
     {"method": "GET", "endpoint": "/api/v1/me", "status": "200"}, 1),
    (lambda: metrics.http_request("GET", "/api/v1/me", "200", 0.25), "hatidata_http_request_duration_seconds_sum",
     {"method": "GET", "endpoint": "/api/v1/me"}, 0.25),
    (lambda: metrics.audit_stream("splunk_hec", "failed", 5), "hatidata_audit_stream_events_total",
     {"kind": "splunk_hec", "outcome": "failed"}, 5),
    (lambda: metrics.audit_stream("https", "delivered", 2, lag=1.5), "hatidata_audit_stream_lag_seconds_sum",
     {"kind": "https"}, 1.5),
]


METRICS = {metric._name: metric for metric in (  # by exported name, to find each case's metric
    metrics.CACHE_LOOKUPS, metrics.WEBHOOK_EVENTS, metrics.LOGINS, metrics.LOGIN_FAILURES, metrics.SECURITY_EVENTS,
    metrics.REVOCATIONS, metrics.INBOX_BATCH, metrics.HTTP_REQUESTS, metrics.HTTP_LATENCY,
    metrics.AUDIT_STREAM_EVENTS, metrics.AUDIT_STREAM_LAG)}


def _value(name: str, labels: dict[str, str]) -> float:
    """The sample *name* with *labels*, read from its own metric (``REGISTRY.get_sample_value`` runs every
    collector, the inbox backlog's database query included: slow, and a Hypothesis deadline missed under load)."""
    metric = next(metric for prefix, metric in METRICS.items() if name.startswith(prefix))
    return sum(sample.value for family in metric.collect() for sample in family.samples
               if sample.name == name and sample.labels == labels)


@pytest.mark.parametrize(("call", "name", "labels", "amount"), CASES, ids=[f"{c[1]}{sorted(c[2].values())}"
                                                                           for c in CASES])
def test_each_call_counts_once_on_the_series_labels_names(call: Callable[[], None], name: str,
                                                          labels: dict[str, str], amount: float) -> None:
    before = _value(name, labels)
    call()
    call()
    assert _value(name, labels) == pytest.approx(before + 2 * amount)


@settings(deadline=None)  # a shared machine: the bound checked is the counts, not the time
@given(st.lists(st.tuples(st.sampled_from(["session_status", "verified_token", "unsealed_cookie"]), st.booleans()),
                max_size=30))
def test_lookups_count_as_labels_would(lookups: list[tuple[str, bool]]) -> None:
    def labels(cache: str, hit: bool) -> dict[str, str]:
        return {"cache": cache, "result": "hit" if hit else "miss"}

    before = {key: _value("hatidata_cache_lookups_total", labels(*key)) for key in set(lookups)}
    for cache, hit in lookups:
        metrics.cache_lookup(cache, hit)
    for key, value in before.items():
        assert _value("hatidata_cache_lookups_total", labels(*key)) == value + lookups.count(key)
