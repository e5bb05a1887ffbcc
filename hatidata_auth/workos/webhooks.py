"""Webhook signatures, checked with the SDK on the raw body."""

from __future__ import annotations

from workos import WorkOSClient


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
