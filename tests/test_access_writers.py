"""Every change of a member's access goes through ``provisioning.set_access`` (audit + cache eviction).

Whatever its source (sign-in, WorkOS membership webhooks, directory sync, admin API, CLI), a role or status
change written anywhere else would skip the ``membership.*`` audit event and the eviction of the member's cached
sessions and API keys (which carry the role). This reads the source of every module of the product and fails
when a new writer appears.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = [ROOT / "hatidata_auth", ROOT / "plugins"]
THE_PATH = ROOT / "hatidata_auth" / "services" / "provisioning.py"
ACCESS_FIELDS = {"role", "role_source", "status"}


def _modules() -> list[Path]:
    return sorted(p for package in PACKAGES if package.exists() for p in package.rglob("*.py") if p != THE_PATH)


def _targets(node: ast.AST) -> Iterator[ast.expr]:
    if isinstance(node, ast.Assign):
        for target in node.targets:
            yield from _flatten(target)
    elif isinstance(node, ast.AugAssign | ast.AnnAssign):
        yield from _flatten(node.target)


def _flatten(target: ast.expr) -> Iterator[ast.expr]:
    if isinstance(target, ast.Tuple | ast.List):
        for element in target.elts:
            yield from _flatten(element)
    else:
        yield target


def _is_membership(expr: ast.expr) -> bool:
    return "member" in ast.unparse(expr).lower()


def _writers(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        for target in _targets(node):
            if isinstance(target, ast.Attribute) and target.attr in ACCESS_FIELDS and _is_membership(target.value):
                found.append(f"{path.name}:{node.lineno} assigns {ast.unparse(target)}")
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        if name == "setattr" and node.args and _is_membership(node.args[0]):
            found.append(f"{path.name}:{node.lineno} setattr on a membership")
        if name in ("update", "sa.update", "sqlalchemy.update") and node.args and _is_membership(node.args[0]):
            found.append(f"{path.name}:{node.lineno} bulk update of memberships")
        if name.rpartition(".")[2] == "Membership":
            fields = {kw.arg: kw.value for kw in node.keywords if kw.arg}
            status = fields.get("status")
            role = fields.get("role")
            pending = isinstance(status, ast.Constant) and status.value == "pending"
            roleless = role is None or (isinstance(role, ast.Constant) and role.value is None)
            if not (pending and roleless):
                found.append(f"{path.name}:{node.lineno} creates a membership with access "
                             f"(status={ast.unparse(status) if status else None}, "
                             f"role={ast.unparse(role) if role else None}) outside set_access")
    return found


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_only_set_access_writes_a_members_role_or_status(path: Path) -> None:
    assert _writers(path) == []


def test_the_guard_sees_each_kind_of_writer(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "membership.role = 'admin'\n"
        "m.role, membership.role_source = 'x', 'manual'\n"
        "membership.status = 'active'\n"
        "setattr(membership, 'role', 'admin')\n"
        "db.execute(update(Membership).values(role='admin'))\n"
        "Membership(organization_id=o, user_id=u, status='active', role='viewer')\n"
        "Membership(organization_id=o, user_id=u, status='pending', role='viewer')\n"
        "Membership(organization_id=o, user_id=u, status='pending', role=None)\n"
        "key.status = 'revoked'\n", encoding="utf-8")
    found = _writers(sample)
    assert sorted({line.split(" ", 1)[0] for line in found}) == [
        "sample.py:1", "sample.py:2", "sample.py:3", "sample.py:4", "sample.py:5", "sample.py:6", "sample.py:7"]
