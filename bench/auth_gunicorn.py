"""Gunicorn settings of ``bench.auth``: the project's (``config/gunicorn.conf.py``, every setting and hook), and in
each worker, after the project's ``post_worker_init``, the warm-up listener of :mod:`bench.auth_warm` (its port
written under ``BENCH_WARM_DIR``). The measured requests go through gunicorn's own socket and loop unchanged."""

import os
import runpy
from typing import Any

_PROJECT = runpy.run_path(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                       "config", "gunicorn.conf.py"))
globals().update({name: value for name, value in _PROJECT.items() if not name.startswith("__")})


def post_worker_init(worker: Any) -> None:  # gunicorn hook
    from bench.auth_warm import listen

    _PROJECT["post_worker_init"](worker)
    listen(worker.wsgi, os.environ["BENCH_WARM_DIR"])
