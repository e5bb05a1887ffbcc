"""access policy per organization: absolute session lifetime, IP allowlist (and whether it binds API keys),
step-up window; an IP allowlist per API key (issue #16, item 1)

Revision ID: 0006_access_policy
Revises: 0004_resync_indexes
Create Date: 2026-11-30 21:40:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0006_access_policy'
down_revision = '0005_sign_in_attempts'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('organizations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('session_absolute_ttl', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('ip_allowlist', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('ip_allowlist_api_keys', sa.Boolean(), server_default=sa.false(),
                                      nullable=False))
        batch_op.add_column(sa.Column('step_up_window', sa.Integer(), nullable=True))
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ip_allowlist', sa.JSON(), nullable=True))


def downgrade():
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_column('ip_allowlist')
    with op.batch_alter_table('organizations', schema=None) as batch_op:
        batch_op.drop_column('step_up_window')
        batch_op.drop_column('ip_allowlist_api_keys')
        batch_op.drop_column('ip_allowlist')
        batch_op.drop_column('session_absolute_ttl')
