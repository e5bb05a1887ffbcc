"""Every statement a resync sends reads its rows by key, never a whole organization, whatever the statistics say.

``test_resync_plans`` checks the page lookups one by one; this checks the kind: every statement a real resync sent
is planned again on a large organization without statistics (fresh copies of its tables), as a generic plan (what
the events' prepared statements get) and as a custom one (what a resync page gets,
``resync_state.plan_each_statement``), and no plan may read one of the organization's large tables by
``organization_id`` alone or sequentially. The one that did (a page's
people's memberships in other organizations, joined and filtered by ``user_id IN (...)``) cost 14 ms a page at
100,000 members and made a no-op resync's time per user grow 1.3-fold from 2,000 to 100,000 users.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import httpx2
import pytest
from sqlalchemy import event, text

from hatidata_auth.models import DirectoryUser, Membership, Organization, User
from hatidata_auth.services import directory_names, reconcile
from tests.support.dsync import mirror_organizations
from tests.support.make_run import EMULATOR_API_KEY

pytestmark = pytest.mark.postgres

ACME_DIR = "directory_01HTDQ8D100000000000000001"  # the demo seed's directory
LARGE = ("users", "directory_users", "memberships", "directory_group_memberships", "directory_groups",
         "auth_sessions")
"""An organization's tables that grow with its people (the rest hold a few rows per organization)."""

ORGANIZATION_ONLY = re.compile(r"Index Cond: \(\(organization_id\)::text = \S+\)$")
SCAN = re.compile(r"(?:Seq Scan|Index Scan|Index Only Scan|Bitmap Heap Scan)(?: using (\S+))? on (\w+)"
                  r"|Bitmap Index Scan on (\S+)")


def _large_copies(session: Any, org_id: str, count: int) -> None:
    """Fresh copies of the :data:`LARGE` tables (their indexes, no statistics, what a first deployment has; temporary
    tables, which the statements' unqualified names now reach first), holding *count* people, directory users,
    memberships and group memberships of the organization. The real tables are left alone: what earlier tests or
    another session left in them (rows, statistics) would change the planner's choices."""
    schema = session.execute(text("SELECT current_schema()")).scalar()
    for table in LARGE:
        session.execute(text(f'CREATE TEMP TABLE {table} (LIKE "{schema}".{table} INCLUDING ALL) ON COMMIT DROP'))
    params = {"org": org_id, "n": count}
    session.execute(text("INSERT INTO users (id, email, created_at, updated_at) SELECT 'usr_fill_' || g, "
                         "'fill' || g || '@fill.test', now(), now() FROM generate_series(1, :n) g"), params)
    session.execute(text(
        "INSERT INTO directory_users (id, organization_id, workos_id, directory_id, email, state, attributes, "
        "user_id, created_at, updated_at) SELECT 'du_fill_' || g, :org, 'directory_user_fill_' || g, 'dir_fill', "
        "'fill' || g || '@fill.test', 'active', '{}', 'usr_fill_' || g, now(), now() FROM generate_series(1, :n) g"),
        params)
    session.execute(text(
        "INSERT INTO memberships (id, organization_id, user_id, role, role_source, source, status, directory_user_id, "
        "details, created_at, updated_at) SELECT 'mem_fill_' || g, :org, 'usr_fill_' || g, 'member', 'default', "
        "'directory', 'active', 'directory_user_fill_' || g, '{}', now(), now() FROM generate_series(1, :n) g"),
        params)
    session.execute(text(
        "INSERT INTO directory_group_memberships (organization_id, group_workos_id, user_workos_id, present) "
        "SELECT :org, 'group_fill_' || (g % 50), 'directory_user_fill_' || g, true FROM generate_series(1, :n) g"),
        params)


def _shape(statement: str) -> str:
    """*statement* with its expanded ``IN`` lists as one parameter: a page's lookup has one shape whatever its size."""
    one = re.sub(r"%\((\w+?)_\d+\)s", r"%(\1_n)s", statement)
    return re.sub(r"(%\(\w+\)s(?:::\w+)?)(?:, \1)+", r"\1", one)


def _reads_an_organization(plan: str, tables_of: dict[str, str]) -> str | None:
    """The first plan line that reads one of the :data:`LARGE` tables whole or by ``organization_id`` alone."""
    table = None
    for line in plan.splitlines():
        found = SCAN.search(line)
        if found:
            index = found.group(1) or found.group(3)
            table = found.group(2) or tables_of.get(index or "")
            if "Seq Scan" in line and table in LARGE:
                return line.strip()
        if table in LARGE and ORGANIZATION_ONLY.search(line.strip()):
            return f"{table}: {line.strip()}"
    return None


