"""The emulator instance: configuration, store, signing key, event recording and webhook fan-out."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

from flask import current_app, request

from .faults import FaultRegistry
from .ids import iso, new_id
from .keys import SigningKey
from .persistence import StatePersistence, seed_digest
from .serialize import snapshot
from .store import Store
from .webhooks import WebhookDispatcher, WebhookSettings

EXTENSION_KEY = "workos_emulator"


@dataclass
class EmulatorConfig:
    """Static configuration given to ``create_app``."""

    seed_path: str | None
    data_dir: str
    api_key: str
    client_id: str
    access_token_ttl: int
    public_url: str | None
    session_ttl: int = 7 * 24 * 3600
    code_ttl: int = 600
    refresh_grace_seconds: float = 0.0


class Emulator:
    """Everything one emulator app holds (``app.extensions['workos_emulator']``)."""

    def __init__(self, config: EmulatorConfig, webhook_settings: WebhookSettings | None = None) -> None:
        self.config = config
        self.store = Store()
        self.persistence = StatePersistence(config.data_dir, seed_digest(config.seed_path))
        self.keys = SigningKey(config.data_dir)
        self.initial_webhook_settings = dict((webhook_settings or WebhookSettings()).to_dict())
        self.dispatcher = WebhookDispatcher(webhook_settings)
        self.faults = FaultRegistry()

    def issuer(self) -> str:
        """Public base URL (JWT ``iss``, links); falls back to the current request's host URL."""
        if self.config.public_url:
            return self.config.public_url.rstrip("/")
        try:
            return request.host_url.rstrip("/")
        except RuntimeError:
            return "http://127.0.0.1"

    def emit(self, event_type: str, data: dict[str, Any], organization_id: str | None = None) -> dict[str, Any]:
        """Record an event (Events API) and queue it for every matching enabled webhook endpoint."""
        with self.store.lock:
            payload = {
                "object": "event",
                "id": new_id("event"),
                "event": event_type,
                "data": snapshot(data),
                "created_at": iso(),
            }
            if organization_id is None:
                organization_id = data.get("organization_id")
            self.store.events.append({"payload": payload, "organization_id": organization_id})
            for ep in self.store.webhook_endpoints.values():
                if ep["status"] != "enabled":
                    continue
                wanted = ep.get("events") or []
                if wanted and not any(fnmatch.fnmatchcase(event_type, w) for w in wanted):
                    continue
                self.dispatcher.enqueue(payload, ep)
            return payload

    def shutdown(self) -> None:
        """Stop background threads and close the state file."""
        self.dispatcher.stop()
        with self.store.lock:
            self.persistence.close()


def emulator() -> Emulator:
    """The emulator of the current Flask app."""
    return current_app.extensions[EXTENSION_KEY]
