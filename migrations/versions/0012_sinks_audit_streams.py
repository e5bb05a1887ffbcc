"""audit streams: an organization's SIEM sinks with a delivery cursor, retry state and a lease (issue #17 item 2)

Revision ID: 0012_sinks_audit_streams
Revises: 0011_export_job_lease
Create Date: 2026-12-01 04:30:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0012_sinks_audit_streams'
down_revision = '0011_export_job_lease'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'audit_streams',
        sa.Column('id', sa.String(length=40), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('endpoint', sa.String(length=2048), nullable=False),
        sa.Column('secret_sealed', sa.Text(), nullable=True),
        sa.Column('secret_hint', sa.String(length=8), nullable=True),
        sa.Column('reveal_session_ids', sa.Boolean(), nullable=False),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('cursor', sa.BigInteger(), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('last_error', sa.String(length=512), nullable=True),
        sa.Column('last_delivered_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('delivered_events', sa.BigInteger(), nullable=False),
        sa.Column('checkpoint_seq', sa.BigInteger(), nullable=False),
        sa.Column('claim', sa.String(length=40), nullable=True),
        sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('organization_id', sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_audit_streams_org_id', 'audit_streams', ['organization_id', 'id'], unique=True)
    op.create_index('ix_audit_streams_due', 'audit_streams', ['enabled', 'next_attempt_at'])


def downgrade():
    op.drop_index('ix_audit_streams_due', table_name='audit_streams')
    op.drop_index('ix_audit_streams_org_id', table_name='audit_streams')
    op.drop_table('audit_streams')