def _replanned(session: Any, statements: Any) -> list[str]:
    """Each of *statements* (``(SQL, parameters)``) planned as a generic and as a custom plan: the lines that read an
    organization (:func:`_reads_an_organization`), each with its mode and statement."""
    conn = session.connection()
    tables_of = dict(conn.exec_driver_sql("SELECT ic.relname, tc.relname FROM pg_index i JOIN pg_class ic ON "
                                          "ic.oid = i.indexrelid JOIN pg_class tc ON tc.oid = i.indrelid").all())
    offending = []
    for mode in ("force_generic_plan", "force_custom_plan"):
        conn.exec_driver_sql(f"SET LOCAL plan_cache_mode = {mode}")
        for statement, parameters in statements:
            plan = "\n".join(row[0] for row in conn.exec_driver_sql("EXPLAIN " + statement, parameters or {}))
            line = _reads_an_organization(plan, tables_of)
            if line is not None:
                offending.append(f"{mode}: {line}\n  {' '.join(statement.split())[:1200]}")
    return sorted(set(offending))


def test_every_statement_of_a_resync_reads_by_key_without_statistics(app: Any, db_session: Any, emulator: Any,
                                                                      workos_client: Any) -> None:
    """A run reads what every page shares once (the organization's groups, its mappings: bounded, read whole);
    what it sends on every page (here: every statement it sends more than once in a run) reads by key. Pages of
    100 users, as in production: a planner's choice depends on how many keys a page holds."""
    created = httpx2.post(f"{emulator.url}/_emulator/directories/{ACME_DIR}/bulk", timeout=60,
                          headers={"Authorization": f"Bearer {EMULATOR_API_KEY}"},
                          json={"users": [{"email": f"plan{n}@acme.test", "groups": [f"Plan {n % 5}"]}
                                          for n in range(250)],
                                "groups": [{"name": f"Plan {n}"} for n in range(5)], "emit_events": False})
    assert created.status_code == 201, created.text
    acme = mirror_organizations(db_session, workos_client)["acme.test"]
    db_session.commit()
    planned: dict[str, tuple[str, Any]] = {}
    for _run in ("creating", "finding nothing to do"):
        sent: list[tuple[str, Any]] = []

        def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, many: bool,
                    into: list[tuple[str, Any]] = sent) -> None:
            into.append((statement, parameters[0] if many and parameters else parameters))

        engine = db_session.get_bind()
        event.listen(engine, "before_cursor_execute", capture)
        try:
            reconcile.full_resync(db_session, workos_client, organization_id=acme.id, page_size=100)
        finally:
            event.remove(engine, "before_cursor_execute", capture)
        texts = Counter(_shape(statement) for statement, _ in sent)
        for statement, parameters in sent:  # each shape planned with its largest page (most parameters)
            shape, values = _shape(statement), parameters or {}
            repeated = texts[shape] > 1 and "pg_advisory" not in statement
            if repeated and statement.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE", "WITH")) \
                    and len(values) >= len(planned.get(shape, ("", {}))[1]):
                planned[shape] = (statement, values)
    assert len(planned) > 5, planned  # the pages' lookups, marks and writes
    _large_copies(db_session, acme.id, 20000)
    offending = _replanned(db_session, planned.values())
    db_session.rollback()
    assert not offending, "\n".join(offending)


def test_a_persons_names_elsewhere_are_found_by_the_person(db_session: Any) -> None:
    """What :func:`directory_names.names_listed_elsewhere` answers: each live membership of a live organization
    other than this one, with the names its live directory user lists, ``None`` without one; and how: one index
    lookup per person, for one person (an event) or a page of them."""
    here, there, gone, closed = (Organization(name=n) for n in ("Here", "There", "Gone", "Closed"))
    closed.status = "inactive"
    db_session.add_all([here, there, gone, closed])
    db_session.flush()
    gone.deleted_at = gone.created_at
    people = [User(email=f"p{n}@names.test") for n in range(5)]
    db_session.add_all(people)
    db_session.flush()
    p = [u.id for u in people]
    db_session.add_all([
        DirectoryUser(organization_id=there.id, workos_id="du_there_0", directory_id="d", first_name="Ada",
                      last_name="There", user_id=p[0]),
        DirectoryUser(organization_id=there.id, workos_id="du_there_3", directory_id="d", first_name="X",
                      last_name="Y", user_id=p[3], deleted_at=there.created_at),
        Membership(organization_id=there.id, user_id=p[0], directory_user_id="du_there_0", status="active"),
        Membership(organization_id=there.id, user_id=p[1], status="pending"),  # added by hand: no names
        Membership(organization_id=there.id, user_id=p[2], status="deprovisioned"),  # let go
        Membership(organization_id=there.id, user_id=p[3], directory_user_id="du_there_3", status="active"),
        Membership(organization_id=gone.id, user_id=p[4], status="active"),
        Membership(organization_id=closed.id, user_id=p[4], status="active"),
        *(Membership(organization_id=here.id, user_id=u, status="active") for u in p),
    ])
    db_session.flush()
    found = directory_names.names_listed_elsewhere(db_session, here.id, p)
    assert found == {p[0]: [("Ada", "There")], p[1]: [None], p[3]: [None]}
    assert directory_names.names_listed_elsewhere(db_session, there.id, [p[0]]) == {p[0]: [None]}
    assert directory_names.names_listed_elsewhere(db_session, here.id, []) == {}

    sent: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        sent.append((statement, parameters))

    event.listen(db_session.get_bind(), "before_cursor_execute", capture)
    try:
        for keys in ([p[0]], p + [f"usr_fill_{n}" for n in range(1, 100)]):
            directory_names.names_listed_elsewhere(db_session, here.id, keys)
        directory_names.listed_by_a_directory(db_session, p[0])
    finally:
        event.remove(db_session.get_bind(), "before_cursor_execute", capture)
    _large_copies(db_session, here.id, 3000)
    offending = _replanned(db_session, sent)
    db_session.rollback()
    assert not offending, "\n".join(offending)


