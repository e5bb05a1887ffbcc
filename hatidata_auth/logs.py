"""Structured logs: one JSON object per line on stderr, with the request id, through stdlib ``logging``.

``configure_logging(app)`` installs one handler on the root logger (once per process) with
:class:`JsonFormatter`; every logger of the app, its libraries and gunicorn (``config/gunicorn.conf.py``) goes
through it. Level: ``HATIDATA_LOG_LEVEL`` (default ``INFO``).

The formatter also scrubs anything shaped like a credential (JWTs, ``hd_live_`` API keys, WorkOS ``sk_``
keys, ``whsec_`` secrets, Fernet tokens such as the sealed session cookie, ``code=``/``token=`` query values)
as a last line of defence; code must still never log a secret.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import traceback
from datetime import UTC, datetime
from typing import Any

from flask import Flask, g, has_request_context, request

from .config import DEFAULTS

_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}

_SECRET_PATTERNS = [
    (re.compile(r"eyJ[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]*"), "[jwt]"),
    (re.compile(r"\bhd_(?:live|test)_[A-Za-z0-9_-]{8,}"), "[api_key]"),
    (re.compile(r"\bsk_[A-Za-z0-9_]{6,}"), "[workos_key]"),
    (re.compile(r"\bwhsec_[A-Za-z0-9_]{4,}"), "[webhook_secret]"),
    (re.compile(r"\bgAAAAA[A-Za-z0-9_=-]{20,}"), "[sealed]"),
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"), r"\1[redacted]"),
    (re.compile(r"(?i)\b((?:code|refresh_token|access_token|token|code_verifier|secret|password)=)[^&\s\"']+"),
     r"\1[redacted]"),
]


def redact(text: str) -> str:
    """Replace anything that looks like a credential."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class JsonFormatter(logging.Formatter):
    """``{"ts","level","logger","message","request_id",...extra}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or _current_request_id()
        if request_id:
            entry["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and key != "request_id" and not key.startswith("_"):
                entry[key] = value if isinstance(value, str | int | float | bool | type(None)) else repr(value)
        if record.exc_info:
            entry["exc_info"] = "".join(traceback.format_exception(*record.exc_info))[-8000:]
        return redact(json.dumps(entry, default=str, ensure_ascii=False))


def _current_request_id() -> str | None:
    try:
        if has_request_context():
            rid = g.get("request_id")
            return str(rid) if rid else request.headers.get("X-Request-ID")
    except Exception:  # noqa: BLE001 - logging must never fail
        return None
    return None


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg,unused-ignore]
    """Writes to whatever ``sys.stderr`` is at emit time (test runners swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


_HANDLER_NAME = "hatidata-json"
#: The HTTP client libraries' loggers, held at WARNING (see :func:`configure_logging`).
QUIET_LOGGERS = ("httpx2", "httpcore2", "httpx", "httpcore")
_QUIETED = "_hatidata_quieted"


def configure_logging(app: Flask | None = None, level: str | None = None) -> logging.Handler:
    """Install the JSON handler on the root logger (idempotent) and set the level."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if h.get_name() == _HANDLER_NAME), None)
    if handler is None:
        handler = StderrHandler()
        handler.set_name(_HANDLER_NAME)
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
    configured = app.config.get("HATIDATA_LOG_LEVEL") if app is not None else None
    name = level or configured or DEFAULTS["HATIDATA_LOG_LEVEL"]
    root.setLevel(str(name).upper())
    for quiet in map(logging.getLogger, QUIET_LOGGERS):
        # One INFO line per WorkOS call, its whole URL with query (an email, a user id): noise at best, personal
        # data in the logs at worst. Held at WARNING or the root's level if higher, each time (DEBUG: inherited);
        # a level someone else set on them stays.
        if quiet.level == logging.NOTSET or getattr(quiet, _QUIETED, False):
            quiet.setLevel(logging.NOTSET if root.level <= logging.DEBUG else max(logging.WARNING, root.level))
            setattr(quiet, _QUIETED, True)
    if app is not None:
        # Flask's own default handler would print every app.logger record a second time, unformatted.
        from flask.logging import default_handler

        app.logger.removeHandler(default_handler)
    return handler
