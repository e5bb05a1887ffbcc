"""Unauthenticated failures (bad webhook signatures, failed logins, bad API keys): counted, audited in summary.

An unauthenticated caller must not be able to grow the audit log without bound. Every failure is counted in
Prometheus (``hatidata_security_events_total{kind, reason}``, exact); the audit log gets at most ONE summary row
per (kind, source organization or ``unknown``) per window, so it grows by at most
``len(KINDS) x (organizations + 1)`` rows per window, whatever the request rate.

A summary row is written by the first failure of a window. Its ``details`` carry ``count`` (the failures of
that key since the previous summary row, this one included) and up to :data:`MAX_SAMPLES` samples of the
attacker-supplied text, each cut to :data:`SAMPLE_CHARS` characters with control characters removed. The window
counters live in the shared cache (Redis in production), so every worker and instance shares the bound; the
hot path costs two cache round trips (``inc`` and ``add``), three for the first few failures of a window.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from .. import metrics
from ..causes import Actor, Cause
from ..config import DEFAULTS
from . import audit

log = logging.getLogger(__name__)

# kind -> the audit action of its summary rows. A fixed set: the bound above depends on it.
KINDS: Mapping[str, str] = {
    "webhook_signature": "webhook.signature_rejected",
    "login_failure": "auth.login.failed",
    "api_key": "auth.api_key.rejected",
    "access_policy": "auth.access_policy.refused",
}
UNKNOWN_ORGANIZATION = "unknown"
SAMPLE_CHARS = 200
MAX_SAMPLES = 3
DEFAULT_WINDOW: int = DEFAULTS["HATIDATA_SECURITY_SUMMARY_WINDOW"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]+")


def clean(text: Any, limit: int = SAMPLE_CHARS) -> str:
    """*text* as a single line of at most *limit* characters, control and bidi characters replaced by a space."""
    return _CONTROL.sub(" ", str(text if text is not None else ""))[:limit].strip()


def describe(details: Mapping[str, Any]) -> str:
    """``key=value; ...`` of the non-empty *details*, cleaned and cut to :data:`SAMPLE_CHARS`."""
    return clean("; ".join(f"{k}={clean(v)}" for k, v in details.items() if v not in (None, "")))


@dataclass(frozen=True, slots=True)
class Summary:
    """The audit summary row a failure wrote (``None`` is returned instead when its window already had one)."""

    kind: str
    organization_key: str
    window_start: int
    count: int
    samples: tuple[str, ...]


def _keys(kind: str, organization_key: str) -> tuple[str, str]:
    base = f"security:{kind}:{organization_key}"
    return f"{base}:pending", f"{base}:sample:"


def note(session: Session, cache: Any, *, kind: str, reason: str, sample: str = "",
         organization_id: str | None = None, cause: Cause | None = None,
         window: int = DEFAULT_WINDOW, clock: Callable[[], float] = time.time,
         target_type: str | None = None, target_id: str | None = None) -> Summary | None:
    """Count one unauthenticated failure and, if it is its window's first, add a summary row to *session*.

    *kind* is one of :data:`KINDS` (``ValueError`` otherwise); *reason* a short code chosen by our code (a
    metric label); *sample* the attacker-supplied text (cleaned and cut here); *organization_id* only when it
    comes from a trusted source (our database, a verified WorkOS answer), else the key is ``unknown``;
    *cause* the would-be actor (anonymous by default) and the request; *window* in seconds; *clock* returns epoch
    seconds. The caller commits. A cache failure skips the audit
    row (the metric still counts): it never raises and never writes more than the bound.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown security event kind {kind!r}")
    metrics.security_event(kind, reason)
    organization_key = organization_id or UNKNOWN_ORGANIZATION
    pending_key, sample_prefix = _keys(kind, organization_key)
    window = max(1, int(window))
    window_start = int(clock()) // window * window
    text = clean(f"{reason}: {sample}" if sample else reason)
    try:
        position = int(cache.inc(pending_key) or 1)
        if position <= MAX_SAMPLES:
            cache.set(f"{sample_prefix}{position}", text, timeout=window * 10)
        if not cache.add(f"security:{kind}:{organization_key}:window:{window_start}", 1, timeout=window * 2):
            return None
        count = int(cache.get(pending_key) or position)
        samples = [cache.get(f"{sample_prefix}{i}") for i in range(1, min(count, MAX_SAMPLES) + 1)]
        cache.dec(pending_key, count)
    except Exception:  # a broken cache must neither fail the rejection nor lift the bound
        log.warning("security event %s not audited: the cache is unavailable", kind, exc_info=True)
        return None
    kept = tuple(str(s) for s in samples if s) or (text,)
    cause = cause or Cause.by(Actor(type="anonymous"))
    info = dataclasses.replace(cause.request, user_agent=clean(cause.request.user_agent) or None)
    audit.record(session, action=KINDS[kind], cause=dataclasses.replace(cause, request=info),
                 organization_id=organization_id, target_type=target_type, target_id=target_id,
                 outcome="failure",
                 details={"summary": True, "kind": kind, "reason": reason, "count": count,
                          "window_seconds": window, "window_start": window_start, "samples": list(kept)})
    return Summary(kind, organization_key, window_start, count, kept)


__all__ = ["DEFAULT_WINDOW", "KINDS", "MAX_SAMPLES", "SAMPLE_CHARS", "Summary", "clean", "describe", "note"]
