"""Webhook signatures, checked with the SDK on the raw body, and the SDK's shape check of the event."""

from __future__ import annotations

import json
from typing import Any

from workos import WorkOSClient
from workos._errors import WorkOSError
from workos.events.models import EventSchema


class InvalidSignature(Exception):
    """The ``WorkOS-Signature`` header does not sign this body (or is not a header at all).

    ``reason``: the SDK's exception class and at most 200 characters of its message, for logs and audit samples.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def verify_signature(client: WorkOSClient, *, body: bytes, header: str, secret: str, tolerance: int) -> None:
    """Check *header* against *body* with the SDK's ``verify_header``; raises :class:`InvalidSignature`.

    The SDK raises whatever parsing attacker bytes leads to (``ValueError``, ``OverflowError`` for a timestamp of
    400 digits, ``TypeError``, ...): every one of them means "not signed by WorkOS", never a server error.
    """
    try:
        client.webhooks.verify_header(event_body=body, event_signature=header, secret=secret, tolerance=tolerance)
    except Exception as exc:  # noqa: BLE001 - any failure on attacker bytes is a refused signature
        # The SDK's messages may quote the attacker's header in full: keep the class and a bounded message.
        message = str(exc.args[0]) if exc.args else ""
        raise InvalidSignature(f"{type(exc).__name__}: {message}"[:200]) from None


class MalformedEvent(Exception):
    """A (signed) body that is not a JSON object of a WorkOS event's shape; ``cause`` is what failed."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def parse_event(body: bytes | Any) -> dict[str, Any]:
    """The event *body* holds (raw bytes, or the value already parsed from them), as a dict, once the SDK's own
    shape check of known event types accepts it.

    Raises :class:`MalformedEvent`: not JSON (or nested too deep to parse), not an object, or a shape the SDK
    refuses (it raises ``WorkOSError`` or, on odd values, ``ValueError``, ``TypeError``, ``KeyError`` ...).
    """
    try:
        payload = json.loads(body) if isinstance(body, bytes | bytearray | str) else body
        if not isinstance(payload, dict):
            raise TypeError("the body must be a JSON object")
        EventSchema.from_dict(payload)
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError, WorkOSError) as exc:
        raise MalformedEvent(exc) from exc
    return payload
