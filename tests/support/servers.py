"""Reusable live servers for tests that need real HTTP into the app (e.g. webhooks sent by the emulator).

The fixtures are registered for every test by ``tests/conftest.py`` (``pytest_plugins``):

- ``live_app``: the ``app`` fixture served by a threaded werkzeug server on a free port (``.url``).
- ``emulator_control``: a small JSON client for the emulator's ``/_emulator/`` control API.
- ``webhooks``: ``emulator_control`` with the live app registered as a webhook endpoint (the app's secret).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server


class LiveServer:
    """A WSGI app served on 127.0.0.1 with a free port, in a daemon thread."""

    def __init__(self, app: Any, *, threaded: bool = True) -> None:
        self._server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=threaded)
        self.port = self._server.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"live-{self.port}", daemon=True)

    def start(self) -> LiveServer:
        """Start serving."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._thread.join(timeout=5)
        self._server.server_close()

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class HttpError(RuntimeError):
    """A non-2xx answer from the control API."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


def http_json(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
              timeout: float = 60.0, raw: bytes | None = None) -> tuple[int, Any]:
    """One JSON request with urllib; returns (status, parsed body or text)."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method,  # test servers on 127.0.0.1
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, text = resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read().decode()
        exc.close()
    try:
        return status, json.loads(text) if text else None
    except ValueError:
        return status, text


class EmulatorControl:
    """The emulator's control API (``/_emulator/...``), which plays the customer's IdP."""

    def __init__(self, base_url: str, api_key: str = "sk_test_emulator") -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"}

    def ctl(self, method: str, path: str, body: Any = None) -> Any:
        """Call a control route: ``ctl("POST", "/directory_users/x/deactivate")``."""
        status, data = http_json(method, f"{self.base_url}/_emulator{path}", body, self.headers)
        if not 200 <= status < 300:
            raise HttpError(status, data)
        return data

    def register_webhook(self, endpoint_url: str, secret: str) -> Any:
        """Deliver every event to *endpoint_url*, signed with *secret*."""
        return self.ctl("POST", "/webhook_endpoints", {"endpoint_url": endpoint_url, "secret": secret})

    def webhook_settings(self, **settings: Any) -> Any:
        """Change delivery switches (duplicate_rate, reorder, delay_ms, paused, ...)."""
        return self.ctl("PUT", "/settings/webhooks", settings)

    def flush(self, timeout: float = 60) -> Any:
        """Wait until queued deliveries are sent."""
        return self.ctl("POST", f"/webhooks/flush?timeout={timeout}")

    def deliveries(self) -> list[dict[str, Any]]:
        """Every webhook delivery so far."""
        data = self.ctl("GET", "/webhook_deliveries")
        return list(data["data"] if isinstance(data, dict) else data)

    def events(self) -> list[dict[str, Any]]:
        """Every recorded event, oldest first."""
        return list(self.ctl("GET", "/events")["data"])


@pytest.fixture
def live_app(app: Flask) -> Iterator[LiveServer]:
    """The app under test served over real HTTP."""
    server = LiveServer(app).start()
    yield server
    server.stop()


@pytest.fixture
def emulator_control(emulator: Any) -> EmulatorControl:
    """The control API of the test emulator."""
    return EmulatorControl(emulator.url)


class DrainingControl(EmulatorControl):
    """The control API of an emulator delivering to *app*: :meth:`flush` also applies what the app's inbox holds
    (the app acknowledges webhooks and applies them later; the tests have no applier threads)."""

    def __init__(self, base_url: str, app: Flask) -> None:
        super().__init__(base_url)
        self.app = app

    def flush(self, timeout: float = 60, *, strict: bool = True) -> Any:
        """Wait until queued deliveries are sent, then apply them. *strict*: every delivery must have been
        accepted at its first attempt; one the app answered otherwise fails the test at once (an event the app
        cannot read is a fidelity fault of the emulator or of the app, never a reason to wait out the retries)."""
        from tests.support.dsync import drain_inbox

        deadline = time.monotonic() + timeout
        while True:
            sent = super().flush(min(1.0, max(0.0, deadline - time.monotonic())))
            refused = [d for d in self.deliveries() if any(
                h.get("status_code") is None or not 200 <= h["status_code"] < 300 for h in d.get("history", ()))]
            if strict and refused:
                raise AssertionError(f"the app refused webhook deliveries: {refused}")
            if sent.get("drained") or time.monotonic() >= deadline:
                break
        drain_inbox(self.app)
        return sent


@pytest.fixture
def webhooks(emulator: Any, live_app: LiveServer, app: Flask) -> EmulatorControl:
    """The control API, with the live app registered as the webhook endpoint (``flush`` applies the inbox)."""
    control = DrainingControl(emulator.url, app)
    control.register_webhook(f"{live_app.url}/webhooks/workos", app.config["WORKOS_WEBHOOK_SECRET"])
    return control
