"""OpenTelemetry traces (issue #17, item 4): with the in-memory exporter, one trace runs from a webhook's arrival
to its application by an applier thread; requests carry the request id; WorkOS calls are client spans without
secrets; off by default, nothing is instrumented and nothing recorded."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import select

from hatidata_auth import inbox_runtime, tracing
from hatidata_auth.models import WebhookEvent
from tests.auth_support import authorize, callback_path, login, start_login
from tests.conftest import TEST_REDIS_URL
from tests.support.dsync import post_event
from tests.test_fanout import CHUNK, MEMBERS, _ack, _event, _group, fanco  # noqa: F401 - fanco is a fixture

EXPORTER = InMemorySpanExporter()


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    EXPORTER.clear()
    return EXPORTER


@pytest.fixture
def app_config(app_config: dict[str, Any], exporter: InMemorySpanExporter) -> dict[str, Any]:
    """The ``app`` of this module is traced, to the in-memory exporter."""
    return {**app_config, "HATIDATA_OTEL_ENABLED": True, "HATIDATA_OTEL_SPAN_EXPORTER": exporter,
            "HATIDATA_FANOUT_CHUNK": CHUNK}


def _membership_event(workos_client: Any, org_id: str) -> dict[str, Any]:
    """An ``organization_membership.created`` of a new WorkOS user in an organization we have not mirrored: its
    application asks WorkOS for the organization and the user."""
    from workos.organization_membership import RoleSingle

    from workos_emulator.idp import role_for_groups

    user = workos_client.user_management.create_user(email=f"traced.{uuid.uuid4().hex[:8]}@initech.test")
    om = workos_client.organization_membership.create_organization_membership(
        user_id=user.id, organization_id=org_id, role=RoleSingle(role_slug=role_for_groups(["Everyone"])))
    at = "2031-01-01T00:00:00.000Z"
    return {"id": f"event_{uuid.uuid4().hex[:24].upper()}", "event": "organization_membership.created",
            "created_at": at,
            "data": {"object": "organization_membership", "id": om.id, "user_id": user.id, "organization_id": org_id,
                     "status": "active", "directory_managed": False, "role": {"slug": om.role.slug},
                     "roles": [{"slug": om.role.slug}], "custom_attributes": {}, "created_at": at,
                     "updated_at": at}}


def _initech(workos_client: Any) -> str:
    orgs = workos_client.organizations.list_organizations(limit=100).data
    return next(o.id for o in orgs if any(d.domain == "initech.test" for d in o.domains))


def _applier_batch(app: Flask) -> int:
    """One batch as an applier thread runs it (:func:`inbox_runtime.run_batch`), in another thread."""
    claimed: list[int] = []
    thread = threading.Thread(target=lambda: claimed.append(inbox_runtime.run_batch(app)))
    thread.start()
    thread.join(30)
    return claimed[0]


def _descends(span: ReadableSpan, ancestor: ReadableSpan, spans: Iterable[ReadableSpan]) -> bool:
    by_id = {s.context.span_id: s for s in spans}
    current: ReadableSpan | None = span
    while current is not None and current.parent is not None:
        if current.parent.span_id == ancestor.context.span_id:
            return True
        current = by_id.get(current.parent.span_id)
    return False


def _secrets(app: Flask) -> list[str]:
    return [str(app.config["WORKOS_API_KEY"]), str(app.config["WORKOS_WEBHOOK_SECRET"]), "Bearer "]


def _assert_no_secret(spans: Iterable[ReadableSpan], secrets: list[str]) -> None:
    for span in spans:
        for key, value in (span.attributes or {}).items():
            text = str(value)
            assert not any(secret in text for secret in secrets), (span.name, key)
            assert "authorization" not in key.lower(), (span.name, key)


def test_one_trace_runs_from_a_webhooks_arrival_to_its_application_by_an_applier(
        app: Flask, exporter: InMemorySpanExporter) -> None:
    workos_client = app.extensions["hatidata_workos"].client
    payload = _membership_event(workos_client, _initech(workos_client))
    exporter.clear()

    answer = post_event(app.test_client(), app, payload, drain=False)
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["status"] == "received"
    assert _applier_batch(app) == 1
    spans = exporter.get_finished_spans()

    request_span = next(s for s in spans if s.kind == SpanKind.SERVER)
    assert request_span.name == "POST /webhooks/workos"
    assert request_span.attributes["hatidata.request_id"] == answer.headers["X-Request-ID"]
    apply_span = next(s for s in spans if s.name == "inbox apply organization_membership.created")
    assert apply_span.attributes["hatidata.event_id"] == payload["id"]
    trace_id = request_span.context.trace_id
    assert {s.context.trace_id for s in spans} == {trace_id}  # one trace, nothing outside it
    assert _descends(apply_span, request_span, spans)
    workos_calls = [s for s in spans if s.kind == SpanKind.CLIENT and s.name.startswith("WorkOS ")]
    templates = {s.attributes["url.template"] for s in workos_calls}
    assert templates >= {"/organizations/{id}", "/user_management/users/{id}"}
    assert all(_descends(s, apply_span, spans) for s in workos_calls)
    assert all(s.attributes["http.response.status_code"] == 200 for s in workos_calls)
    sql = [s for s in spans if s.attributes and "db.statement" in s.attributes]
    assert any(_descends(s, request_span, spans) for s in sql)
    assert any(_descends(s, apply_span, spans) for s in sql)
    _assert_no_secret(spans, _secrets(app))
    with app.app_context():
        from hatidata_auth.extensions import db

        row = db.session.scalar(select(WebhookEvent).where(WebhookEvent.event_id == payload["id"]))
        assert row is not None
        assert row.status == "applied"
        assert row.trace_context
        assert row.trace_context["traceparent"].split("-")[1] == f"{trace_id:032x}"


def test_an_event_applied_in_the_acknowledging_request_is_traced_inside_it(
        app: Flask, exporter: InMemorySpanExporter) -> None:
    workos_client = app.extensions["hatidata_workos"].client
    payload = _membership_event(workos_client, _initech(workos_client))
    payload["event"] = "organization_membership.updated"  # takes access away: applied before the answer
    payload["data"]["status"] = "inactive"
    exporter.clear()

    assert post_event(app.test_client(), app, payload, drain=False).status_code == 200
    spans = exporter.get_finished_spans()

    request_span = next(s for s in spans if s.kind == SpanKind.SERVER)
    applied = next(s for s in spans if s.name == "inbox apply organization_membership.updated")
    assert _descends(applied, request_span, spans)
    assert applied.end_time is not None
    assert request_span.end_time is not None
    assert applied.end_time <= request_span.end_time


@pytest.mark.usefixtures("fanco")
def test_fan_out_jobs_continue_the_trace_of_the_event_that_queued_them(app: Flask,
                                                                       exporter: InMemorySpanExporter) -> None:
    from hatidata_auth.services.fanout_jobs import JOB_TYPE

    exporter.clear()
    _ack(app.test_client(), app, _event("dsync.group.updated", _group("Fan Renamed")))
    while _applier_batch(app):
        pass
    spans = exporter.get_finished_spans()

    request_span = next(s for s in spans if s.kind == SpanKind.SERVER)
    rename = next(s for s in spans if s.name == "inbox apply dsync.group.updated")
    jobs = [s for s in spans if s.name == f"inbox apply {JOB_TYPE}"]
    assert len(jobs) == -(-MEMBERS // CHUNK)
    assert {s.context.trace_id for s in spans} == {request_span.context.trace_id}
    assert _descends(rename, request_span, spans)
    assert all(_descends(job, rename, spans) for job in jobs)  # each chunk queued by the previous one


def test_a_workos_call_in_a_request_is_a_child_span_without_secrets(
        app: Flask, exporter: InMemorySpanExporter) -> None:
    client = app.test_client()
    exporter.clear()
    location = authorize(start_login(client, email="dev@acme.test"))
    query = parse_qs(urlsplit(location).query)
    assert client.get(callback_path(location)).status_code == 302
    assert client.get("/api/v1/me").status_code == 200
    spans = exporter.get_finished_spans()

    callback = next(s for s in spans if s.kind == SpanKind.SERVER and s.name.startswith("GET /auth/callback"))
    assert callback.attributes["hatidata.request_id"]
    exchange = [s for s in spans if s.name == "WorkOS POST /user_management/authenticate"]
    assert exchange
    assert all(_descends(s, callback, spans) for s in exchange)
    for span in (s for s in spans if s.kind == SpanKind.CLIENT and s.name.startswith("WorkOS ")):
        assert "?" not in span.attributes["url.template"]
        assert "code" not in span.attributes["url.template"]
    # The callback's code and the session's tokens appear in no attribute (the request URL's query is WorkOS's
    # one-time code: the Flask span keeps only the route template as its name).
    me = next(s for s in spans if s.kind == SpanKind.SERVER and s.name == "GET /api/v1/me")
    assert me.attributes["hatidata.request_id"] != callback.attributes["hatidata.request_id"]
    cookie = client.get_cookie(app.config["HATIDATA_COOKIE_NAME"])
    assert cookie is not None
    secrets = [*_secrets(app), cookie.value, query["code"][0], query["state"][0]]
    _assert_no_secret(spans, secrets)
    redis_spans = [s for s in spans if (s.attributes or {}).get("db.system") == "redis"]
    assert bool(redis_spans) == bool(TEST_REDIS_URL)  # the cache's Redis, when the cache is Redis


def test_traces_are_off_by_default_nothing_instrumented_and_nothing_recorded(
        app_config: dict[str, Any], exporter: InMemorySpanExporter, workos_client: Any) -> None:
    from hatidata_auth import create_app

    config = {k: v for k, v in app_config.items() if k != "HATIDATA_OTEL_ENABLED"}  # no setting
    off = create_app(config)  # its spans would go to the exporter, were traces on
    assert tracing.EXTENSION not in off.extensions
    assert tracing.tracer(off) is None
    assert not getattr(off, "_is_instrumented_by_opentelemetry", False)
    assert off.extensions["hatidata_workos"].tracer is None
    payload = _membership_event(workos_client, _initech(workos_client))
    exporter.clear()  # the setup above used this module's traced app
    client = off.test_client()
    assert post_event(client, off, payload, drain=False).status_code == 200
    assert _applier_batch(off) == 1
    assert login(client, "dev@acme.test").status_code == 302
    assert exporter.get_finished_spans() == ()
    with off.app_context():
        from hatidata_auth.extensions import db

        row = db.session.scalar(select(WebhookEvent).where(WebhookEvent.event_id == payload["id"]))
        assert row is not None
        assert row.status == "applied"
        assert row.trace_context is None
        db.session.remove()
        assert not getattr(db.engine, "_hatidata_traced", False)
        db.engine.dispose()
    off.extensions["hatidata_workos"].close()


def test_instrumenting_is_idempotent(app: Flask,
                                     exporter: InMemorySpanExporter) -> None:
    tracing.init_app(app)  # set up already: nothing more
    app.extensions.pop(tracing.EXTENSION)
    tracing.init_app(app)  # a second setup of the same app and engine (as a second app sharing them would)
    hooks = [f for f in app.before_request_funcs[None] if f is getattr(app, "_before_request", None)]
    assert len(hooks) == 1
    exporter.clear()
    assert app.test_client().get("/healthz").status_code in (200, 503)
    spans = exporter.get_finished_spans()
    assert len([s for s in spans if s.kind == SpanKind.SERVER]) == 1
    statements = [s.attributes["db.statement"] for s in spans if s.attributes and "db.statement" in s.attributes]
    assert len(statements) == len(set(statements)) or not statements  # each query traced once, not per setup


@pytest.mark.parametrize(("config", "environ", "expected"), [
    ({}, {}, False),
    ({}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
    ({}, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, {}, True),
    ({"HATIDATA_OTEL_ENABLED": False}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, False),
    ({"HATIDATA_OTEL_ENABLED": True}, {}, True),
    ({"HATIDATA_OTEL_ENABLED": True}, {"OTEL_SDK_DISABLED": "true"}, False),
])
def test_when_traces_are_on(config: dict[str, Any], environ: dict[str, str], expected: bool) -> None:
    assert tracing.enabled(config, environ) is expected
