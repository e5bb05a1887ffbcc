"""Where the acknowledge path's time goes (not a timed test): ``.venv/bin/python -m bench.ack_profile [--events N]``.

In one process, with Flask's test client (no HTTP server, no other process): signed ``dsync.user.*`` events posted
to the minimal pipeline (``bench/minimal_pipeline.py``) and to our ``POST /webhooks/workos`` with the appliers
off, on the same private PostgreSQL database (``BENCH_DATABASE_URL``). Prints the CPU seconds per request of each
(``time.process_time``: this process's CPU, what a gunicorn worker spends), their ratio measured in the same run,
and the app's top functions by cumulative CPU time under ``cProfile`` (``--top``).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import tempfile
import time
from pathlib import Path
from typing import Any

from flask_migrate import upgrade
from sqlalchemy import create_engine

from bench import minimal_pipeline
from bench.dsync_bench import SECRET, app_config, private_database, user_payload
from bench.options import add_duration
from hatidata_auth import create_app
from hatidata_auth.causes import Actor
from hatidata_auth.extensions import db
from hatidata_auth.services.organizations import sync_from_workos
from tests.support.dsync import sign
from workos_emulator.testing import EmulatorServer


def _bodies(count: int, offset: int) -> list[str]:
    return [json.dumps(user_payload(offset + n, 0), separators=(",", ":")) for n in range(count)]


def _post_all(client: Any, bodies: list[str], duration: float | None = None) -> float:
    """CPU seconds per request for posting *bodies* (each must be acknowledged), for at most *duration* seconds."""
    start, deadline, sent = time.process_time(), time.monotonic() + (duration or float("inf")), 0
    for body in bodies:
        response = client.post("/webhooks/workos", data=body, headers={
            "WorkOS-Signature": sign(SECRET, body), "Content-Type": "application/json"})
        assert response.status_code == 200, response.get_data(as_text=True)
        sent += 1
        if time.monotonic() > deadline:
            break
    return (time.process_time() - start) / sent


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's options."""
    parser = argparse.ArgumentParser(prog="bench.ack_profile")
    parser.add_argument("--events", type=int, default=1500, help="events per measured round (3 rounds each)")
    parser.add_argument("--top", type=int, default=30, help="functions listed from the profile")
    add_duration(parser, "seconds each measured round (and the profiled one) posts for at most")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    url = os.environ.get("BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    with tempfile.TemporaryDirectory() as tmp, private_database(url) as database_url, \
            EmulatorServer(data_dir=tmp) as emulator:
        os.environ["HATIDATA_INSTANCE_PATH"] = str(Path(tmp) / "instance")
        engine = create_engine(database_url)
        minimal_pipeline.create_tables(engine)
        engine.dispose()
        minimal = minimal_pipeline.create_app(database_url, SECRET).test_client()
        app = create_app({**app_config(database_url, emulator.url), "HATIDATA_INBOX_APPLIERS": 0})
        with app.app_context():
            upgrade()
            sync_from_workos(db.session(), app.extensions["hatidata_workos"].client, Actor.system("bench"))
            db.session.remove()
        ours = app.test_client()
        warm = min(200, args.events)
        _post_all(minimal, _bodies(warm, 900_000))
        _post_all(ours, _bodies(warm, 900_000))
        for r in range(3):  # interleaved, against the drift of a shared machine
            base = _post_all(minimal, _bodies(args.events, r * args.events), args.duration)
            mine = _post_all(ours, _bodies(args.events, r * args.events), args.duration)
            print(f"round {r}: minimal {base * 1e3:.3f} ms CPU/request, ours {mine * 1e3:.3f} ms; "
                  f"ours/minimal CPU {mine / base:.2f} (throughput ratio {base / mine:.2f})")
        profiler = cProfile.Profile(time.process_time)  # CPU time: a wait for PostgreSQL costs the worker none
        bodies = _bodies(args.events, 500_000)
        profiler.enable()
        _post_all(ours, bodies, args.duration)
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(args.top)
        print(out.getvalue())


if __name__ == "__main__":
    main()
