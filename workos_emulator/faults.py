"""Fault injection: make matching API requests fail (WorkOS-shaped) or slow down."""

from __future__ import annotations

import fnmatch
import threading
from dataclasses import dataclass
from typing import Any

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "entity_not_found",
    409: "conflict",
    422: "invalid_request_parameters",
    429: "rate_limit_exceeded",
}


@dataclass
class Fault:
    """One rule: ``method`` (or ``*``) + ``path`` (exact or fnmatch glob) -> ``status`` and/or delay."""

    id: int
    method: str
    path: str
    status: int | None
    remaining: int | None
    delay_ms: int = 0
    body: dict[str, Any] | None = None
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        """Whether this rule applies to the request."""
        if self.method not in ("*", method.upper()):
            return False
        return path == self.path or fnmatch.fnmatchcase(path, self.path)

    def error_body(self) -> dict[str, Any]:
        """The injected WorkOS-shaped error body."""
        if self.body is not None:
            return self.body
        status = self.status or 500
        code = _CODES.get(status, "server_error" if status >= 500 else "error")
        return {"message": f"Injected fault ({status}) by the WorkOS emulator.", "code": code}

    def to_dict(self) -> dict[str, Any]:
        """JSON view."""
        return {
            "id": self.id,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "remaining": self.remaining,
            "delay_ms": self.delay_ms,
            "hits": self.hits,
        }


class FaultRegistry:
    """Thread-safe list of active faults."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._next = 1

    def add(self, method: str, path: str, status: int | None, count: int | None, delay_ms: int,
            body: dict[str, Any] | None = None) -> Fault:
        """Register a fault."""
        with self._lock:
            f = Fault(self._next, method.upper(), path, status, count, delay_ms, body)
            self._next += 1
            self._faults.append(f)
            return f

    def clear(self) -> None:
        """Remove every fault."""
        with self._lock:
            self._faults.clear()

    def list(self) -> list[dict[str, Any]]:
        """Active faults."""
        with self._lock:
            return [f.to_dict() for f in self._faults]

    def take(self, method: str, path: str) -> Fault | None:
        """The first matching fault (consuming one use of it), if any."""
        with self._lock:
            for f in self._faults:
                if f.matches(method, path):
                    f.hits += 1
                    if f.remaining is not None:
                        f.remaining -= 1
                        if f.remaining <= 0:
                            self._faults.remove(f)
                    return f
            return None
