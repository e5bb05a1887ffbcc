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

from tests.support.servers import LiveServer
from tests.test_audit_cli import _cli

ELSEWHERE = ["http://127.0.0.1:8123/webhooks/workos", "http://127.0.0.1:8124/webhooks/workos"]


def _endpoints(emulator: Any) -> dict[str, str]:
    return {ep["endpoint_url"]: ep["secret"] for ep in emulator.emulator.store.webhook_endpoints.values()}


def _register(emulator: Any, urls: list[str], *, disabled: tuple[str, ...] = (),
              events: dict[str, list[str]] | None = None) -> None:
    emulator.emulator.store.webhook_endpoints.clear()
    for url in urls:
        emulator.emulator.store.webhook_endpoints[url] = {
            "id": url, "endpoint_url": url, "secret": "whsec_old",
            "status": "disabled" if url in disabled else "enabled", "events": (events or {}).get(url, []),
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
    assert "name it with --endpoint-url" in result.output
    assert all(url in result.output for url in registered)
    assert "WORKOS_WEBHOOK_SECRET=" not in result.output
    assert _endpoints(emulator) == dict.fromkeys(registered, "whsec_old")


def test_an_endpoint_named_is_the_one_registered(app: Flask, emulator: Any) -> None:
    _register(emulator, ELSEWHERE)
    result = _cli(app, "rotate-secret", "webhook-secret", "--endpoint-url", ELSEWHERE[1])
    assert result.exit_code == 0, result.output
    assert _endpoints(emulator) == {ELSEWHERE[0]: "whsec_old", ELSEWHERE[1]: _new_secret(result.output)}


def test_the_endpoint_an_app_answers_at_wins_over_a_stale_one(app: Flask, emulator: Any) -> None:
    """A stale endpoint of an earlier run (this shell's default URL) beside the running app's: the secret goes to
    the one an app answers at (a break-it review: it went to the stale one, the shell's guess)."""
    ours = f"{app.config['HATIDATA_PUBLIC_URL'].rstrip('/')}/webhooks/workos"
    with LiveServer(app) as live:
        running = f"{live.url}/webhooks/workos"
        _register(emulator, [ours, running])
        result = _cli(app, "rotate-secret", "webhook-secret")
    assert result.exit_code == 0, result.output
    assert _endpoints(emulator) == {ours: "whsec_old", running: _new_secret(result.output)}


def test_another_service_answering_healthz_is_not_the_app(app: Flask, emulator: Any) -> None:
    """An endpoint whose host runs some other service with a ``/healthz`` of its own is not where the app runs:
    with no app answering, this app's endpoint gets the secret (the probe took any ``/healthz`` as the app)."""
    other = Flask("other_service")
    other.add_url_rule("/healthz", "healthz", lambda: {"status": "ok"})
    ours = f"{app.config['HATIDATA_PUBLIC_URL'].rstrip('/')}/webhooks/workos"
    with LiveServer(other) as live:
        elsewhere = f"{live.url}/webhooks/workos"
        _register(emulator, [ours, elsewhere])
        result = _cli(app, "rotate-secret", "webhook-secret")
    assert result.exit_code == 0, result.output
    assert _endpoints(emulator) == {ours: _new_secret(result.output), elsewhere: "whsec_old"}


def test_a_disabled_endpoint_is_not_chosen_and_events_are_kept(app: Flask, emulator: Any) -> None:
    """The emulator delivers to enabled endpoints only; the chosen one keeps its event filter and the disabled one
    is left as it was (a break-it review: the command re-enabled a disabled endpoint and dropped its filter)."""
    _register(emulator, ELSEWHERE, disabled=(ELSEWHERE[0],), events={ELSEWHERE[0]: ["dsync.*"],
                                                                     ELSEWHERE[1]: ["dsync.user.created"]})
    result = _cli(app, "rotate-secret", "webhook-secret")
    assert result.exit_code == 0, result.output
    store = {ep["endpoint_url"]: ep for ep in emulator.emulator.store.webhook_endpoints.values()}
    assert (store[ELSEWHERE[0]]["status"], store[ELSEWHERE[0]]["events"], store[ELSEWHERE[0]]["secret"]) == (
        "disabled", ["dsync.*"], "whsec_old")
    assert (store[ELSEWHERE[1]]["status"], store[ELSEWHERE[1]]["events"]) == ("enabled", ["dsync.user.created"])
    assert store[ELSEWHERE[1]]["secret"] == _new_secret(result.output)
