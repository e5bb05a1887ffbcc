"""Unauthenticated requests cannot write without bound (issue #10, rule 5).

Every rejected webhook signature, failed login callback and failed API-key attempt is counted exactly in
Prometheus, and audited as at most one summary row per (kind, source organization or "unknown") per window.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections import Counter
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from hatidata_auth.models import AuditEvent
from hatidata_auth.services import security_events
from tests.support.dsync import sign

CONTROL = {chr(c) for c in [*range(32), *range(127, 160)]}
FLOOD = 3_000
"""Requests of the flood: far past the bound (kinds x organizations x windows), a third per source."""


def _counted(kind: str) -> float:
    total = 0.0
    for metric in REGISTRY.collect():
        if metric.name == "hatidata_security_events":
            total += sum(s.value for s in metric.samples
                         if s.name.endswith("_total") and s.labels.get("kind") == kind)
    return total


def _audit_rows(app: Flask) -> list[AuditEvent]:
    from hatidata_auth.extensions import db

    with app.app_context():
        rows = list(db.session.scalars(select(AuditEvent).order_by(AuditEvent.id)))
        db.session.expunge_all()
        db.session.remove()
    return rows


def _assert_clean_summary(row: AuditEvent) -> None:
    assert row.details["summary"] is True
    assert row.details["count"] >= 1
    assert 1 <= len(row.details["samples"]) <= security_events.MAX_SAMPLES
    for sample in row.details["samples"]:
        assert len(sample) <= security_events.SAMPLE_CHARS
        assert not CONTROL & set(sample)
    assert len(row.user_agent or "") <= security_events.SAMPLE_CHARS
    assert len(json.dumps(row.details)) < 1200  # a few hundred bytes, not kilobytes of attacker text


def _api_key() -> str:
    return "hd_live_" + uuid.uuid4().hex + uuid.uuid4().hex


def test_a_flood_of_unauthenticated_failures_writes_at_most_the_bound(app: Flask, client: FlaskClient) -> None:
    """FLOOD requests from three sources: every one counted, the audit log grows by kinds x orgs per window."""
    webhook_body = json.dumps({"id": "event_flood", "event": "dsync.user.created", "data": {}})
    # No NUL: the input limits refuse a NUL in a query value (422) before the callback; other control characters
    # and bidi overrides reach it and must be stripped from the samples.
    huge_error = "<script>" + "\x07\x1b[31m\u202e" * 100 + "z" * 3000
    sources = ("webhook_signature", "login_failure", "api_key")
    before = {kind: _counted(kind) for kind in sources}
    rows_before = len(_audit_rows(app))
    window = int(app.config["HATIDATA_SECURITY_SUMMARY_WINDOW"])
    started = time.time()
    statuses: Counter[tuple[str, int]] = Counter()
    for i in range(FLOOD):
        kind = sources[i % 3]
        agent = {"User-Agent": "flood\x07" + "u" * 4000}
        if kind == "webhook_signature":
            response = client.post("/webhooks/workos", data=webhook_body,
                                   headers={**agent, "WorkOS-Signature": sign("whsec_not_ours", webhook_body)})
        elif kind == "login_failure":
            response = client.get("/auth/callback", query_string={"error": f"{i}{huge_error}",
                                                                  "error_description": huge_error},
                                  headers=agent)
        else:
            # Each attempt from another address, as a botnet would: the per-address limiter never trips.
            response = client.get("/api/v1/me", headers={**agent, "Authorization": f"Bearer {_api_key()}"},
                                  environ_base={"REMOTE_ADDR": f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}"})
        statuses[(kind, response.status_code)] += 1
    windows = int(time.time()) // window - int(started) // window + 1
    per_source = {kind: len(range(n, FLOOD, 3)) for n, kind in enumerate(sources)}
    assert statuses == {("webhook_signature", 401): per_source["webhook_signature"],
                        ("login_failure", 400): per_source["login_failure"], ("api_key", 401): per_source["api_key"]}
    counted = {kind: _counted(kind) - before[kind] for kind in sources}
    assert counted == per_source
    assert sum(counted.values()) == FLOOD
    new_rows = _audit_rows(app)[rows_before:]
    bound = len(security_events.KINDS) * 1 * windows  # one source organization: "unknown"
    assert 1 <= len(new_rows) <= bound
    assert {r.action for r in new_rows} <= set(security_events.KINDS.values())
    for row in new_rows:
        _assert_clean_summary(row)


@pytest.mark.parametrize("query", [
    {"state": "not-a-signed-state", "code": "whatever"},
    {"code": "no-state-at-all"},
    {"error": "access_denied", "error_description": "line one\r\nInjected: header"},
])
def test_every_callback_failure_is_counted_and_summarized(app: Flask, client: FlaskClient,
                                                          query: dict[str, str]) -> None:
    before = _counted("login_failure")
    rows_before = len(_audit_rows(app))
    for _ in range(25):
        assert client.get("/auth/callback", query_string=query).status_code == 400
    assert _counted("login_failure") - before == 25
    rows = _audit_rows(app)[rows_before:]
    assert len(rows) == 1
    assert rows[0].action == "auth.login.failed"
    _assert_clean_summary(rows[0])


def test_failed_keys_of_a_known_organization_are_summarized_under_it(app: Flask) -> None:
    """A revoked key's attempts are keyed by its (trusted) organization; unknown keys by "unknown"."""
    from hatidata_auth.causes import Actor, Cause
    from hatidata_auth.extensions import db
    from hatidata_auth.services import api_keys as key_service
    from tests.api_support import make_tenant

    tenant = make_tenant(app, "Northwind")
    with app.app_context():
        created = key_service.create_key(db.session, organization_id=tenant.id,
                                         owner_user_id=tenant.users["developer"], name="soon revoked",
                                         scopes=["data:read"], cause=Cause.by(Actor.system("test")))
        db.session.commit()
        key_service.revoke_key(db.session, organization_id=tenant.id, key_id=created.key.id,
                               cause=Cause.by(Actor.system("test")))
        db.session.commit()
        db.session.remove()
    client = app.test_client()
    rows_before = len(_audit_rows(app))
    before = _counted("api_key")
    for i in range(12):
        secret = created.secret if i % 2 else _api_key()
        response = client.get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"},
                              environ_base={"REMOTE_ADDR": f"192.0.2.{i}"})
        assert response.status_code == 401
    assert _counted("api_key") - before == 12
    rows = [r for r in _audit_rows(app)[rows_before:] if r.action == "auth.api_key.rejected"]
    assert sorted(str(r.organization_id) for r in rows) == sorted([tenant.id, "None"])
    for row in rows:
        _assert_clean_summary(row)


