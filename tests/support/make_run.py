"""`make run` (scripts/run_dev.py) as a new user starts it: on free ports, with an instance folder of the test's own,
stopped with Ctrl-C (SIGINT to its process group)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EMULATOR_API_KEY = "sk_test_emulator"


def start(tmp_path: Path, app_port: int, emulator_port: int, **extra: str) -> tuple[subprocess.Popen[str], Path]:
    """Start `make run` with its instance folder in *tmp_path* and wait for its banner; returns it and its log."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEST_", "HATIDATA_", "WORKOS_", "DATABASE_",
                                                                      "REDIS_"))}
    env.update(PORT=str(app_port), WORKOS_EMULATOR_PORT=str(emulator_port),
               HATIDATA_INSTANCE_PATH=str(tmp_path / "instance"), **extra)
    log = tmp_path / "run.log"
    # Started with SIGINT ignored, as a shell starts a background job: Ctrl-C must stop it all the same.
    proc = subprocess.Popen(  # our own launcher
        ["bash", "-c", 'trap "" INT; exec "$0" scripts/run_dev.py', sys.executable], cwd=ROOT, env=env, text=True,
        stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    deadline = time.monotonic() + 90
    while "HatiData Auth is running" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"make run did not come up:\n{log.read_text()[-3000:]}")
        time.sleep(0.3)
    return proc, log


def stop(proc: subprocess.Popen[str]) -> int:
    """Ctrl-C; returns the launcher's exit code."""
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    return proc.wait(timeout=30)


def emulator_api(port: int, method: str, path: str, body: dict[str, object] | None = None) -> dict[str, object]:
    """Call the emulator's API (or control API) with the emulator's key."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", method=method, data=json.dumps(body).encode() if body else None,
        headers={"Authorization": f"Bearer {EMULATOR_API_KEY}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:  # local test server
        return dict(json.loads(response.read()))
