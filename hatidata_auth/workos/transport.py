"""The SDK's HTTP backend, wrapped to time every WorkOS call and count its failures (Prometheus), to note every
write (``lasting_effects``: a view that sent one is not run again) and, when traces are on, to record a client
span per call.

The SDK talks HTTP through ``httpx2``, which OpenTelemetry's httpx instrumentation does not patch: the span is
made here. Its attributes hold the method, the path template (``/organizations/{id}``: no ids, no query, so no
code or token) and the status, never a header (the API key travels in ``Authorization``). No ``traceparent`` is
sent: WorkOS is a third party, our trace ids are ours.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

from workos._http import TransportConnectError, TransportTimeout, resolve_sync_backend

from ..lasting_effects import note_outside_write
from ..metrics import WORKOS_ERRORS, WORKOS_LATENCY, method_label, path_template


def instrumented_backend(timeout: float, tracer: Any = None) -> InstrumentedBackend:
    """The SDK's own sync HTTP backend (httpx2) for *timeout* seconds, instrumented (traced with *tracer*)."""
    inner, _ = resolve_sync_backend(None, timeout)
    return InstrumentedBackend(inner, tracer)


class InstrumentedBackend:
    """The SDK's HTTP backend, timing every WorkOS call and counting its failures; with a *tracer*, each call is
    a client span."""

    def __init__(self, inner: Any, tracer: Any = None) -> None:
        self.inner = inner
        self.tracer = tracer

    def request(self, method: str, url: str, *, headers: dict[str, str], content: bytes | None,
                timeout: float) -> Any:
        if self.tracer is None:
            return self._request(method, url, headers=headers, content=content, timeout=timeout)
        from opentelemetry.trace import SpanKind, Status, StatusCode

        path = path_template(url)
        attributes = {"http.request.method": method_label(method), "url.template": path,
                      "server.address": urlsplit(url).hostname or "", "peer.service": "workos"}
        with self.tracer.start_as_current_span(f"WorkOS {method_label(method)} {path}", kind=SpanKind.CLIENT,
                                               attributes=attributes) as span:
            response = self._request(method, url, headers=headers, content=content, timeout=timeout)
            status = int(getattr(response, "status_code", 0))
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            return response

    def _request(self, method: str, url: str, *, headers: dict[str, str], content: bytes | None,
                 timeout: float) -> Any:
        note_outside_write(method)
        path = path_template(url)
        started = time.perf_counter()
        try:
            response = self.inner.request(method, url, headers=headers, content=content, timeout=timeout)
        except TransportTimeout:
            WORKOS_ERRORS.labels(method=method_label(method), path=path, kind="timeout").inc()
            raise
        except TransportConnectError:
            WORKOS_ERRORS.labels(method=method_label(method), path=path, kind="connect").inc()
            raise
        except Exception:
            WORKOS_ERRORS.labels(method=method_label(method), path=path, kind="transport").inc()
            raise
        finally:
            WORKOS_LATENCY.labels(method=method_label(method), path=path).observe(time.perf_counter() - started)
        status = int(getattr(response, "status_code", 0))
        if status >= 500:
            WORKOS_ERRORS.labels(method=method_label(method), path=path, kind="http_5xx").inc()
        elif status >= 400:
            WORKOS_ERRORS.labels(method=method_label(method), path=path, kind="http_4xx").inc()
        return response

    def close(self) -> None:
        """Close the wrapped backend's connections."""
        self.inner.close()
