"""the authentication time of a session (the token's auth_time at sign-in), the proof of safe SSO enforcement

Revision ID: 0010_session_auth_time
Revises: 0009_trace_context
Create Date: 2026-12-01 01:45:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0010_session_auth_time'
down_revision = '0009_trace_context'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('auth_sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('authenticated_at', sa.DateTime(timezone=True), nullable=True))


def downgrade():
    with op.batch_alter_table('auth_sessions', schema=None) as batch_op:
        batch_op.drop_column('authenticated_at')
