"""inbox indexes: drop the ones no query uses; one partial index of open (to apply or failed) events

Revision ID: 0002_inbox_indexes
Revises: 0001_initial
Create Date: 2026-11-30 17:45:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0002_inbox_indexes'
down_revision = '0001_initial'
branch_labels = None
depends_on = None

OPEN = sa.text("status NOT IN ('applied', 'ignored', 'duplicate')")


def upgrade():
    with op.batch_alter_table('webhook_events', schema=None) as batch_op:
        batch_op.drop_index('ix_webhook_events_event_type')
        batch_op.drop_index('ix_webhook_events_organization_id')
        batch_op.drop_index('ix_webhook_events_status')
        batch_op.create_index('ix_webhook_events_open', ['status', 'id'], unique=False, postgresql_where=OPEN)


def downgrade():
    with op.batch_alter_table('webhook_events', schema=None) as batch_op:
        batch_op.drop_index('ix_webhook_events_open', postgresql_where=OPEN)
        batch_op.create_index('ix_webhook_events_status', ['status'], unique=False)
        batch_op.create_index('ix_webhook_events_organization_id', ['organization_id'], unique=False)
        batch_op.create_index('ix_webhook_events_event_type', ['event_type'], unique=False)
