"""``rotate-secret webhook-secret`` against the emulator: the new secret goes to the endpoint the emulator delivers
to, never to a URL guessed from this shell's settings.

A new user ran it beside ``make run`` from a shell that did not export the app's port: the secret went to an
endpoint nothing listened at (the shell's default ``HATIDATA_PUBLIC_URL``), and then to a stale endpoint of an
earlier run kept in the emulator's data folder, and every delivery failed its signature (break-it reviews). The
endpoint is chosen among the *enabled* ones (the emulator delivers to no other) by whether an app answers at it.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import click
import httpx2

from .cli_support import unreachable_message
from .health import SERVICE
from .workos import WorkOSClient, translate_errors

PROBE_TIMEOUT = 1.0
"""Seconds an endpoint's app has to answer ``GET /healthz``."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An endpoint of the emulator's: its URL and the events it is subscribed to (``[]``: every event)."""

    url: str
    events: tuple[str, ...]


def _answers(url: str) -> bool:
    """Whether HatiData Auth answers at *url*'s host: ``GET /healthz`` names it (another service answering
    ``/healthz`` there is not the app: a break-it review)."""
    parts = urlsplit(url)
    try:
        answer = httpx2.get(f"{parts.scheme}://{parts.netloc}/healthz", timeout=PROBE_TIMEOUT)
        body = answer.json() if answer.status_code == 200 else None
    except (httpx2.HTTPError, ValueError):
        return False
    return isinstance(body, dict) and body.get("service") == SERVICE


def choose_endpoint(client: WorkOSClient, *, public_url: str, named: str | None) -> Endpoint:
    """The endpoint a new webhook secret goes to: *named* (``--endpoint-url``; its events kept when it is
    registered); else, among the enabled endpoints, the only one an app answers at, or this app's
    (*public_url* + ``/webhooks/workos``) when several answer; when none answers (the app is stopped), the only
    enabled one, or this app's. :class:`click.ClickException` listing them otherwise."""
    with translate_errors():
        listed = list(client.webhooks.list_webhook_endpoints(limit=100).auto_paging_iter())
    registered = {ep.endpoint_url: Endpoint(ep.endpoint_url, tuple(ep.events or ())) for ep in listed}
    if named:
        return registered.get(named, Endpoint(named, ()))
    enabled = [ep.endpoint_url for ep in listed if str(getattr(ep.status, "value", ep.status)) == "enabled"]
    ours = public_url.rstrip("/") + "/webhooks/workos"
    live = [url for url in enabled if _answers(url)]
    pool = live or enabled
    chosen = pool[0] if len(pool) == 1 else ours if ours in pool else None
    if chosen is None:
        raise click.ClickException(
            f"the emulator has {len(enabled)} enabled webhook endpoints ({', '.join(enabled) or 'none'}), "
            f"{len(live)} with an app answering, and none is this app's ({ours}): name it with --endpoint-url")
    return registered[chosen]


def register_with_emulator(base_url: str, api_key: str, endpoint: Endpoint, secret: str) -> None:
    """Give *endpoint* the new *secret* at the emulator (its control route; WorkOS itself generates secrets), its
    events kept. :class:`click.ClickException` when the emulator does not answer or refuses."""
    try:
        response = httpx2.post(f"{base_url.rstrip('/')}/_emulator/webhook_endpoints",
                               json={"endpoint_url": endpoint.url, "secret": secret, "events": list(endpoint.events)},
                               headers={"Authorization": f"Bearer {api_key}"}, timeout=10)
    except httpx2.RequestError as exc:  # no answer (HTTPStatusError is not raised here)
        raise click.ClickException(unreachable_message(base_url, type(exc).__name__)) from None
    if response.status_code >= 300:
        raise click.ClickException(f"the emulator refused the endpoint: {response.status_code} {response.text}")
