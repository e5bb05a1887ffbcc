"""A tenant table's row looked up by its key within its tenant is an index lookup on its key under any plan.

psycopg prepares a statement after five runs, and PostgreSQL then plans it generically; on a table without
statistics (a fresh database, or one analyze has not reached yet) any index leading with ``organization_id`` (a
single-column one, or a unique constraint on the organization and a natural key) ties with the primary key for
``<key> = $1 AND organization_id = $2``, and wins: every lookup then scans the organization's whole table. So every
tenant table has an index holding both (migrations 0018 and 0020; an ``(organization_id, <key>)`` one ties in turn
with the natural-key constraints and takes their lookups, so those tables have ``(<key>, organization_id)``). The
sessions' last-seen writes, one UPDATE per session and minute, cost 0.36 ms each with 3,000 sessions and 0.62 ms
with 9,000 before (growing with the sessions of an organization). Checked for every tenant table on a fresh empty
copy of it (its indexes, no statistics) with the generic plan forced; and the last-seen writer's own statement.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import text

from hatidata_auth.extensions import db
from hatidata_auth.models import TenantMixin

pytestmark = pytest.mark.postgres


def _tenant_tables() -> list[Any]:
    tables = sorted((m.local_table for m in db.Model.registry.mappers if issubclass(m.class_, TenantMixin)),
                    key=lambda t: t.name)
    return [pytest.param(t, id=t.name) for t in tables]


def _generic_plan(db_session: Any, table: str, sql: str, params: dict[str, Any]) -> str:
    """The generic plan of *sql* on a fresh, empty copy of *table* with the same indexes (a first deployment's
    table, whatever earlier tests left in the real one; no lock on it)."""
    probe = f"plan_probe_{table}"
    db_session.execute(text(f"CREATE TEMP TABLE {probe} (LIKE {table} INCLUDING ALL) ON COMMIT DROP"))
    db_session.execute(text("SET LOCAL plan_cache_mode = force_generic_plan"))
    names = list(params)
    placeholders = {name: f"${i + 1}" for i, name in enumerate(names)}
    prepared = re.sub(r"%\((\w+)\)s", lambda m: placeholders[m.group(1)], re.sub(rf"\b{table}\b", probe, sql))
    conn = db_session.connection()
    statement = f"plan_{table}"
    conn.exec_driver_sql(f"PREPARE {statement} AS {prepared}")
    try:
        arguments = ", ".join(f"'{params[name]}'" for name in names)
        return "\n".join(row[0] for row in conn.exec_driver_sql(f"EXPLAIN EXECUTE {statement}({arguments})"))
    finally:
        conn.exec_driver_sql(f"DEALLOCATE {statement}")
        db_session.execute(text(f"DROP TABLE {probe}"))


@pytest.mark.parametrize("table", _tenant_tables())
def test_a_row_by_its_key_within_its_tenant_is_an_index_lookup_on_the_key(db_session: Any, table: Any) -> None:
    keys = [c.name for c in table.primary_key.columns if c.name != "organization_id"]
    conditions = " AND ".join(f"{key} = %({key})s" for key in keys)
    params = {key: "1" for key in keys} | {"organization_id": "org"}  # "1": a text or an integer key
    plan = _generic_plan(db_session, table.name, f"SELECT * FROM {table.name} WHERE {conditions} AND "
                         "organization_id = %(organization_id)s", params)
    found = " ".join(line for line in plan.splitlines() if "Index Cond" in line)
    for key in keys:
        held = re.search(rf"\((\({key}\)::\w+|{key}) = ", found)  # ((id)::text = $1) or (id = $1)
        assert held, f"{table.name}: {key} is not in the index condition\n{plan}"


def test_the_last_seen_write_is_a_key_lookup_per_session(app: Any, db_session: Any) -> None:
    from hatidata_auth.services.last_seen import LastSeenWriter

    captured: list[str] = []

    dialect = db_session.get_bind().dialect

    def sql(statement: Any) -> str:
        return str(statement.compile(dialect=dialect, compile_kwargs={"render_postcompile": True}))

    class Capture:
        def __init__(self) -> None:
            self.dialect = dialect

        def begin(self) -> Any:
            return self

        def __enter__(self) -> Any:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def scalars(self, statement: Any) -> list[str]:  # the rows' locks (PostgreSQL): nobody else holds them
            captured.append(sql(statement))
            return ["ses_1", "ses_2"]

        def execute(self, statement: Any, rows: Any) -> Any:
            captured.append(sql(statement))
            return type("Done", (), {"rowcount": 0})()

    writer = LastSeenWriter(lambda: Capture(), interval=60)  # type: ignore[arg-type,return-value]
    from hatidata_auth.services.last_seen import Seen

    writer._write([Seen("ses_1", "org_1", 1_000.0, None), Seen("ses_2", "org_1", 1_000.0, 2_000.0)])
    assert captured
    for sql in captured:
        params = {name: "k" if name in ("sid", "org") else "2026-01-01T00:00:00+00:00"  # the rest are instants
                  for name in re.findall(r"%\((\w+)\)s", sql)}
        plan = _generic_plan(db_session, "auth_sessions", sql, params)
        assert re.search(r"Index Cond: .*\(id\)", plan), plan
