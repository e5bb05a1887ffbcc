"""certificate rotations: the test sign-in's window (old certificates set aside) and whether the rotation added
the new certificate (issue #17 item 1, break-it fixes)

Revision ID: 0015_rotation_test_window
Revises: 0014_cert_rotations
Create Date: 2026-12-01 05:30:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0015_rotation_test_window'
down_revision = '0014_cert_rotations'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('certificate_rotations') as batch:
        batch.add_column(sa.Column('added_new_certificate', sa.Boolean(), server_default=sa.true(),
                                   nullable=False))
        batch.add_column(sa.Column('test_started_at', sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('set_aside', sa.JSON(), nullable=True))


def downgrade():
    with op.batch_alter_table('certificate_rotations') as batch:
        batch.drop_column('set_aside')
        batch.drop_column('test_started_at')
        batch.drop_column('added_new_certificate')