ACME = "org_01HTDQ8A100000000000000001"
ADMINS = "directory_group_01HTDQ8E100000000000000001"  # the demo seed's "HatiData Admins" of Acme


def _user_event(n: int, kind: str, stamp: int, **data: Any) -> dict[str, Any]:
    at = f"2030-01-01T00:{stamp // 60:02d}:{stamp % 60:02d}.000Z"
    user = {"object": "directory_user", "id": f"directory_user_plan{n}", "directory_id": ACME_DIR,
            "organization_id": ACME, "idp_id": f"plan{n}", "email": f"plan{n}@acme.test", "first_name": "Plan",
            "last_name": str(n), "state": "active", "custom_attributes": {}, "raw_attributes": {},
            "created_at": "2030-01-01T00:00:00.000Z", "updated_at": at, **data}
    return {"id": f"event_plan_{n}_{stamp}", "event": f"dsync.user.{kind}", "created_at": at, "data": user}


def _group_event(n: int, added: bool, stamp: int) -> dict[str, Any]:
    at = f"2030-01-01T00:{stamp // 60:02d}:{stamp % 60:02d}.000Z"
    group = {"object": "directory_group", "id": ADMINS, "directory_id": ACME_DIR, "organization_id": ACME,
             "name": "HatiData Admins", "idp_id": "HatiData Admins", "created_at": "2030-01-01T00:00:00.000Z",
             "updated_at": "2030-01-01T00:00:00.000Z"}
    member = _user_event(n, "updated", stamp)["data"]
    return {"id": f"event_plan_g{n}_{stamp}", "event": f"dsync.group.user_{'added' if added else 'removed'}",
            "created_at": at, "data": {"directory_id": ACME_DIR, "organization_id": ACME, "user": member,
                                       "group": group}}


def test_every_statement_the_appliers_send_reads_by_key_without_statistics(app: Any, db_session: Any,
                                                                           workos_client: Any) -> None:
    """The events' side of the rule: each statement the appliers sent for a history of directory events (users
    created, renamed, moved to another email, added to and removed from a group, deactivated, deleted), replanned on
    a large organization without statistics, reads the organization's large tables by key."""
    from tests.support.dsync import deliver

    acme = mirror_organizations(db_session, workos_client)["acme.test"]
    db_session.commit()
    client = app.test_client()
    history = [
        *(_user_event(n, "created", n) for n in range(1, 5)),
        _user_event(1, "updated", 10, first_name="Renamed"),
        _user_event(2, "updated", 11, email="plan2.moved@acme.test"),
        _group_event(1, True, 12), _group_event(3, True, 13),
        _user_event(3, "updated", 14, state="inactive"),
        _group_event(1, False, 15),
        _user_event(4, "deleted", 16),
    ]
    sent: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, many: bool) -> None:
        sent.append((statement, parameters[0] if many and parameters else parameters))

    engine = db_session.get_bind()
    event.listen(engine, "before_cursor_execute", capture)
    try:
        outcomes = [deliver(client, app, payload) for payload in history]
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    assert outcomes == ["applied"] * len(history), outcomes
    planned: dict[str, tuple[str, Any]] = {}
    for statement, parameters in sent:
        if statement.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE", "WITH")) \
                and "pg_advisory" not in statement:
            planned.setdefault(_shape(statement), (statement, parameters or {}))
    _large_copies(db_session, acme.id, 20000)
    offending = _replanned(db_session, planned.values())
    db_session.rollback()
    assert not offending, "\n".join(offending)
