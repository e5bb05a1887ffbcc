"""Test helper: run the emulator on 127.0.0.1 with a free port in a background thread."""

from __future__ import annotations

import tempfile
import threading
from types import TracebackType
from typing import Any

from flask import Flask
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from . import demo_seed_path
from .app import create_app, reset
from .state import EXTENSION_KEY, Emulator


class EmulatorServer:
    """Context manager: ``with EmulatorServer(seed) as emu: WorkOSClient(base_url=emu.url, ...)``.

    ``seed_path=None`` loads the bundled demo seed; pass ``""`` for an empty emulator.

    Extra keyword arguments go to :func:`workos_emulator.create_app` (``public_url`` defaults to ``url``).
    """

    def __init__(self, seed_path: str | None = None, data_dir: str | None = None, **app_kwargs: Any) -> None:
        if seed_path is None:
            seed_path = demo_seed_path()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="workos-emulator-")
            data_dir = self._tmp.name
        self._server: BaseWSGIServer = make_server(
            "127.0.0.1", 0, _placeholder, threaded=True, request_handler=_QuietHandler
        )
        self.port: int = self._server.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        app_kwargs.setdefault("public_url", self.url)
        self.app: Flask = create_app(seed_path, data_dir=data_dir, **app_kwargs)
        self._server.app = self.app
        self._thread: threading.Thread | None = None

    @property
    def emulator(self) -> Emulator:
        """The emulator state object (store, keys, dispatcher, faults)."""
        return self.app.extensions[EXTENSION_KEY]

    def start(self) -> EmulatorServer:
        """Start serving in a daemon thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever, name="workos-emulator", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and the webhook worker; remove the temporary data dir."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()
        self.emulator.shutdown()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def reset(self) -> None:
        """Reload the seed (keeps the signing key); clears events, sessions, faults and queued webhooks."""
        reset(self.app)

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class _QuietHandler(WSGIRequestHandler):
    """Request handler without per-request access logging."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Do not log."""


def _placeholder(environ: dict[str, Any], start_response: Any) -> list[bytes]:  # pragma: no cover
    start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
    return [b"starting"]