_EXAMPLES = itertools.count()
EVENTS = st.lists(st.tuples(st.sampled_from(sorted(security_events.KINDS)),
                            st.sampled_from(["org_a", "org_b", None]),
                            st.integers(min_value=0, max_value=400),
                            st.text(max_size=600)),
                  min_size=1, max_size=60)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=EVENTS, window=st.sampled_from([1, 30, 60, 300]))
def test_rows_never_exceed_one_per_kind_organization_and_window(app: Flask, events: list[Any], window: int) -> None:
    """Property: for any arrival pattern, rows <= distinct (kind, org, window) buckets; counts add up; samples
    are short and clean."""
    from hatidata_auth.extensions import cache, db
    from hatidata_auth.models import Organization

    tag = uuid.uuid4().hex[:8]  # fresh organizations per example: no state shared with other examples
    with app.app_context():
        org_ids = {}
        for name in ("org_a", "org_b"):
            org = Organization(name=f"{name}-{tag}", domains=[])
            db.session.add(org)
            db.session.flush()
            org_ids[name] = org.id
        db.session.commit()
        backend = app.extensions["cache"][cache]
        try:
            base = 2_000_000_000 + next(_EXAMPLES) * 1_000_000  # every example in its own windows
            now = [float(base)]
            summaries = []
            ordered = sorted(events, key=lambda e: e[2])
            for kind, org, at, text in ordered:
                now[0] = float(base + at)
                summary = security_events.note(db.session, backend, kind=kind, reason="test", sample=text,
                                               organization_id=org_ids.get(org or ""), window=window,
                                               clock=lambda: now[0])
                db.session.commit()
                summaries.append(((kind, org), summary))
            written = [s for _, s in summaries if s is not None]
            buckets = {(k, o, (base + at) // window) for k, o, at, _ in ordered}
            assert len(written) <= len(buckets)
            assert len(written) >= len({(k, o) for k, o, _, _ in ordered})  # each key's first failure is recorded
            rows = db.session.scalar(select(func.count()).select_from(AuditEvent)
                                     .where(AuditEvent.organization_id.in_(org_ids.values())))
            assert rows == sum(1 for (_, org), s in summaries if s is not None and org is not None)
            for key in {k for k, _ in summaries}:
                history = [s for k, s in summaries if k == key]
                last = max(i for i, s in enumerate(history) if s is not None)
                # the summaries of a key account for every failure up to its last summary, each exactly once
                assert sum(s.count for s in history if s is not None) == last + 1
            for s in written:
                assert all(len(x) <= security_events.SAMPLE_CHARS and not CONTROL & set(x) for x in s.samples)
        finally:  # the unknown organization's counts are every example's: a failed one leaves none behind
            for kind in security_events.KINDS:
                for org in (*org_ids.values(), security_events.UNKNOWN_ORGANIZATION):
                    backend.delete(f"security:{kind}:{org}:pending")
        db.session.remove()
