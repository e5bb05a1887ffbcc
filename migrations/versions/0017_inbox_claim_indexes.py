"""inbox claim indexes: a claim reads the pending events in claim order and probes each one's entity key, instead
of ranking the whole backlog (issue #14); the open-events index gives way to a failed-events one

Revision ID: 0017_inbox_claim_indexes
Revises: 0016_audit_time_seq_index
Create Date: 2026-12-01 08:30:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0017_inbox_claim_indexes'
down_revision = '0016_audit_time_seq_index'
branch_labels = None
depends_on = None

PENDING = sa.text("status = 'received'")
INTERNAL = sa.text("status = 'received' AND source = 'internal'")
FAILED = sa.text("status = 'failed'")
OPEN = sa.text("status NOT IN ('applied', 'ignored', 'duplicate')")
WHEN = sa.text('coalesce(event_created_at, received_at)')
ORDER = [sa.text('revokes DESC'), WHEN, 'id']


def upgrade():
    op.create_index('ix_webhook_events_claim_order', 'webhook_events', ORDER,
                    postgresql_where=PENDING, sqlite_where=PENDING)
    op.create_index('ix_webhook_events_pending_key', 'webhook_events',
                    [sa.text('coalesce(entity_key, event_id)'), WHEN, 'id'],
                    postgresql_where=PENDING, sqlite_where=PENDING)
    op.create_index('ix_webhook_events_internal_order', 'webhook_events', ORDER,
                    postgresql_where=INTERNAL, sqlite_where=INTERNAL)
    op.create_index('ix_webhook_events_failed', 'webhook_events', ['id'],
                    postgresql_where=FAILED, sqlite_where=FAILED)
    op.drop_index('ix_webhook_events_open', table_name='webhook_events')


def downgrade():
    op.create_index('ix_webhook_events_open', 'webhook_events', ['status', 'id'], postgresql_where=OPEN)
    op.drop_index('ix_webhook_events_failed', table_name='webhook_events')
    op.drop_index('ix_webhook_events_internal_order', table_name='webhook_events')
    op.drop_index('ix_webhook_events_pending_key', table_name='webhook_events')
    op.drop_index('ix_webhook_events_claim_order', table_name='webhook_events')
