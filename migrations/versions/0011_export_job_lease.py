"""export jobs: the lease and claim of the worker that runs one (issue #17, breakit17)

Revision ID: 0011_export_job_lease
Revises: 0010_session_auth_time
Create Date: 2026-12-01 01:45:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0011_export_job_lease'
down_revision = '0010_session_auth_time'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('audit_export_jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('started_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('claim', sa.String(length=40), nullable=True))


def downgrade():
    with op.batch_alter_table('audit_export_jobs', schema=None) as batch_op:
        batch_op.drop_column('claim')
        batch_op.drop_column('lease_until')
        batch_op.drop_column('started_at')
