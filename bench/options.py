"""The options every benchmark accepts, so that what the README and the Makefile show works with each of them
(``make bench BENCH=<any> BENCH_ARGS="--duration 10"``; ``tests/test_bench_options.py`` parses every
invocation the README shows with each benchmark's parser)."""

from __future__ import annotations

import argparse


def add_duration(parser: argparse.ArgumentParser, meaning: str, default: float | None = None) -> None:
    """``--duration SECONDS``: how long the benchmark measures; *meaning* says what it bounds there."""
    parser.add_argument("--duration", type=float, default=default, metavar="SECONDS", help=meaning)
