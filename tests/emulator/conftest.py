"""Fixtures for the WorkOS emulator tests: a real emulator on a free port, SDK clients, a webhook receiver."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx2
import pytest
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response
from workos import WorkOSClient

from tests.support.openapi import RecordingHTTPClient
from workos_emulator.testing import EmulatorServer

API_KEY = "sk_test_emulator"
CLIENT_ID = "client_emulator"

ACME = "org_01HTDQ8A100000000000000001"
GLOBEX = "org_01HTDQ8A200000000000000001"
INITECH = "org_01HTDQ8A300000000000000001"
UMBRELLA = "org_01HTDQ8A400000000000000001"
ACME_CONN = "conn_01HTDQ8C100000000000000001"
GLOBEX_CONN = "conn_01HTDQ8C200000000000000001"
INITECH_CONN = "conn_01HTDQ8C300000000000000001"
UMBRELLA_CONN = "conn_01HTDQ8C400000000000000001"
ACME_DIR = "directory_01HTDQ8D100000000000000001"
GLOBEX_DIR = "directory_01HTDQ8D200000000000000001"
ACME_ADMINS = "directory_group_01HTDQ8E100000000000000001"
ACME_DEVS = "directory_group_01HTDQ8E100000000000000002"
ACME_ADMIN_DU = "directory_user_01HTDQ8F100000000000000001"
ACME_DEV_DU = "directory_user_01HTDQ8F100000000000000002"
ACME_ADMIN_USER = "user_01HTDQ8G100000000000000001"
CONSULTANT_USER = "user_01HTDQ8G900000000000000001"
REDIRECT_URI = "http://localhost:5000/auth/callback"


class _Quiet(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


@pytest.fixture(scope="session")
def emu_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorServer]:
    """One emulator (demo seed, fast webhook retries) for the emulator test session."""
    server = EmulatorServer(
        data_dir=str(tmp_path_factory.mktemp("emu")), webhook_retry_base=0.05, webhook_max_attempts=4
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def emu(emu_server: EmulatorServer) -> EmulatorServer:
    """The emulator, reset to the demo seed."""
    emu_server.reset()
    return emu_server


@pytest.fixture
def recorder(emu: EmulatorServer) -> Iterator[RecordingHTTPClient]:
    """An httpx2 client recording every SDK exchange."""
    client = RecordingHTTPClient(api_base_url=emu.url, follow_redirects=False)
    yield client
    client.close()


@pytest.fixture
def workos(emu: EmulatorServer, recorder: RecordingHTTPClient) -> Iterator[WorkOSClient]:
    """The real SDK against the emulator (no retries)."""
    client = WorkOSClient(
        api_key=API_KEY, client_id=CLIENT_ID, base_url=emu.url, max_retries=0, http_client=recorder
    )
    yield client
    client.close()


@pytest.fixture
def http(emu: EmulatorServer) -> Iterator[httpx2.Client]:
    """Raw HTTP client with the API key (control API, browser-ish calls); no redirects followed."""
    client = httpx2.Client(base_url=emu.url, headers={"Authorization": f"Bearer {API_KEY}"},
                           follow_redirects=False, timeout=10)
    yield client
    client.close()


@dataclass
class Receiver:
    """A webhook receiver on a free port; ``fail_first`` requests answer 500."""

    url: str = ""
    fail_first: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(r["body"]) for r in self.requests if r["status"] == 200]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A local webhook endpoint recording every request."""
    rec = Receiver()

    @Request.application
    def app(request: Request) -> Response:
        with rec.lock:
            status = 500 if len(rec.requests) < rec.fail_first else 200
            rec.requests.append({"body": request.get_data(as_text=True),
                                 "signature": request.headers.get("WorkOS-Signature", ""), "status": status})
        return Response("ok" if status == 200 else "fail", status=status)

    server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_Quiet)
    rec.url = f"http://127.0.0.1:{server.server_port}/webhooks/workos"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield rec
    server.shutdown()
    thread.join(timeout=5)
    server.server_close()
