"""``rotate-secret webhook-secret`` against the emulator gives the new secret to the endpoint the emulator already
delivers to, never to a URL guessed from this shell's settings: a new user's walk-through ran it beside
``make run`` with another port exported and the secret went to an endpoint nothing listened at (every delivery then
failed its signature). Without ``--endpoint-url`` it takes the endpoint registered for this app's
``HATIDATA_PUBLIC_URL``, else the only one registered; with several and none this app's, it names them, changes
nothing and exits 1."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from tests.test_audit_cli import _cli

ELSEWHERE = ["http://127.0.0.1:8123/webhooks/workos", "http://127.0.0.1:8124/webhooks/workos"]


def _endpoints(emulator: Any) -> dict[str, str]:
    return {ep["endpoint_url"]: ep["secret"] for ep in emulator.emulator.store.webhook_endpoints.values()}


def _register(emulator: Any, urls: list[str]) -> None:
    emulator.emulator.store.webhook_endpoints.clear()
    for url in urls:
        emulator.emulator.store.webhook_endpoints[url] = {"id": url, "endpoint_url": url, "secret": "whsec_old",
                                                          "status": "enabled", "events": [],
                                                          "created_at": "2026-01-01T00:00:00.000Z",
                                                          "updated_at": "2026-01-01T00:00:00.000Z"}


def _new_secret(output: str) -> str:
    return next(line for line in output.splitlines() if line.startswith("WORKOS_WEBHOOK_SECRET=")).split("=", 1)[1]


@pytest.mark.parametrize("registered", [[ELSEWHERE[0]], ["ours", *ELSEWHERE], [ELSEWHERE[1], "ours"]])
def test_the_new_secret_goes_to_the_endpoint_the_emulator_delivers_to(app: Flask, emulator: Any,
                                                                      registered: list[str]) -> None:
    ours = f"{app.config['HATIDATA_PUBLIC_URL'].rstrip('/')}/webhooks/workos"
    urls = [ours if u == "ours" else u for u in registered]
    _register(emulator, urls)
    result = _cli(app, "rotate-secret", "webhook-secret")
    assert result.exit_code == 0, result.output
    chosen = ours if ours in urls else urls[0]
    assert f"registered the new secret with the emulator for {chosen}" in result.output
    after = _endpoints(emulator)
    assert set(after) == set(urls)  # no endpoint added
    assert after[chosen] == _new_secret(result.output)
    assert all(secret == "whsec_old" for url, secret in after.items() if url != chosen)


@pytest.mark.parametrize("registered", [[], ELSEWHERE])
def test_no_endpoint_is_guessed(app: Flask, emulator: Any, registered: list[str]) -> None:
    _register(emulator, registered)
    result = _cli(app, "rotate-secret", "webhook-secret")
    assert result.exit_code == 1
    assert "name the app's with --endpoint-url" in result.output
    assert all(url in result.output for url in registered)
    assert "WORKOS_WEBHOOK_SECRET=" not in result.output
    assert _endpoints(emulator) == dict.fromkeys(registered, "whsec_old")


def test_an_endpoint_named_is_the_one_registered(app: Flask, emulator: Any) -> None:
    _register(emulator, ELSEWHERE)
    result = _cli(app, "rotate-secret", "webhook-secret", "--endpoint-url", ELSEWHERE[1])
    assert result.exit_code == 0, result.output
    assert _endpoints(emulator) == {ELSEWHERE[0]: "whsec_old", ELSEWHERE[1]: _new_secret(result.output)}
