"""Every writer of ``users`` that creates a person or moves an email onto one is known, so that each follows the
one-person-per-email rule (``services.person_email``: the email's lock, then the look) and is raced in
``tests/test_person_email_race.py`` (PostgreSQL) or ``tests/test_directory_people.py``. A new writer fails here until
it is listed: read from the package's source, on every database."""
from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import hatidata_auth

CREATORS = {  # function -> where its race is tested
    ("hatidata_auth.services.sign_in_person", "upsert"): "test_person_email_race.py::test_a_sign_in",
    ("hatidata_auth.services.tenant_admin", "grant_admin"): "test_person_email_race.py::test_the_grant_admin_command",
    ("hatidata_auth.services.events.organization_memberships", "_user_by_workos_id"):
        "test_person_email_race.py::test_an_organization_membership_event",
    # the one statement every directory path inserts a person with (its callers: DIRECTORY_CREATORS)
    ("hatidata_auth.services.directory_people", "_insert_person_statement"): "test_person_email_race.py",
}
DIRECTORY_CREATORS = {  # the callers of directory_people.new_directory_person
    ("hatidata_auth.services.directory_people", "person_for"):
        "test_person_email_race.py::test_a_directory_user_s_first_event, ::test_a_stored_directory_user_s_activation",
    ("hatidata_auth.services.directory_people", "_follow"): "test_directory_people.py (relinks)",
    ("hatidata_auth.services.reconcile", "prepare_people"): "test_person_email_race.py::test_a_resync_page",
}
MOVERS = {
    ("hatidata_auth.services.sign_in_person", "_move_email"):
        "test_person_email_race.py::test_a_sign_in_whose_email_workos_changed_does_not_take_it_from_the_person_made_"
        "meanwhile",
    ("hatidata_auth.services.directory_people", "_follow"):
        "test_directory_people.py (refusals, freed emails), test_breakswap_email_cycle.py",
}


Function = ast.FunctionDef | ast.AsyncFunctionDef


@functools.cache
def _functions() -> tuple[tuple[str, Function, str], ...]:
    """Every function of the package (``async`` ones too): its module's dotted name, its node and its source."""
    root = Path(hatidata_auth.__file__).parent
    found = []
    for path in root.rglob("*.py"):
        module = ".".join(("hatidata_auth", *path.relative_to(root).with_suffix("").parts)).removesuffix(".__init__")
        found += [(module, node, ast.unparse(node)) for node in ast.walk(ast.parse(path.read_text()))
                  if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)]
    return tuple(found)


def _calls(node: Function) -> list[tuple[str, list[str], ast.Call]]:
    return [(ast.unparse(c.func), [ast.unparse(a) for a in c.args], c) for c in ast.walk(node)
            if isinstance(c, ast.Call)]


def _users_names(node: Function) -> set[str]:
    """``User``, ``User.__table__`` and the local names the function binds to the latter (``t = User.__table__``,
    ``a, t = X, User.__table__``)."""
    names = {"User", "User.__table__"}
    for stmt in ast.walk(node):
        if not isinstance(stmt, ast.Assign):
            continue
        for target in stmt.targets:
            pairs = (zip(target.elts, stmt.value.elts, strict=False)
                     if isinstance(target, ast.Tuple) and isinstance(stmt.value, ast.Tuple) else [(target, stmt.value)])
            names |= {ast.unparse(t) for t, v in pairs if ast.unparse(v) == "User.__table__"}
    return names


def _sql(args: list[str]) -> str:
    """The first argument as SQL text, folded: lower case, no quotes, single spaces."""
    return re.sub(r"\s+", " ", args[0].lower().replace('"', "").replace("\\", "")) if args else ""


def _creates(name: str, args: list[str], users: set[str]) -> bool:
    return (name == "User" or name == "User.__table__.insert"
            or (name.split(".")[-1] == "insert" and bool(set(args) & users))
            or (name.split(".")[-1] in ("bulk_insert_mappings", "bulk_save_objects") and bool(args)
                and args[0] == "User")
            or (name == "text" and "insert into users" in _sql(args)))


def _moves(name: str, args: list[str], call: ast.Call, source: str, users: set[str]) -> bool:
    """A call that may write ``users.email``: ``setattr`` of ``"email"``, a Core or ORM-bulk update of the table
    (an alias included) naming an email, ``bulk_update_mappings(User, …)``, SQL text updating it. (A ``setattr``
    whose attribute name is a variable is not seen: none writes a person today.)"""
    if name == "setattr" and len(args) > 1 and args[1] in ("'email'", '"email"'):
        return True
    if name.split(".")[-1] == "bulk_update_mappings" and args and args[0] == "User":
        return True
    if name == "text" and re.search(r"update users set .*email", _sql(args)):
        return True
    updates_users = any(f"update({u})" in source or f"{u}.update(" in source for u in users)
    names_email = any(k.arg == "email" for k in call.keywords) or any(
        "'email'" in a or '"email"' in a for a in args)
    return updates_users and names_email and name.split(".")[-1] in ("values", "execute")


