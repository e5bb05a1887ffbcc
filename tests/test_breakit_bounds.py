"""Break-it review (issue #10 rule 5): an unauthenticated request may cost CPU, never unbounded storage.

The request metrics are labelled with ``request.method`` as the client sent it. HTTP allows any token as a
method (gunicorn accepts upper-case tokens of 3-20 characters): each new one, from anyone, on any URL, adds
label series to ``hatidata_http_requests_total`` and the latency histogram that live until the process ends.
``/readyz`` (anonymous by design) calls WorkOS on every request: anyone can spend the API key's WorkOS rate
limit, which sign-ins, refreshes and revocations share.
"""

from __future__ import annotations

import re
import uuid

from flask import Flask
from flask.testing import FlaskClient

SERIES = re.compile(r'^hatidata_http_requests_total\{[^}]*\}', re.MULTILINE)


def test_client_chosen_http_methods_do_not_grow_the_metrics(app: Flask, client: FlaskClient) -> None:
    before = set(SERIES.findall(client.get("/metrics").get_data(as_text=True)))
    for _ in range(40):
        method = "X" + uuid.uuid4().hex[:12].upper()
        response = client.open("/healthz", method=method)
        assert 400 <= response.status_code < 500
    after = set(SERIES.findall(client.get("/metrics").get_data(as_text=True)))
    grown = after - before
    # Known methods and statuses are a small fixed set; 40 invented methods must not add 40 series.
    assert len(grown) < 10, sorted(grown)[:5]


WORKOS_CALLS = re.compile(r'^hatidata_workos_request_duration_seconds_count\{[^}]*\} ([0-9.e+]+)$', re.MULTILINE)


def _workos_calls(client: FlaskClient) -> float:
    return sum(float(v) for v in WORKOS_CALLS.findall(client.get("/metrics").get_data(as_text=True)))


def test_anonymous_readiness_probes_do_not_each_spend_a_workos_call(app: Flask, client: FlaskClient) -> None:
    # Every WorkOS call spends the one API key's rate limit that sign-ins and refreshes need: an anonymous
    # caller looping on /readyz must not be able to spend it (the threat model: CPU, never our quotas).
    before = _workos_calls(client)
    for _ in range(20):
        assert client.get("/readyz").status_code in (200, 503)
    spent = _workos_calls(client) - before
    assert spent <= 2, f"{spent:.0f} WorkOS calls for 20 anonymous /readyz requests"
