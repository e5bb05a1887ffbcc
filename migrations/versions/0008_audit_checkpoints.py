"""audit log at scale: signed checkpoints, signing keys, export jobs, one composite index per API filter
(issue #17, items 2 and 3)

Revision ID: 0008_audit_checkpoints
Revises: 0007_break_glass
Create Date: 2026-12-01 00:30:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0008_audit_checkpoints'
down_revision = '0007_break_glass'
branch_labels = None
depends_on = None

BIGINT = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')

FILTER_INDEXES = {
    'ix_audit_org_actor_id_seq': ['organization_id', 'actor_id', 'seq'],
    'ix_audit_org_actor_type_seq': ['organization_id', 'actor_type', 'seq'],
    'ix_audit_org_actor_email_seq': ['organization_id', 'actor_email', 'seq'],
    'ix_audit_org_action_seq': ['organization_id', 'action', 'seq'],
    'ix_audit_org_target_type_seq': ['organization_id', 'target_type', 'seq'],
    'ix_audit_org_target_id_seq': ['organization_id', 'target_id', 'seq'],
    'ix_audit_org_outcome_seq': ['organization_id', 'outcome', 'seq'],
}


def upgrade():
    op.create_table(
        'audit_signing_keys',
        sa.Column('kid', sa.String(length=40), nullable=False),
        sa.Column('algorithm', sa.String(length=16), nullable=False),
        sa.Column('public_key', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('retired_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('kid'),
    )
    op.create_table(
        'audit_checkpoints',
        sa.Column('id', BIGINT, autoincrement=True, nullable=False),
        sa.Column('organization_id', sa.String(length=40), nullable=False),
        sa.Column('seq', sa.BigInteger(), nullable=False),
        sa.Column('hash', sa.String(length=64), nullable=False),
        sa.Column('kid', sa.String(length=40), nullable=False),
        sa.Column('signature', sa.String(length=128), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_audit_checkpoint_org_seq', 'audit_checkpoints', ['organization_id', 'seq'], unique=True)
    op.create_table(
        'audit_export_jobs',
        sa.Column('id', sa.String(length=40), nullable=False),
        sa.Column('organization_id', sa.String(length=40), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('format', sa.String(length=8), nullable=False),
        sa.Column('filters', sa.JSON(), nullable=False),
        sa.Column('reveal_session_ids', sa.Boolean(), nullable=False),
        sa.Column('requested_by', sa.String(length=64), nullable=True),
        sa.Column('count', sa.BigInteger(), nullable=True),
        sa.Column('final_hash', sa.String(length=64), nullable=True),
        sa.Column('error', sa.String(length=512), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_audit_export_org_created', 'audit_export_jobs', ['organization_id', 'created_at'])
    for name, columns in FILTER_INDEXES.items():
        op.create_index(name, 'audit_events', columns)
    # (organization_id, action, seq) leads every action lookup now (plain indexes: no table rebuild on SQLite).
    op.drop_index('ix_audit_events_action', table_name='audit_events')


def downgrade():
    op.create_index('ix_audit_events_action', 'audit_events', ['action'])
    for name in FILTER_INDEXES:
        op.drop_index(name, table_name='audit_events')
    op.drop_index('ix_audit_export_org_created', table_name='audit_export_jobs')
    op.drop_table('audit_export_jobs')
    op.drop_index('ix_audit_checkpoint_org_seq', table_name='audit_checkpoints')
    op.drop_table('audit_checkpoints')
    op.drop_table('audit_signing_keys')
