"""the trace context of the request or job that queued an inbox row (issue #17, item 4)

Revision ID: 0009_trace_context
Revises: 0008_audit_checkpoints
Create Date: 2026-12-01 01:20:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0009_trace_context'
down_revision = '0008_audit_checkpoints'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('webhook_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('trace_context', sa.JSON(), nullable=True))


def downgrade():
    with op.batch_alter_table('webhook_events', schema=None) as batch_op:
        batch_op.drop_column('trace_context')
