"""``pyproject.toml`` declares exactly what the shipped code imports.

Every third-party module imported by ``hatidata_auth/``, ``workos_emulator/``, ``plugins/`` and ``migrations/``
comes from a declared runtime dependency (a transitive install is not a declaration), and every declared
runtime dependency is imported somewhere or is one of the few used without an import, named here with why.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("hatidata_auth", "workos_emulator", "plugins", "migrations")
LOCAL = {"hatidata_auth", "workos_emulator", "plugins", "examples", "tests"}
# Used without an import: psycopg is the driver SQLAlchemy loads for postgresql+psycopg:// URLs.
USED_WITHOUT_IMPORT = {"psycopg"}

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _name(requirement: str) -> str:
    """The normalised distribution name of a requirement string (``PyJWT>=2.8`` -> ``pyjwt``)."""
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip())
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


RUNTIME = {_name(r) for r in PROJECT["dependencies"]}
DEV = {_name(r) for r in PROJECT["optional-dependencies"]["dev"]}
# pytest loads these modules of ours as plugins: they may use the test tools.
PYTEST_PLUGINS = {v.split(":")[0] for v in PROJECT["entry-points"]["pytest11"].values()}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m not in LOCAL}


@cache
def _installed() -> dict[str, list[str]]:
    return dict(importlib.metadata.packages_distributions())


def _distributions(module: str) -> set[str]:
    names = _installed().get(module)
    assert names, f"no installed distribution provides {module!r}"
    return {re.sub(r"[-_.]+", "-", n).lower() for n in names}


def _shipped_imports() -> dict[str, set[str]]:
    """Third-party module -> the files importing it."""
    users: dict[str, set[str]] = {}
    for package in SHIPPED:
        for path in sorted((ROOT / package).rglob("*.py")):
            for module in _imports(path):
                users.setdefault(module, set()).add(str(path.relative_to(ROOT)))
    return users


def test_every_imported_package_is_declared() -> None:
    undeclared: dict[str, set[str]] = {}
    for module, files in _shipped_imports().items():
        plugin_only = all(f.removesuffix(".py").replace("/", ".") in PYTEST_PLUGINS for f in files)
        allowed = RUNTIME | DEV if plugin_only else RUNTIME
        if not _distributions(module) & allowed:
            undeclared[module] = files
    assert undeclared == {}


def test_every_declared_dependency_is_used() -> None:
    imported = set().union(*(_distributions(m) for m in _shipped_imports()))
    assert RUNTIME - imported - USED_WITHOUT_IMPORT == set()
    assert USED_WITHOUT_IMPORT <= RUNTIME


def test_the_check_reads_the_declarations() -> None:
    assert {"workos", "pyjwt", "limits", "flask"} <= RUNTIME
    assert "pytest" in DEV
    assert "hatidata_auth.idp.contract" in PYTEST_PLUGINS
