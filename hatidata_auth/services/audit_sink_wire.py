"""The wire formats and transports of audit sinks: one batch of stream lines (NDJSON event and checkpoint lines,
docs/audit.md "Stream format") delivered to one sink, confirmed or raising :class:`DeliveryFailed`.

- ``https``: ``POST`` of the NDJSON body, signed like WorkOS webhooks: ``HatiData-Signature: t=<unix ms>,
  v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``; any 2xx confirms.
- ``splunk_hec``: ``POST /services/collector/event``, ``Authorization: Splunk <token>``, a body of concatenated
  ``{"event": <line object>, "time": <epoch s>, "sourcetype": "hatidata:audit", "source": "hatidata-auth"}``;
  confirmed by 200 with ``{"code": 0}``.
- ``datadog``: ``POST /api/v2/logs``, ``DD-API-KEY``, a JSON array of ``{"ddsource": "hatidata", "service":
  "hatidata-auth", "message": <the line>, "ddtags": …}``; confirmed by 202.
- ``syslog_tls``: one TLS connection per batch (server certificate and name verified), RFC 5424 messages
  (facility 13 "log audit", severity 6, ``APP-NAME`` hatidata-auth, ``MSGID`` event or checkpoint, ``MSG`` the
  line) with octet-counting framing (RFC 6587 / RFC 5425); confirmed by the server's TLS ``close_notify`` after
  the batch (syslog has no acknowledgement; a server that closes cleanly has read everything before it).

Every kind connects only to the addresses checked for the delivery, within one deadline (``Target.timeout``, s),
and reads at most 64 KiB of an answer (``audit_sink_transport``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .audit_sink_endpoints import Endpoint
from .audit_sink_transport import (
    Answer,
    Deadline,
    DeliveryFailed,
    close_notified,
    connect,
    failure,
    pinned_addresses,
    post,
    send_all,
)

SIGNATURE_HEADER = "HatiData-Signature"
SOURCE = "hatidata-auth"
SOURCETYPE = "hatidata:audit"
SYSLOG_PRI = 13 * 8 + 6  # facility 13 (log audit), severity 6 (informational)
__all__ = ["DeliveryFailed", "Line", "Target", "deliver", "signature_header"]


@dataclass(frozen=True, slots=True)
class Line:
    """One stream line: its text (no newline), the parsed object, and when it happened (epoch seconds)."""

    text: str
    value: dict[str, Any]
    at: float

    @property
    def is_checkpoint(self) -> bool:
        return self.value.get("type") == "checkpoint"


@dataclass(frozen=True, slots=True)
class Target:
    """Where and how one sink delivers. ``secret`` is unsealed only for the delivery and hidden from ``repr``."""

    kind: str
    endpoint: Endpoint
    organization_id: str
    secret: str | None = field(default=None, repr=False)
    timeout: float = 10.0
    ca_bundle: str | None = None
    allow_loopback: bool = False


def signature_header(secret: str, body: bytes, now_ms: int) -> str:
    """``t=<ms>, v1=<hex>``: WorkOS's webhook scheme over ``"<t>.<body>"`` (the SDK's ``verify_header`` accepts
    it with our secret)."""
    digest = hmac.new(secret.encode(), f"{now_ms}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={now_ms}, v1={digest}"


def ndjson_body(lines: Sequence[Line]) -> bytes:
    return "".join(line.text + "\n" for line in lines).encode()


def hec_body(lines: Sequence[Line]) -> bytes:
    return "".join(json.dumps({"event": line.value, "time": round(line.at, 3), "sourcetype": SOURCETYPE,
                               "source": SOURCE}, sort_keys=True, ensure_ascii=False)
                   for line in lines).encode()


def datadog_body(lines: Sequence[Line], organization_id: str) -> bytes:
    return json.dumps([{"ddsource": "hatidata", "service": SOURCE, "message": line.text,
                        "ddtags": f"organization_id:{organization_id},"
                                  f"record:{'checkpoint' if line.is_checkpoint else 'event'}"}
                       for line in lines], ensure_ascii=False).encode()


def syslog_frame(line: Line, hostname: str) -> bytes:
    """One RFC 5424 message, octet-counted (``<length> <message>``)."""
    stamp = datetime.fromtimestamp(line.at, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    msgid = "checkpoint" if line.is_checkpoint else "event"
    message = f"<{SYSLOG_PRI}>1 {stamp} {hostname} {SOURCE} - {msgid} - {line.text}".encode()
    return str(len(message)).encode() + b" " + message


def _hostname() -> str:
    name = socket.gethostname()
    return name[:255] if name and name.isascii() and " " not in name else "-"


def _tls_context(target: Target) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=target.ca_bundle)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _post(target: Target, addresses: list[str], deadline: Deadline, body: bytes, headers: dict[str, str]
          ) -> Answer:
    context = _tls_context(target) if target.endpoint.tls else None
    return post(target.endpoint, addresses, deadline, context, body, headers)


def _send_https(target: Target, lines: Sequence[Line], now: Callable[[], float], addresses: list[str],
                deadline: Deadline) -> None:
    body = ndjson_body(lines)
    headers = {"Content-Type": "application/x-ndjson"}
    if target.secret:
        headers[SIGNATURE_HEADER] = signature_header(target.secret, body, int(now() * 1000))
    answer = _post(target, addresses, deadline, body, headers)
    if not 200 <= answer.status < 300:
        raise DeliveryFailed(f"HTTP {answer.status}")


def _hec_code(answer: Answer) -> int | None:
    """The ``code`` of a HEC answer (``{"text", "code"}`` on success and failure alike); ``None`` if it has none."""
    if answer.cut:
        return None
    try:
        code = json.loads(answer.body).get("code")
    except (ValueError, AttributeError, RecursionError):  # a hostile answer may nest past the recursion limit
        return None
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def _send_hec(target: Target, lines: Sequence[Line], now: Callable[[], float], addresses: list[str],
              deadline: Deadline) -> None:
    answer = _post(target, addresses, deadline, hec_body(lines),
                   {"Authorization": f"Splunk {target.secret or ''}", "Content-Type": "application/json"})
    code = _hec_code(answer)
    if answer.status != 200 or code != 0:
        raise DeliveryFailed(f"HTTP {answer.status}" + (f" (HEC code {code})" if code is not None else "")
                             + (" (answer over 64 KiB)" if answer.cut else ""))


def _send_datadog(target: Target, lines: Sequence[Line], now: Callable[[], float], addresses: list[str],
                  deadline: Deadline) -> None:
    answer = _post(target, addresses, deadline, datadog_body(lines, target.organization_id),
                   {"DD-API-KEY": target.secret or "", "Content-Type": "application/json"})
    if answer.status != 202:
        raise DeliveryFailed(f"HTTP {answer.status}")


def _send_syslog(target: Target, lines: Sequence[Line], now: Callable[[], float], addresses: list[str],
                 deadline: Deadline) -> None:
    hostname = _hostname()
    payload = b"".join(syslog_frame(line, hostname) for line in lines)
    try:
        with connect(target.endpoint, addresses, deadline, _tls_context(target)) as tls:
            assert isinstance(tls, ssl.SSLSocket)
            send_all(tls, payload, deadline)
            close_notified(tls, deadline)  # the server's close_notify: it has read the whole batch
    except (OSError, ssl.SSLError) as exc:
        raise failure(exc, deadline) from None


Sender = Callable[[Target, Sequence[Line], Callable[[], float], list[str], Deadline], None]
SENDERS: dict[str, Sender] = {
    "https": _send_https, "splunk_hec": _send_hec, "datadog": _send_datadog, "syslog_tls": _send_syslog,
}


def deliver(target: Target, lines: Sequence[Line], *, now: Callable[[], float] = time.time) -> None:
    """Send *lines* to the sink and return once it confirmed them, within ``target.timeout`` seconds in all;
    :class:`DeliveryFailed` otherwise. The host is resolved once, every address checked, and only those addresses
    are connected to."""
    deadline = Deadline(target.timeout)
    addresses = pinned_addresses(target.endpoint, allow_loopback=target.allow_loopback)
    SENDERS[target.kind](target, lines, now, addresses, deadline)
