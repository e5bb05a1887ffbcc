"""The resync's per-page lookups are one index lookup per key on PostgreSQL, whatever the table statistics say.

Planned with ``key IN (...)`` on a table without statistics (a fresh database, a first sync), PostgreSQL scanned the
whole organization through the composite index's first column and filtered the keys, so every page cost the size of
the organization. ``resync_state.page_lookup`` leaves it no such plan: every lookup the resync makes per page is
checked here, with the statistics dropped and the generic plan forced (what psycopg's prepared statements get).
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from hatidata_auth.models import DirectoryGroup, DirectoryGroupMembership, DirectoryUser, Membership, Organization, User
from hatidata_auth.services import resync_state
from hatidata_auth.services.resync_state import page_lookup
from hatidata_auth.services.role_rules import GroupRef

pytestmark = pytest.mark.postgres

LOOKUPS: dict[str, tuple[Any, Any, Any, bool]] = {
    "directory users of the page": (DirectoryUser, DirectoryUser.organization_id, DirectoryUser.workos_id, True),
    "their group memberships": ((DirectoryGroupMembership.user_workos_id, DirectoryGroupMembership.group_workos_id),
                                DirectoryGroupMembership.organization_id, DirectoryGroupMembership.user_workos_id,
                                False),
    "their access": ((Membership.directory_user_id, Membership.role), Membership.organization_id,
                     Membership.directory_user_id, False),
}


def _forget_statistics(db_session: Any, table: str) -> None:
    """*table* as a fresh database has it (rolled back with the test's transaction): no column statistics and no
    size from an earlier ``ANALYZE`` or vacuum (an earlier test's, on the shared database, made a nearly empty
    table look cheaper to scan than to look up by key)."""
    db_session.execute(text("DELETE FROM pg_statistic WHERE starelid = CAST(:t AS regclass)"), {"t": table})
    db_session.execute(text("UPDATE pg_class SET relpages = 0, reltuples = -1, relallvisible = 0 "
                            "WHERE oid = CAST(:t AS regclass)"), {"t": table})


@pytest.mark.parametrize("name", sorted(LOOKUPS))
def test_each_page_lookup_is_an_index_lookup_per_key_without_statistics(db_session: Any, name: str) -> None:
    what, organization, key, unique = LOOKUPS[name]
    org = Organization(name="Plans")
    db_session.add(org)
    db_session.flush()
    db_session.execute(text(
        "INSERT INTO directory_users (id, organization_id, workos_id, directory_id, email, state, attributes, "
        "created_at, updated_at) SELECT 'du_plan_' || g, :org, 'directory_user_' || lpad(g::text, 6, '0'), 'dir', "
        "'p' || g || '@plans.test', 'active', '{}', now(), now() FROM generate_series(1, 3000) g"), {"org": org.id})
    db_session.execute(text(
        "INSERT INTO directory_group_memberships (organization_id, group_workos_id, user_workos_id, present) "
        "SELECT :org, 'group_' || (g % 50), 'directory_user_' || lpad(g::text, 6, '0'), true "
        "FROM generate_series(1, 3000) g"), {"org": org.id})
    for table in ("directory_users", "directory_group_memberships", "memberships"):
        _forget_statistics(db_session, table)
    db_session.execute(text("SET LOCAL plan_cache_mode = force_generic_plan"))
    keys = [f"directory_user_{n:06d}" for n in range(1000, 1100)]
    stmt = page_lookup(db_session, what, organization, org.id, key, keys, unique=unique)
    compiled = stmt.compile(bind=db_session.get_bind())
    conn = db_session.connection()
    plan = "\n".join(row[0] for row in conn.exec_driver_sql("EXPLAIN " + str(compiled), compiled.params))
    column = key.property.columns[0].name
    assert "Index Cond" in plan, plan
    assert f"{column})::text = " in plan, plan  # the key is in the index condition, with the organization
    assert "ANY" not in plan, plan  # no scan of the organization filtered by the page's keys
    expected = {"directory users of the page": 100, "their group memberships": 100, "their access": 0}
    assert len(db_session.execute(stmt).all()) == expected[name]
    db_session.rollback()


def _without_statistics(db_session: Any, org: Organization) -> None:
    """3,000 people, directory users (each in a group) and 50 groups of *org*, their statistics deleted, and
    generic plans forced."""
    db_session.execute(text(
        "INSERT INTO users (id, email, first_name, last_name, created_at, updated_at) SELECT 'usr_plan_' || g, "
        "'p' || g || '@plans.test', 'P', 'Plan', now(), now() FROM generate_series(1, 3000) g"))
    db_session.execute(text(
        "INSERT INTO directory_users (id, organization_id, workos_id, directory_id, email, state, attributes, "
        "created_at, updated_at) SELECT 'du_plan_' || g, :org, 'directory_user_' || lpad(g::text, 6, '0'), 'dir', "
        "'p' || g || '@plans.test', 'active', '{}', now(), now() FROM generate_series(1, 3000) g"), {"org": org.id})
    db_session.execute(text(
        "INSERT INTO directory_groups (id, organization_id, workos_id, directory_id, name, created_at, updated_at) "
        "SELECT 'dg_plan_' || g, :org, 'group_' || g, 'dir', 'Group ' || g, now(), now() "
        "FROM generate_series(0, 49) g"), {"org": org.id})
    db_session.execute(text(
        "INSERT INTO directory_group_memberships (organization_id, group_workos_id, user_workos_id, present) "
        "SELECT :org, 'group_' || (g % 50), 'directory_user_' || lpad(g::text, 6, '0'), true "
        "FROM generate_series(1, 3000) g"), {"org": org.id})
    for table in ("users", "directory_users", "directory_groups", "directory_group_memberships", "memberships"):
        _forget_statistics(db_session, table)
    db_session.execute(text("SET LOCAL plan_cache_mode = force_generic_plan"))


def _plan(db_session: Any, stmt: Any) -> str:
    compiled = stmt.compile(bind=db_session.get_bind())
    rows = db_session.connection().exec_driver_sql("EXPLAIN " + str(compiled), compiled.params)
    return "\n".join(row[0] for row in rows)


def test_the_pages_people_and_groups_are_index_lookups_per_key_without_statistics(db_session: Any) -> None:
    """The people a page's emails name (a table of no tenant) and the groups of a page's users: one index lookup
    per key, and what they find is right."""
    org = Organization(name="Plans")
    db_session.add(org)
    db_session.flush()
    _without_statistics(db_session, org)
    emails = [f"p{n}@plans.test" for n in range(1000, 1100)]
    people = page_lookup(db_session, User, None, None, User.email, emails, unique=False)
    plan = _plan(db_session, people)
    assert "email)::text = " in plan, plan  # an index condition on the key
    assert "ANY" not in plan, plan
    assert sorted(u.email for u in db_session.scalars(people)) == sorted(emails)
    groups = page_lookup(db_session, (DirectoryGroup.workos_id, DirectoryGroup.name), DirectoryGroup.organization_id,
                         org.id, DirectoryGroup.workos_id, [f"group_{n}" for n in range(50)], unique=True,
                         where=(DirectoryGroup.deleted_at.is_(None),))
    plan = _plan(db_session, groups)
    assert "workos_id)::text = " in plan, plan
    assert "ANY" not in plan, plan
    users = [f"directory_user_{n:06d}" for n in range(1000, 1100)]
    found = resync_state.groups_of_users(db_session, org.id, users)
    assert found == {u: [GroupRef(f"Group {int(u[-6:]) % 50}", None, f"group_{int(u[-6:]) % 50}")] for u in users}
    db_session.rollback()




def _seen_plan(conn: Any) -> str:
    return "\n".join(row[0] for row in conn.exec_driver_sql("EXPLAIN EXECUTE hd_seen('run', 'du_plan_2500')"))


def test_a_resync_page_plans_its_statements_for_the_tables_as_they_are_now(db_session: Any) -> None:
    """The cause: a statement prepared on the server (psycopg does so from its sixth execution) while its table was
    empty keeps the generic plan made then, a sequential scan even for a primary-key equality, as the table grows.
    The rule: a resync page plans each statement anew (``resync_state.plan_each_statement``), so the seen-marker
    ``UPDATE`` of a grown table is an index scan; the setting ends with the page's transaction."""
    org = Organization(name="Plans")
    db_session.add(org)
    db_session.flush()
    conn = db_session.connection()
    # An empty table with the statistics of one, as on a first sync (rolled back with the test's transaction).
    conn.exec_driver_sql("TRUNCATE directory_users")
    conn.exec_driver_sql("ANALYZE directory_users")
    conn.exec_driver_sql("PREPARE hd_seen(varchar, varchar) AS UPDATE directory_users SET resync_run_id = $1, "
                         "updated_at = directory_users.updated_at WHERE directory_users.id = $2")
    try:
        for _ in range(6):  # five custom plans, then the generic one, kept
            conn.exec_driver_sql("EXECUTE hd_seen('run', 'du_none')")
        db_session.execute(text(
            "INSERT INTO directory_users (id, organization_id, workos_id, directory_id, email, state, attributes, "
            "created_at, updated_at) SELECT 'du_plan_' || g, :org, 'directory_user_' || lpad(g::text, 6, '0'), "
            "'dir', 'p' || g || '@plans.test', 'active', '{}', now(), now() FROM generate_series(1, 5000) g"),
            {"org": org.id})
        kept = _seen_plan(conn)
        assert "Seq Scan on directory_users" in kept, kept  # the plan of the empty table, still used
        resync_state.plan_each_statement(db_session)
        assert conn.exec_driver_sql("SHOW plan_cache_mode").scalar() == "force_custom_plan"
        fresh = _seen_plan(conn)
        # an index lookup on the key (the primary key's, or the (id, organization_id) one: the planner may take either)
        assert "Seq Scan" not in fresh, fresh
        assert "Index Cond: ((id)::text = " in fresh, fresh
    finally:
        conn.exec_driver_sql("DEALLOCATE hd_seen")
    db_session.rollback()
    assert db_session.connection().exec_driver_sql("SHOW plan_cache_mode").scalar() == "auto"
    db_session.rollback()


def test_every_page_of_a_resync_plans_its_statements_anew(app: Any, db_session: Any, workos_client: Any,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from hatidata_auth.services import reconcile
    from tests.support.dsync import mirror_organizations

    modes: list[str] = []
    mark_seen = resync_state.mark_seen

    def spying(session: Any, rows: Any, run_id: str) -> None:
        modes.append(session.connection().exec_driver_sql("SHOW plan_cache_mode").scalar())
        mark_seen(session, rows, run_id)

    monkeypatch.setattr(resync_state, "mark_seen", spying)
    acme = mirror_organizations(db_session, workos_client)["acme.test"]
    report = reconcile.full_resync(db_session, workos_client, organization_id=acme.id, page_size=2)
    assert report.users_seen >= 4
    assert len(modes) >= 2, modes  # one per page
    assert set(modes) == {"force_custom_plan"}, modes
    assert db_session.connection().exec_driver_sql("SHOW plan_cache_mode").scalar() == "auto"  # ends with a page
    db_session.rollback()
