"""gunicorn's access log (``config/gunicorn.conf.py``, :mod:`hatidata_auth.gunicorn_logger`): one JSON line per
request when ``GUNICORN_ACCESS_LOG`` turns it on; when it is off, no request builds a line at all (gunicorn would,
for a logger with no handler, because the config has a ``logconfig_dict``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2
import pytest
from flask import Flask

from tests.support.processes import ROOT, AppProcess, app_settings

# Run apart: gunicorn's logger applies the config's logconfig_dict to the process's logging.
BUILT = """
import os, runpy, socket, sys
from datetime import timedelta
from types import SimpleNamespace
from gunicorn.config import Config
settings = runpy.run_path(os.path.join({root!r}, "config", "gunicorn.conf.py"))
cfg = Config()
for name in ("accesslog", "access_log_format", "logconfig_dict", "logger_class"):
    cfg.set(name, settings[name])
statsd = None
if os.environ.get("STATSD") == "on":  # gunicorn's --statsd-host, at a UDP socket of ours
    statsd = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    statsd.bind(("127.0.0.1", 0))
    statsd.settimeout(5)
    cfg.set("statsd_host", "127.0.0.1:%d" % statsd.getsockname()[1])
log = cfg.logger_class(cfg)
built = []
atoms = log.atoms
log.atoms = lambda *args: built.append(1) or atoms(*args)
environ = {{"REQUEST_METHOD": "GET", "RAW_URI": "/healthz", "SERVER_PROTOCOL": "HTTP/1.1", "PATH_INFO": "/healthz"}}
response = SimpleNamespace(status="200 OK", headers=[("X-Request-ID", "r1")], sent=2)
for _ in range(3):
    log.access(response, SimpleNamespace(headers=[("HOST", "x")]), environ, timedelta(microseconds=5))
metrics = set()
while statsd is not None and "gunicorn.request.status.200" not in metrics:
    metrics.add(statsd.recv(512).decode().split(":")[0])
print(type(log).__name__, len(built), ",".join(sorted(m for m in metrics if m.startswith("gunicorn.request"))))
"""


def _built(setting: str, statsd: str = "off") -> list[str]:
    done = subprocess.run([sys.executable, "-c", BUILT.format(root=str(ROOT))], capture_output=True, text=True,
                          env={**os.environ, "GUNICORN_ACCESS_LOG": setting, "STATSD": statsd}, cwd=str(ROOT),
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.split("\n")[0].split(" ")


@pytest.mark.parametrize(("setting", "lines"), [("off", 0), ("/dev/null", 0), ("", 0), ("-", 3)])
def test_a_line_is_built_only_when_the_access_log_is_on(setting: str, lines: int) -> None:
    assert _built(setting) == ["AccessLogger", str(lines), ""]


@pytest.mark.parametrize(("setting", "lines"), [("off", 0), ("-", 3)])
def test_statsd_still_gets_every_request_with_the_access_log_on_or_off(setting: str, lines: int) -> None:
    # gunicorn switches to its statsd logger for --statsd-host only while logger_class is its default
    assert _built(setting, statsd="on") == [
        "AccessStatsd", str(lines), "gunicorn.request.duration,gunicorn.request.status.200,gunicorn.requests"]


def _access_lines(text: str, path: str) -> list[dict[str, Any]]:
    found = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("logger") == "gunicorn.access" and path in str(record.get("message")):
            found.append(record)
    return found


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["-", "off"])
def test_gunicorn_logs_each_request_only_with_the_access_log_on(app: Flask, app_config: dict[str, Any],
                                                                 tmp_path: Path, setting: str) -> None:
    process = AppProcess(app_settings(app_config), tmp_path / "srv", workers=1, name="access",
                         env={"GUNICORN_ACCESS_LOG": setting})
    with process:
        for _ in range(3):
            assert httpx2.get(f"{process.url}/healthz?probe=access-log", timeout=10).status_code == 200
    lines = _access_lines(process.log_text(), "/healthz")
    if setting == "off":
        assert lines == []
    else:
        assert len(lines) >= 3  # the start-up probe's too
        assert all("probe=" not in str(line["message"]) for line in lines)  # never a query string
