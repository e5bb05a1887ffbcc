"""Where the benchmarks' webhook appliers run: ``threads`` (the default, ``HATIDATA_INBOX_APPLIERS`` threads in each
gunicorn worker) or ``process`` (no applier thread in the workers; one ``flask --app wsgi hatidata inbox work``
process beside them, started at a lower CPU priority, as docs/deploy.md describes for separate appliers)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODES = ("threads", "process")


def add_options(parser: object) -> None:
    """``--appliers threads|process`` and ``--applier-nice N`` (the separate process's niceness, 0-19)."""
    parser.add_argument("--appliers", choices=MODES, default="threads",  # type: ignore[attr-defined]
                        help="applier threads in each gunicorn worker, or one separate `inbox work` process")
    parser.add_argument("--applier-nice", type=int, default=10, choices=range(20),  # type: ignore[attr-defined]
                        metavar="0-19", help="with --appliers process: that process's niceness (default 10)")


def server_env(env: dict[str, str], mode: str) -> dict[str, str]:
    """*env* for gunicorn: no applier thread in the workers when the appliers run apart."""
    return {**env, "HATIDATA_INBOX_APPLIERS": "0"} if mode == "process" else env


@contextmanager
def separate(env: dict[str, str], mode: str, nice: int, threads: int = 2) -> Iterator[list[int]]:
    """Run the separate applier process while the block runs (nothing with ``threads``); yields its pids."""
    if mode != "process":
        yield []
        return
    worker = subprocess.Popen(
        [str(ROOT / ".venv/bin/flask"), "--app", "wsgi", "hatidata", "inbox", "work", "--threads", str(threads)],
        cwd=ROOT, env=env, preexec_fn=lambda: os.nice(nice))
    try:
        yield [worker.pid]
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=15)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
