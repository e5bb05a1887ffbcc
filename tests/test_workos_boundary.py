"""The WorkOS boundary: only ``hatidata_auth/workos/`` touches the SDK's internals or its error classes.

Every other module of the app and of the bundled plugins catches our ``WorkOSFailure`` family; none imports
``workos._*``, names an SDK exception class, or recognises one by its class name.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import workos

ROOT = Path(__file__).resolve().parents[1]
BOUNDARY = ROOT / "hatidata_auth" / "workos"
CHECKED = ("hatidata_auth", "plugins")


def _sdk_exception_names() -> frozenset[str]:
    """Every exception class the SDK defines, by name, in any of its modules (public or private)."""
    names: set[str] = set()
    for info in pkgutil.walk_packages(workos.__path__, "workos."):
        try:
            module = importlib.import_module(info.name)
        except ImportError:  # optional extras of the SDK
            continue
        for name, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, BaseException) \
                    and value.__module__.startswith("workos"):
                names.add(name)
    return frozenset(names)


SDK_EXCEPTIONS = _sdk_exception_names()


def _calls_workos(body: list[ast.stmt]) -> bool:
    """Whether *body* calls an SDK resource method: ``client.sso.x(...)``, ``ctx.client.y.z(...)``."""
    for node in (n for stmt in body for n in ast.walk(stmt)):
        if not isinstance(node, ast.Call):
            continue
        names, chain = [], node.func
        while isinstance(chain, ast.Attribute):
            names.append(chain.attr)
            chain = chain.value
        if isinstance(chain, ast.Name):
            names.append(chain.id)
        names.reverse()  # e.g. ["ctx", "client", "directory_sync", "get_directory"]
        if "client" in names and len(names) - names.index("client") >= 3:
            return True
    return False


def _catches_everything(handler: ast.ExceptHandler) -> bool:
    kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(k is None or (isinstance(k, ast.Name) and k.id in ("Exception", "BaseException")) for k in kinds)


def violations(source: str) -> list[str]:
    """What in *source* crosses the boundary: private SDK imports, SDK exception names (imported, caught,
    referenced as ``workos.X``), string literals spelling an SDK exception's name, and ``except Exception``
    around a direct call of the SDK client (which classifies WorkOS's errors by catching everything)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Try) and _calls_workos(node.body) and any(map(_catches_everything, node.handlers)):
            found.append(f"except Exception around a WorkOS call (line {node.lineno})")
        elif isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.startswith("workos._")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "workos":
            if (node.module or "").startswith("workos._"):
                found.append(f"from {node.module} import")
            found += [f"from {node.module} import {a.name}" for a in node.names if a.name in SDK_EXCEPTIONS]
        elif isinstance(node, ast.Attribute) and node.attr in SDK_EXCEPTIONS:
            found.append(f"attribute .{node.attr}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in SDK_EXCEPTIONS:
            found.append(f"class-name check {node.value!r}")
    return found


def _modules() -> Iterator[Path]:
    for package in CHECKED:
        for path in sorted((ROOT / package).rglob("*.py")):
            if BOUNDARY not in path.parents:
                yield path


def test_the_sdk_defines_the_error_classes_the_check_looks_for() -> None:
    assert {"APIError", "NotFoundError", "RateLimitExceededError", "ServerError", "WorkOSError",
            "WorkOSConnectionError", "WorkOSTimeoutError", "TransportError"} <= SDK_EXCEPTIONS


@pytest.mark.parametrize("source", [
    "from workos._errors import APIError",
    "import workos._http",
    "from workos._http import resolve_sync_backend",
    "from workos import ServerError",
    "import workos\ntry:\n    pass\nexcept workos.RateLimitExceededError:\n    pass",
    "try:\n    pass\nexcept Exception as exc:\n    if type(exc).__name__ == 'NotFoundError':\n        raise",
    "try:\n    pass\nexcept Exception as exc:\n    if exc.__class__.__name__ in ('ConflictError', 'X'):\n        raise",
    "try:\n    client.sso.get_connection('conn_x')\nexcept Exception:\n    pass",
    "try:\n    ctx.client.directory_sync.get_directory(d)\nexcept (ValueError, BaseException):\n    pass",
])
def test_the_check_sees_each_way_of_crossing_the_boundary(source: str) -> None:
    assert violations(source)


def test_only_the_workos_package_touches_sdk_internals_and_errors() -> None:
    checked = list(_modules())
    assert len(checked) > 50  # the whole app and the plugins, not an empty glob
    offenders = {str(p.relative_to(ROOT)): v for p in checked if (v := violations(p.read_text(encoding="utf-8")))}
    assert offenders == {}


def test_the_workos_package_is_where_the_sdk_errors_are_named() -> None:
    named = [v for p in sorted(BOUNDARY.glob("*.py")) for v in violations(p.read_text(encoding="utf-8"))]
    assert any("RateLimitExceededError" in v for v in named)


def _app_imports(path: Path) -> set[str]:
    """The ``hatidata_auth`` modules a module of the boundary imports (absolute names), inside functions too."""
    package = "hatidata_auth.workos"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            found.add(f"{base}.{node.module}" if node.module else base)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hatidata_auth"):
            found.add(str(node.module))
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("hatidata_auth")}
    return found


def test_the_boundary_is_the_lowest_layer() -> None:
    imported = set().union(*(_app_imports(p) for p in BOUNDARY.glob("*.py")))
    assert imported  # the package does build on errors and metrics
    outside = {m for m in imported if not m.startswith("hatidata_auth.workos")}
    assert outside <= {"hatidata_auth.errors", "hatidata_auth.metrics", "hatidata_auth.lasting_effects"}


@pytest.mark.parametrize("module", ["metrics.py", "lasting_effects.py"])
def test_what_the_boundary_builds_on_imports_no_flask_and_nothing_of_the_app(module: str) -> None:
    tree = ast.parse((BOUNDARY.parent / module).read_text(encoding="utf-8"))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {("." * n.level) + (n.module or "") for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not {m for m in imported if m.startswith((".", "hatidata_auth", "flask", "sqlalchemy"))}, imported
