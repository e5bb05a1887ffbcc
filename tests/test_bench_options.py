"""Every benchmark invocation the README and the Makefile show is accepted (issue #15 item 9), checked by parsing
it with the benchmark's own argparse parser (``build_parser()``), without running anything.

* ``make bench BENCH=<name>  # ... --option VALUE ...``: each option in that line's comment, with each of its
  ``a|b|c`` values, parses with that benchmark's parser;
* ``BENCH_ARGS="..."`` on a line naming ``BENCH=<name>`` parses with that benchmark's; anywhere else (the generic
  example, ``--duration 10``) with every benchmark's.
"""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
MAKEFILE = (ROOT / "Makefile").read_text()
BENCHES = re.search(r"BENCH=((?:\w+\|)+\w+)", MAKEFILE)
assert BENCHES is not None, "the Makefile lists the benchmarks as BENCH=a|b|c"
NAMES = BENCHES.group(1).split("|")


def _parser(name: str) -> argparse.ArgumentParser:
    module = importlib.import_module(f"bench.{name}")
    parser = module.build_parser()
    assert isinstance(parser, argparse.ArgumentParser)
    parser.exit_on_error = False
    return parser


def _parses(name: str, argv: list[str]) -> None:
    parser = _parser(name)
    try:
        parser.parse_args(argv)
    except (argparse.ArgumentError, SystemExit) as exc:
        pytest.fail(f"bench.{name} rejects {shlex.join(argv)!r} shown in the README/Makefile: {exc}")


def _logical_lines(text: str) -> list[str]:
    """Lines, with a ``make bench`` line's continuation comments (indented ``# ...``) joined to it."""
    lines: list[str] = []
    for line in text.splitlines():
        if lines and re.match(r"\s+#", line) and "make bench" in lines[-1]:
            lines[-1] += " " + line.strip().lstrip("#")
        else:
            lines.append(line)
    return lines


def _shown_options(name: str, comment: str) -> list[list[str]]:
    """Each option the comment shows for *name*, as argv lists (one per alternative value)."""
    parser = _parser(name)
    actions = {option: action for action in parser._actions for option in action.option_strings}
    shown: list[list[str]] = []
    for match in re.finditer(r"(--[a-z][a-z-]*)(?:\s+([^\s;:)]+))?", comment):
        option, value = match.group(1), (match.group(2) or "").rstrip(",")
        assert option in actions, f"the README shows {option} for bench.{name}, which has no such option"
        if actions[option].nargs == 0:
            shown.append([option])
        else:
            assert value, f"{option} needs a value in the README's example"
            shown += [[option, alternative] for alternative in value.split("|")]
    return shown


INVOCATIONS: list[tuple[str, list[str]]] = []
for source in (README, MAKEFILE):
    for line in _logical_lines(source):
        named = re.search(r"BENCH=(\w+)\b", line)
        targets = [named.group(1)] if named and named.group(1) in NAMES else NAMES
        for args in re.findall(r'BENCH_ARGS="([^"]*)"', line):
            INVOCATIONS += [(name, shlex.split(args)) for name in targets]
        if named and line.lstrip().startswith("make bench") and "#" in line:
            INVOCATIONS += [(named.group(1), argv) for argv in _shown_options(named.group(1), line.split("#", 1)[1])]


def test_the_readme_shows_every_benchmark_and_options() -> None:
    assert {name for name, _ in INVOCATIONS} == set(NAMES)
    assert ("dsync_bench", ["--duration", "10"]) in INVOCATIONS


@pytest.mark.parametrize(("name", "argv"), INVOCATIONS, ids=[f"{n}:{' '.join(a)}" for n, a in INVOCATIONS])
def test_each_shown_invocation_parses(name: str, argv: list[str]) -> None:
    _parses(name, argv)
