"""tenant key indexes: sessions and API keys by (organization_id, id) in place of organization_id alone, so a row
looked up by its key within its tenant is an index lookup under a generic plan without statistics (issue #14)

Revision ID: 0018_tenant_key_indexes
Revises: 0017_inbox_claim_indexes
Create Date: 2026-12-03 07:40:00

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0018_tenant_key_indexes'
down_revision = '0017_inbox_claim_indexes'
branch_labels = None
depends_on = None

TABLES = ('auth_sessions', 'api_keys')


def upgrade():
    for table in TABLES:
        op.create_index(f'ix_{table}_organization_id_id', table, ['organization_id', 'id'])
        op.drop_index(f'ix_{table}_organization_id', table_name=table)


def downgrade():
    for table in TABLES:
        op.create_index(f'ix_{table}_organization_id', table, ['organization_id'])
        op.drop_index(f'ix_{table}_organization_id_id', table_name=table)
