"""inbox entity key and revokes: what an event is about (the appliers apply one entity's events in order) and
whether it can take access away (claimed first)

Revision ID: 0003_inbox_entity_key
Revises: 0002_inbox_indexes
Create Date: 2026-11-30 19:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0003_inbox_entity_key'
down_revision = '0002_inbox_indexes'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('webhook_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('entity_key', sa.String(length=160), nullable=True))
        batch_op.add_column(sa.Column('revokes', sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade():
    with op.batch_alter_table('webhook_events', schema=None) as batch_op:
        batch_op.drop_column('revokes')
        batch_op.drop_column('entity_key')
