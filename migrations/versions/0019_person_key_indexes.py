"""person key indexes: a person's sessions in an organization by (user_id, organization_id), an email's directory
users in an organization by (email, organization_id), each in place of its single-column index, so that a
deprovisioning or a freed email never reads the organization's rows under a plan made without statistics
(issue #14)

Revision ID: 0019_person_key_indexes
Revises: 0018_tenant_key_indexes
Create Date: 2026-12-03 10:30:00

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0019_person_key_indexes'
down_revision = '0018_tenant_key_indexes'
branch_labels = None
depends_on = None

# (table, the single-column index replaced, its column, the composite index, its columns)
CHANGES = (
    ('auth_sessions', 'ix_auth_sessions_user_id', 'user_id', 'ix_auth_sessions_user_organization',
     ['user_id', 'organization_id']),
    ('directory_users', 'ix_directory_users_email', 'email', 'ix_directory_users_email_organization',
     ['email', 'organization_id']),
)


def upgrade():
    for table, old, _column, new, columns in CHANGES:
        op.create_index(new, table, columns)
        op.drop_index(old, table_name=table)


def downgrade():
    for table, old, column, new, _columns in CHANGES:
        op.create_index(old, table, [column])
        op.drop_index(new, table_name=table)
