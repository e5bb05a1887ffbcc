"""``config/gunicorn.conf.py`` read as gunicorn reads it: every name it sets is one of the installed gunicorn's
settings (a misspelt or retired one would be ignored without a word), and gunicorn's control socket is off unless
``GUNICORN_CONTROL_SOCKET`` names a path (its default, ``~/.gunicorn/gunicorn.ctl``, is one path for every instance
on the machine: a second one took it over and removed it when it stopped, a break-it review's finding)."""

from __future__ import annotations

import runpy
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gunicorn.config import Config

from tests.support.processes import ROOT

CONF = ROOT / "config" / "gunicorn.conf.py"
HOOKS = {"on_starting", "child_exit", "post_worker_init", "worker_exit"}


def _settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, object]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return {k: v for k, v in runpy.run_path(str(CONF)).items() if not k.startswith("_") and k != "os"}


def test_every_name_the_config_sets_is_a_gunicorn_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    known = set(Config().settings)
    assert set(_settings(monkeypatch)) - known == set()
    assert known >= HOOKS


def test_the_control_socket_is_off_unless_a_path_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("GUNICORN_CONTROL_SOCKET", raising=False)
    default = _settings(monkeypatch)
    assert (default["control_socket_disable"], default["control_socket"]) == (True, None)
    path = str(tmp_path / "hd.ctl")
    named = _settings(monkeypatch, GUNICORN_CONTROL_SOCKET=path)
    assert (named["control_socket_disable"], named["control_socket"]) == (False, path)


APP = "def app(environ, start_response):\n    start_response('200 OK', [])\n    return [b'ok']\n"


def test_two_instances_leave_no_socket_in_the_home_folder(tmp_path: Path) -> None:
    """Two real gunicorn masters with the config's control-socket settings (the app's own hooks left out: this
    is gunicorn's behaviour, not the app's) write nothing under ``$HOME/.gunicorn``."""
    (tmp_path / "tinyapp.py").write_text(APP)
    conf = tmp_path / "conf.py"
    conf.write_text("import runpy\n"
                    f"_s = runpy.run_path({str(CONF)!r})\n"
                    "control_socket, control_socket_disable = _s['control_socket'], _s['control_socket_disable']\n"
                    "bind, workers = '127.0.0.1:0', 1\n")
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)}
    servers = [subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(conf), "tinyapp:app"], cwd=tmp_path,
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)]
    try:
        time.sleep(3)
        assert [s.poll() for s in servers] == [None, None], [s.stderr.read() for s in servers if s.stderr]
        assert not (home / ".gunicorn").exists()
    finally:
        for server in servers:
            server.terminate()
            server.wait(10)
