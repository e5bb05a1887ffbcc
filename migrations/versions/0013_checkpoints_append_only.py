"""signed audit checkpoints are append-only on PostgreSQL, like the events they sign (issue #17)

Revision ID: 0013_checkpoints_append_only
Revises: 0012_sinks_audit_streams
Create Date: 2026-12-01 05:00:00

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0013_checkpoints_append_only'
down_revision = '0012_sinks_audit_streams'
branch_labels = None
depends_on = None

# A rewritten checkpoint (hash, key, signature) is how a tail rewrite would hide: refuse UPDATE, DELETE and
# TRUNCATE as audit_events' own trigger does (SQLite has no such guard; the application never changes a row).
GUARD_FUNCTION = """
CREATE OR REPLACE FUNCTION audit_checkpoints_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_checkpoints is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql
"""


def upgrade():
    if op.get_bind().dialect.name != 'postgresql':
        return
    op.execute(GUARD_FUNCTION)
    op.execute('CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints '
               'FOR EACH ROW EXECUTE FUNCTION audit_checkpoints_append_only()')
    op.execute('CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints '
               'FOR EACH STATEMENT EXECUTE FUNCTION audit_checkpoints_append_only()')


def downgrade():
    if op.get_bind().dialect.name != 'postgresql':
        return
    op.execute('DROP TRIGGER IF EXISTS audit_checkpoints_no_truncate ON audit_checkpoints')
    op.execute('DROP TRIGGER IF EXISTS audit_checkpoints_append_only ON audit_checkpoints')
    op.execute('DROP FUNCTION IF EXISTS audit_checkpoints_append_only()')
