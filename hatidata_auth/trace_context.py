"""Trace context carried with queued work (no Flask): the W3C ``traceparent``/``tracestate`` of the span that
queued an inbox row, and the span that applies it later, in another thread or process, as that span's child.

Everything here costs one context lookup when tracing is off (no span is current, no tracer is given):
nothing is stored and no span is started. Setup is :mod:`hatidata_auth.tracing`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.instrumentation.utils import suppress_instrumentation

__all__ = ["apply_span", "carrier", "quiet"]


def carrier() -> dict[str, str] | None:
    """The current span's W3C trace context (``{"traceparent": ..., "tracestate": ...}``), or ``None`` when no
    span is recording (tracing off)."""
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return {k: v for k, v in headers.items() if k in ("traceparent", "tracestate")} or None


@contextmanager
def apply_span(tracer: trace.Tracer | None, name: str, stored: Mapping[str, Any] | None,
               attributes: Mapping[str, str | int]) -> Iterator[None]:
    """A span named *name* around applying queued work, the child of the *stored* context (so one trace runs
    from the request that queued it to its application); without one, a child of the current span. Nothing
    when *tracer* is ``None``."""
    if tracer is None:
        yield
        return
    parent = propagate.extract(dict(stored)) if stored else None
    with tracer.start_as_current_span(name, context=parent, kind=trace.SpanKind.CONSUMER,
                                      attributes=dict(attributes)):
        yield


@contextmanager
def quiet() -> Iterator[None]:
    """No instrumentation spans inside (the appliers' polls, which run every second and mostly find nothing)."""
    with suppress_instrumentation():
        yield
