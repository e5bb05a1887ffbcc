"""A rule of the browser tests, checked over all of them: a click that loads another page goes through
``tests.support.browser.click_and_wait``; any other click is followed by a wait for what it brings (``wait_for``,
``wait_for_selector``, ``wait_for_url``, ``expect``) or is marked ``# stays on the page``. A bare click followed by
a read raced the page it loads: ``wait_for_load_state()`` returns at once while the old page is still shown, so the
read saw the old page (a filter's result counted 0 in CI)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).parent
WAITS = {"wait_for", "wait_for_selector", "wait_for_url", "wait_for_function", "expect", "expect_navigation"}


def _calls(node: ast.AST) -> set[str]:
    names = set()
    for call in ast.walk(node):
        if isinstance(call, ast.Call):
            func = call.func
            names.add(func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", ""))
    return names


def _bare_clicks(path: Path) -> list[str]:
    source = path.read_text()
    lines = source.splitlines()
    found = []
    for block in ast.walk(ast.parse(source)):
        body = getattr(block, "body", None)
        if not isinstance(body, list):
            continue
        for index, statement in enumerate(body):
            if not (isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call)
                    and isinstance(statement.value.func, ast.Attribute) and statement.value.func.attr == "click"):
                continue
            if "# stays on the page" in lines[statement.lineno - 1]:
                continue
            following = body[index + 1] if index + 1 < len(body) else None
            if following is None or not (_calls(following) & WAITS):
                found.append(f"{path.relative_to(TESTS.parent)}:{statement.lineno}")
    return found


def test_every_click_waits_for_what_it_brings() -> None:
    users = [p for p in TESTS.rglob("*.py") if "playwright" in p.read_text() or "support.browser" in p.read_text()]
    assert len(users) >= 8  # the walk found the browser tests
    bare = [where for path in users if path.name != "browser.py" for where in _bare_clicks(path)]
    assert bare == [], "use click_and_wait (or wait for what the click brings): " + ", ".join(bare)
