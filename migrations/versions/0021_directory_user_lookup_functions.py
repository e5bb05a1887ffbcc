"""two PostgreSQL functions the insert of a new directory user calls in its RETURNING clause: whether no person holds
its email and whether it is in no live group (issue #14). VOLATILE PL/pgSQL, so each query takes a fresh snapshot
under READ COMMITTED and sees what was committed while the insert waited on another transaction's row of the same
key (the RETURNING clause's own expressions read the statement's start: tests/test_inserted_user_race.py). Nothing on
SQLite, whose insert answers with plain subqueries (one writing transaction at a time).

Revision ID: 0021_directory_user_lookups
Revises: 0020_tenant_key_indexes_rest
Create Date: 2026-12-04 18:00:00

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0021_directory_user_lookups'
down_revision = '0020_tenant_key_indexes_rest'
branch_labels = None
depends_on = None

NO_PERSON = """
CREATE FUNCTION directory_user_no_person(p_email varchar) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN NOT EXISTS (SELECT 1 FROM users WHERE email = p_email);
END $$
"""

NO_LIVE_GROUP = """
CREATE FUNCTION directory_user_no_live_group(p_organization_id varchar, p_user_workos_id varchar) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN NOT EXISTS (
        SELECT 1 FROM directory_group_memberships m
        JOIN directory_groups g ON g.organization_id = m.organization_id AND g.workos_id = m.group_workos_id
        WHERE m.organization_id = p_organization_id AND m.user_workos_id = p_user_workos_id AND m.present
          AND g.deleted_at IS NULL);
END $$
"""


def upgrade():
    if op.get_bind().dialect.name != 'postgresql':
        return
    op.execute(NO_PERSON)
    op.execute(NO_LIVE_GROUP)


def downgrade():
    if op.get_bind().dialect.name != 'postgresql':
        return
    op.execute('DROP FUNCTION directory_user_no_live_group(varchar, varchar)')
    op.execute('DROP FUNCTION directory_user_no_person(varchar)')
