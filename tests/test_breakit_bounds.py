"""Break-it review (issue #10 rule 5): an unauthenticated request may cost CPU, never unbounded storage.

The request metrics are labelled with ``request.method`` as the client sent it. HTTP allows any token as a
method (gunicorn accepts upper-case tokens of 3-20 characters): each new one, from anyone, on any URL, adds
label series to ``hatidata_http_requests_total`` and the latency histogram that live until the process ends.
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
