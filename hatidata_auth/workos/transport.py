"""The SDK's HTTP backend, wrapped to time every WorkOS call and count its failures (Prometheus)."""

from __future__ import annotations

import time
from typing import Any

from workos._http import TransportConnectError, TransportTimeout, resolve_sync_backend

from ..metrics import WORKOS_ERRORS, WORKOS_LATENCY, method_label, path_template


def instrumented_backend(timeout: float) -> InstrumentedBackend:
    """The SDK's own sync HTTP backend (httpx) for *timeout* seconds, instrumented."""
    inner, _ = resolve_sync_backend(None, timeout)
    return InstrumentedBackend(inner)


class InstrumentedBackend:
    """The SDK's HTTP backend, timing every WorkOS call and counting its failures."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def request(self, method: str, url: str, *, headers: dict[str, str], content: bytes | None,
                timeout: float) -> Any:
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
