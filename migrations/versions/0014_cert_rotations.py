"""certificate rotations: one SAML signing-certificate rotation per connection (issue #17 item 1)

Revision ID: 0014_cert_rotations
Revises: 0013_checkpoints_append_only
Create Date: 2026-12-01 04:30:00

"""
from alembic import op
import sqlalchemy as sa



# revision identifiers, used by Alembic.
revision = '0014_cert_rotations'
down_revision = '0013_checkpoints_append_only'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('certificate_rotations',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('connection_id', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('new_certificate_id', sa.String(length=64), nullable=False),
    sa.Column('new_fingerprint', sa.String(length=64), nullable=False),
    sa.Column('new_not_after', sa.DateTime(timezone=True), nullable=True),
    sa.Column('old_certificate_ids', sa.JSON(), nullable=False),
    sa.Column('metadata_source', sa.String(length=8), nullable=False),
    sa.Column('switched_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('retired_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('verified_by', sa.String(length=320), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('organization_id', sa.String(length=40), nullable=False),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('organization_id', 'connection_id', name='uq_certificate_rotation_conn')
    )


def downgrade():
    op.drop_table('certificate_rotations')
