"""Signed webhook delivery: a background worker with retries, duplicates, reordering, delay and pause."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from .ids import iso, new_id


def sign(secret: str, body: str, timestamp_ms: int | None = None) -> str:
    """Return the ``WorkOS-Signature`` header value: ``t=<unix ms>, v1=<hex hmac-sha256>``."""
    ts = str(timestamp_ms if timestamp_ms is not None else int(time.time() * 1000))
    digest = hmac.new(secret.encode(), f"{ts}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"t={ts}, v1={digest}"


@dataclass
class WebhookSettings:
    """Runtime switches for delivery (``PUT /_emulator/settings/webhooks``)."""

    duplicate_rate: float = 0.0
    reorder: bool = False
    reorder_window: int = 10
    reorder_window_ms: int = 250
    delay_ms: int = 0
    paused: bool = False
    retry_base_s: float = 0.5
    max_attempts: int = 8
    timeout_s: float = 5.0

    def to_dict(self) -> dict[str, Any]:
        """JSON view."""
        return dict(self.__dict__)


@dataclass
class Delivery:
    """One event destined for one endpoint, with its attempt history."""

    id: str
    seq: int
    event_id: str
    event_type: str
    endpoint_id: str
    url: str
    secret: str
    body: str
    next_at: float
    attempts: int = 0
    status: str = "pending"  # pending | delivered | failed
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON view (without secret/body)."""
        return {
            "id": self.id,
            "event_id": self.event_id,
            "event": self.event_type,
            "endpoint_id": self.endpoint_id,
            "endpoint_url": self.url,
            "status": self.status,
            "attempts": self.attempts,
            "history": list(self.history),
        }


class WebhookDispatcher:
    """Queues deliveries and sends them from one daemon thread."""

    def __init__(self, settings: WebhookSettings | None = None, *, log_limit: int = 20000) -> None:
        self.settings = settings or WebhookSettings()
        self._cond = threading.Condition()
        self._pending: list[Delivery] = []
        self._inflight = 0
        self._seq = 0
        self._log: list[Delivery] = []
        self._log_limit = log_limit
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="workos-emulator-webhooks", daemon=True)
        self._thread.start()

    # ---- producer side ---------------------------------------------------------------------------
    def enqueue(self, event: dict[str, Any], endpoint: dict[str, Any]) -> None:
        """Queue ``event`` (``{id, event, data, created_at}``) for ``endpoint``."""
        body = json.dumps(
            {k: event[k] for k in ("id", "event", "data", "created_at")}, separators=(",", ":")
        )
        with self._cond:
            self._seq += 1
            d = Delivery(
                id=new_id("wh_delivery"),
                seq=self._seq,
                event_id=event["id"],
                event_type=event["event"],
                endpoint_id=endpoint["id"],
                url=endpoint["endpoint_url"],
                secret=endpoint["secret"],
                body=body,
                next_at=time.monotonic(),
            )
            self._pending.append(d)
            self._log.append(d)
            if len(self._log) > self._log_limit:
                del self._log[: len(self._log) - self._log_limit]
            self._cond.notify_all()

    def update(self, **changes: Any) -> WebhookSettings:
        """Apply setting changes and wake the worker."""
        with self._cond:
            for k, v in changes.items():
                setattr(self.settings, k, v)
            self._cond.notify_all()
            return self.settings

    def deliveries(self) -> list[dict[str, Any]]:
        """All recorded deliveries (oldest first)."""
        with self._cond:
            return [d.to_dict() for d in self._log]

    def pending_count(self) -> int:
        """Deliveries queued or being sent."""
        with self._cond:
            return len(self._pending) + self._inflight

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until nothing is pending or in flight; False on timeout or while paused."""
        deadline = time.monotonic() + timeout
        with self._cond:
            if self.settings.reorder:
                self._cond.notify_all()
            while self._pending or self._inflight:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.settings.paused:
                    return False
                self._flushing = True
                self._cond.notify_all()
                self._cond.wait(min(remaining, 0.05))
            self._flushing = False
            return True

    def clear(self) -> None:
        """Drop pending deliveries and the log (used by reset)."""
        with self._cond:
            self._pending.clear()
            self._log.clear()
            self._cond.notify_all()

    def stop(self) -> None:
        """Stop the worker thread."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join(timeout=5)

    # ---- worker ------------------------------------------------------------------------------------
    _flushing = False

    def _take_batch(self) -> list[Delivery]:
        """Called with the lock held: due deliveries to send now (may be empty)."""
        s = self.settings
        if s.paused or not self._pending:
            return []
        now = time.monotonic()
        due = sorted((d for d in self._pending if d.next_at <= now), key=lambda d: (d.next_at, d.seq))
        if not due:
            return []
        if s.reorder:
            oldest_wait = (now - due[0].next_at) * 1000
            if len(due) < s.reorder_window and oldest_wait < s.reorder_window_ms and not self._flushing:
                return []
            batch = due[: max(s.reorder_window, 1)]
            random.shuffle(batch)
        else:
            batch = due[:1]
        for d in batch:
            self._pending.remove(d)
        self._inflight += len(batch)
        return batch

    def _next_wait(self) -> float:
        if self.settings.paused or not self._pending:
            return 0.5
        now = time.monotonic()
        soonest = min(d.next_at for d in self._pending)
        if self.settings.reorder:
            return 0.02
        return max(0.0, min(0.5, soonest - now))

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopped:
                    return
                batch = self._take_batch()
                if not batch:
                    self._cond.wait(self._next_wait() or 0.001)
                    continue
            for d in batch:
                self._deliver(d)
            with self._cond:
                self._inflight -= len(batch)
                self._cond.notify_all()

    def _post(self, d: Delivery) -> tuple[int | None, str | None]:
        req = urllib.request.Request(  # noqa: S310 - the URL is configured by the test/dev operator
            d.url,
            data=d.body.encode(),
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": "WorkOS Emulator Webhooks",
                "WorkOS-Signature": sign(d.secret, d.body),
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=self.settings.timeout_s) as resp:  # noqa: S310
                resp.read()
                return resp.status, None
        except urllib.error.HTTPError as exc:
            exc.close()
            return exc.code, None
        except Exception as exc:  # noqa: BLE001 - any failure is a failed attempt, retried; never the dispatcher's end
            return None, f"{type(exc).__name__}: {exc}"

    def _deliver(self, d: Delivery) -> None:
        s = self.settings
        if s.delay_ms:
            time.sleep(s.delay_ms / 1000)
        d.attempts += 1
        started = time.monotonic()
        status, error = self._post(d)
        ok = status is not None and 200 <= status < 300
        d.history.append(
            {
                "attempt": d.attempts,
                "at": iso(),
                "status_code": status,
                "error": error,
                "duration_ms": int((time.monotonic() - started) * 1000),
            }
        )
        if ok:
            d.status = "delivered"
            if s.duplicate_rate and random.random() < s.duplicate_rate:
                dup_status, dup_error = self._post(d)
                d.history.append(
                    {"attempt": d.attempts, "at": iso(), "status_code": dup_status, "error": dup_error,
                     "duplicate": True}
                )
            return
        if d.attempts >= s.max_attempts:
            d.status = "failed"
            return
        backoff = min(s.retry_base_s * (2 ** (d.attempts - 1)), 60.0)
        with self._cond:
            d.next_at = time.monotonic() + backoff
            self._pending.append(d)
