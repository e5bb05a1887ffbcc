"""audit log: the time index also holds seq, so turning a time range into its seq range reads the index only
(issue #17, bounded pages)

Revision ID: 0016_audit_time_seq_index
Revises: 0015_rotation_test_window
Create Date: 2026-12-01 08:40:00

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0016_audit_time_seq_index'
down_revision = '0015_rotation_test_window'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('audit_events') as batch_op:
        batch_op.drop_index('ix_audit_org_time')
        batch_op.create_index('ix_audit_org_time', ['organization_id', 'created_at', 'seq'], unique=False)


def downgrade():
    with op.batch_alter_table('audit_events') as batch_op:
        batch_op.drop_index('ix_audit_org_time')
        batch_op.create_index('ix_audit_org_time', ['organization_id', 'created_at'], unique=False)