def creators() -> set[tuple[str, str]]:
    """The functions that build a ``User`` or an insert into ``users`` (by the ORM, Core, bulk or SQL text)."""
    return {(m, n.name) for m, n, _s in _functions() for name, args, _c in _calls(n)
            if _creates(name, args, _users_names(n))}


def directory_creators() -> set[tuple[str, str]]:
    """The functions that call ``new_directory_person``."""
    return {(m, n.name) for m, n, _s in _functions() for name, _a, _c in _calls(n)
            if name.split(".")[-1] == "new_directory_person"}


def email_movers() -> set[tuple[str, str]]:
    """The functions that assign an ``email`` attribute (``=``, annotated, augmented, ``setattr``) or update
    ``users.email`` with a Core statement."""
    found = set()
    for module, node, source in _functions():
        for stmt in ast.walk(node):
            targets = (stmt.targets if isinstance(stmt, ast.Assign)
                       else [stmt.target] if isinstance(stmt, ast.AnnAssign | ast.AugAssign) else [])
            if any(isinstance(t, ast.Attribute) and t.attr == "email" for t in targets):
                found.add((module, node.name))
        if any(_moves(name, args, call, source, _users_names(node)) for name, args, call in _calls(node)):
            found.add((module, node.name))
    return found


def test_every_creator_of_a_person_is_known() -> None:
    assert creators() == set(CREATORS)


def test_every_caller_of_the_directory_s_person_insert_is_known() -> None:
    assert directory_creators() == set(DIRECTORY_CREATORS)


def test_every_writer_that_moves_an_email_onto_a_person_is_known() -> None:
    assert email_movers() == set(MOVERS)


def test_the_scan_sees_every_way_it_looks_for() -> None:
    """The detectors on samples of each way to write (so that the equalities above cannot hold by blindness)."""
    samples = {
        "def a():\n    db.add(User(email=e))": "creates",
        "def b():\n    s.execute(User.__table__.insert().values(email=e))": "creates",
        "def c():\n    s.execute(insert(User).values(email=e))": "creates",
        "def d():\n    s.execute(postgresql.insert(User.__table__))": "creates",
        "def e():\n    s.bulk_insert_mappings(User, rows)": "creates",
        "def f():\n    s.execute(text('INSERT INTO users (id, email) VALUES (1, 2)'))": "creates",
        "def f2():\n    t = User.__table__\n    return insert(t).values(v)": "creates",
        "def f3():\n    d, t = X.__table__, User.__table__\n    return sqlite.insert(d), insert(t)": "creates",
        "def f4():\n    users = User.__table__\n    return postgresql.insert(table).returning(users.c.id)": "neither",
        "def g():\n    u.email = e": "moves",
        "def h():\n    u.email: str = e": "moves",
        "def i():\n    u.email += e": "moves",
        "def j():\n    setattr(u, 'email', e)": "moves",
        "def k():\n    s.execute(update(User).where(User.id == i).values(email=e))": "moves",
        "def l():\n    s.execute(update(User).where(User.id == i).values({'email': e}))": "moves",
        "def m():\n    t = User.__table__\n    s.execute(update(t).values(email=e))": "moves",
        "def n():\n    s.execute(update(User), [{'id': i, 'email': e}])": "moves",
        "def o():\n    s.execute(text('UPDATE  \"users\" SET email = :e'))": "moves",
        "def p():\n    s.bulk_update_mappings(User, rows)": "moves",
        "def q():\n    s.execute(text('INSERT INTO \"users\"  (id) VALUES (1)'))": "creates",
        "async def r():\n    u.email = e": "moves",
        "def t():\n    s.execute(update(User).values(last_login_at=n))": "neither",
    }
    for code, kind in samples.items():
        node = ast.parse(code).body[0]
        assert isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        source = ast.unparse(node)
        calls = _calls(node)
        created = any(_creates(name, args, _users_names(node)) for name, args, _c in calls)
        moved = any(isinstance(t, ast.Attribute) and t.attr == "email"
                    for s in ast.walk(node) for t in (s.targets if isinstance(s, ast.Assign) else
                                                     [s.target] if isinstance(s, ast.AnnAssign | ast.AugAssign) else [])
                    ) or any(_moves(name, args, call, source, _users_names(node)) for name, args, call in calls)
        assert (created, moved) == (kind == "creates", kind == "moves"), code
