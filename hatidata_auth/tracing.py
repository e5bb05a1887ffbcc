"""OpenTelemetry traces, off by default (docs/deploy.md, "Traces").

On when ``HATIDATA_OTEL_ENABLED`` is true, or (unset) when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set; never with ``OTEL_SDK_DISABLED=true``. Off, nothing is imported
from the SDK and nothing is instrumented: no request, query or WorkOS call does any tracing work.

On, each app gets its own :class:`TracerProvider` (never the process-global one: tests build many apps, and an
embedding app may have its own), exporting over OTLP/HTTP in batches (the SDK's standard ``OTEL_*`` variables:
endpoint, headers, service name, sampler; its batch processor restarts its thread in a forked gunicorn worker),
or to ``HATIDATA_OTEL_SPAN_EXPORTER`` (a ``SpanExporter`` object, synchronously: the tests' in-memory exporter).
Instrumented: the app's requests (span named by route template, with ``hatidata.request_id``, no query string),
its SQLAlchemy engines, the cache's Redis clients, every WorkOS HTTP call (:mod:`hatidata_auth.workos.transport`),
and the application of inbox events (:mod:`hatidata_auth.trace_context`). Each is done once per app or engine.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import Flask, g, request

from .trace_context import quiet

EXTENSION = "hatidata_tracing"
DEFAULT_SERVICE_NAME = "hatidata-auth"
REQUEST_ID_ATTRIBUTE = "hatidata.request_id"
_ENGINE_MARK = "_hatidata_traced"
_FLASK_SPAN_KEY = "opentelemetry-flask.span_key"  # where the Flask instrumentation keeps the request's span

__all__ = ["EXTENSION", "REQUEST_ID_ATTRIBUTE", "Tracing", "enabled", "init_app", "quiet", "tracer"]


@dataclass(frozen=True, slots=True)
class Tracing:
    """The app's tracer provider and its tracer (``app.extensions["hatidata_tracing"]``)."""

    provider: Any
    tracer: Any


def enabled(config: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> bool:
    """Whether *config* (and the environment) turn traces on."""
    environ = os.environ if environ is None else environ
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    flag = config.get("HATIDATA_OTEL_ENABLED")
    if flag is not None:
        return bool(flag)
    return any(config.get(name) or environ.get(name)
               for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def tracer(app: Any) -> Any:
    """*app*'s tracer, or ``None`` when its traces are off."""
    found = getattr(app, "extensions", {}).get(EXTENSION)
    return found.tracer if found is not None else None


def init_app(app: Flask) -> None:
    """Trace *app* when configured (after the extensions and request hooks are set up); else do nothing."""
    if EXTENSION in app.extensions or not enabled(app.config):
        return
    provider = _provider(app.config)
    traced = Tracing(provider, provider.get_tracer("hatidata_auth"))
    app.extensions[EXTENSION] = traced
    _instrument_flask(app, provider)
    _instrument_engines(app, traced.tracer)
    _instrument_redis(app, provider)
    app.extensions["hatidata_workos"].tracer = traced.tracer


def _provider(config: Mapping[str, Any]) -> Any:
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    name = config.get("OTEL_SERVICE_NAME") or os.environ.get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: str(name)}))
    exporter = config.get("HATIDATA_OTEL_SPAN_EXPORTER")
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        base = config.get("OTEL_EXPORTER_OTLP_ENDPOINT")  # in a settings file; the SDK reads the environment
        endpoint = f"{str(base).rstrip('/')}/v1/traces" if base else None
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return provider


def _instrument_flask(app: Flask, provider: Any) -> None:
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    FlaskInstrumentor.instrument_app(app, tracer_provider=provider, enable_commenter=False)
    # Its hook starts the request's span: run it first, so that the span covers (and parents the queries and
    # WorkOS calls of) every other before-request hook, and exists even when one of them answers.
    hooks = app.before_request_funcs.setdefault(None, [])
    start = app._before_request  # type: ignore[attr-defined]
    hooks.remove(start)
    hooks.insert(0, start)

    @app.teardown_request
    def _annotate(_exc: BaseException | None) -> None:
        # Teardown hooks run last-registered first: the span is still open here.
        span = request.environ.get(_FLASK_SPAN_KEY)
        if span is None or not span.is_recording():
            return
        request_id = g.get("request_id")
        if request_id:
            span.set_attribute(REQUEST_ID_ATTRIBUTE, request_id)
        _drop_query(span)


_URL_ATTRIBUTES = ("http.target", "http.url", "url.full")


def _drop_query(span: Any) -> None:
    """No query string in the request span: the WSGI instrumentation records the request target with its query,
    and ours carry one-time codes and signed state (``/auth/callback?code=...``)."""
    attributes = getattr(span, "attributes", None) or {}
    for key in _URL_ATTRIBUTES:
        value = attributes.get(key)
        if isinstance(value, str) and "?" in value:
            span.set_attribute(key, value.split("?", 1)[0])
    if attributes.get("url.query"):
        span.set_attribute("url.query", "")


def _instrument_engines(app: Flask, tracer_: Any) -> None:
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.metrics import NoOpMeterProvider

    from .extensions import db

    usage = NoOpMeterProvider().get_meter(__name__).create_up_down_counter("db.client.connections.usage")
    with app.app_context():
        engines = list(db.engines.values())
    for engine in engines:
        if not getattr(engine, _ENGINE_MARK, False):
            EngineTracer(tracer_, engine, usage)
            setattr(engine, _ENGINE_MARK, True)


def _instrument_redis(app: Flask, provider: Any) -> None:
    if not app.config.get("CACHE_REDIS_URL"):
        return
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    from .extensions import cache

    with app.app_context():
        backend = cache.cache
    clients = {id(c): c for c in (getattr(backend, "_write_client", None), getattr(backend, "_read_client", None))
               if c is not None}
    for client in clients.values():
        if not getattr(client, "_is_instrumented_by_opentelemetry", False):
            RedisInstrumentor.instrument_client(client, tracer_provider=provider)
