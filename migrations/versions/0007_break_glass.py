"""break-glass accounts per organization: the memberships that may sign in without SSO while it is enforced
(issue #16, item 3)

Revision ID: 0007_break_glass
Revises: 0006_access_policy
Create Date: 2026-12-01 00:40:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0007_break_glass'
down_revision = '0006_access_policy'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('organizations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('break_glass_members', sa.JSON(), nullable=True))


def downgrade():
    with op.batch_alter_table('organizations', schema=None) as batch_op:
        batch_op.drop_column('break_glass_members')
