"""Migrations apply from zero and agree with the models."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask import Flask
from sqlalchemy import text

from hatidata_auth.extensions import db


# SQLite cannot reflect expression indexes (the inbox's claim indexes): autogenerate skips them there with these
# warnings; PostgreSQL compares them, and tests/test_inbox_indexes.py reads them from sqlite_master.
@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
@pytest.mark.filterwarnings("ignore:autogenerate skipping metadata-specified expression-based index")
def test_models_and_migrations_agree(app: Flask) -> None:
    with app.app_context(), db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, db.metadata)
    assert diff == [], f"models and migrations disagree; run `flask db migrate`: {diff}"


def test_every_tenant_table_carries_the_organization_id(app: Flask) -> None:
    # audit_signing_keys: the deployment's checkpoint keys (public keys published to every organization).
    global_tables = {"organizations", "users", "audit_events", "audit_chain_heads", "webhook_events",
                     "sync_cursors", "audit_signing_keys"}
    for table in db.metadata.sorted_tables:
        if table.name in global_tables:
            continue
        assert "organization_id" in table.c, f"{table.name} holds tenant data but has no organization_id"
        assert not table.c.organization_id.nullable, f"{table.name}.organization_id may be empty"


@pytest.mark.postgres
def test_the_directory_user_insert_functions_take_a_fresh_snapshot(app: Flask) -> None:
    # events.directory_insert: STABLE would read the calling statement's snapshot (tests/test_inserted_user_race.py)
    with app.app_context(), db.engine.connect() as conn:
        found = dict(conn.execute(text(
            "SELECT proname, provolatile FROM pg_proc WHERE proname IN "
            "('directory_user_no_person', 'directory_user_no_live_group')")).all())
    assert found == {"directory_user_no_person": "v", "directory_user_no_live_group": "v"}

