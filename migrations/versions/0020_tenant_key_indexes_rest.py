"""tenant key indexes for the remaining tenant tables: each by (id, organization_id), so a row looked up by its key
within its tenant is an index lookup on the key under a generic plan without statistics; before, their unique
constraint leading with organization_id won the tie with the primary key and the lookup read the organization's
rows. Led by the key, the index serves no other lookup and so never wins one (an (organization_id, id) index tied
with the (organization_id, natural key) constraints and took their lookups by natural key) (issue #14)

Revision ID: 0020_tenant_key_indexes_rest
Revises: 0019_person_key_indexes
Create Date: 2026-12-04 05:00:00

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0020_tenant_key_indexes_rest'
down_revision = '0019_person_key_indexes'
branch_labels = None
depends_on = None

TABLES = ('certificate_rotations', 'directory_group_memberships', 'directory_groups', 'directory_users',
          'known_directories', 'memberships', 'organization_alerts', 'resync_cursors', 'role_mappings',
          'sign_in_attempts', 'wizard_progress')


def upgrade():
    for table in TABLES:
        op.create_index(f'ix_{table}_id_organization_id', table, ['id', 'organization_id'])


def downgrade():
    for table in TABLES:
        op.drop_index(f'ix_{table}_id_organization_id', table_name=table)
