"""``directory_user_no_person`` takes the email's lock before its last look (one person per email across the
writers of ``users``: ``services.person_email``). A person found at once needs no lock; when none is, the function
holds the email's advisory lock until the transaction ends and looks again with a fresh snapshot, so a sign-in that
created the person and committed meanwhile is found, and one that comes later waits for this transaction and finds
the person it creates. Nothing on SQLite.

Revision ID: 0022_no_person_email_lock
Revises: 0021_directory_user_lookups
Create Date: 2026-12-04 22:00:00

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0022_no_person_email_lock'
down_revision = '0021_directory_user_lookups'
branch_labels = None
depends_on = None

LOCKING = """
CREATE OR REPLACE FUNCTION directory_user_no_person(p_email varchar) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM users WHERE email = p_email) THEN
        RETURN false;
    END IF;
    PERFORM pg_advisory_xact_lock(1162693632, hashtext(p_email));
    RETURN NOT EXISTS (SELECT 1 FROM users WHERE email = p_email);
END $$
"""

PREVIOUS = """
CREATE OR REPLACE FUNCTION directory_user_no_person(p_email varchar) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN NOT EXISTS (SELECT 1 FROM users WHERE email = p_email);
END $$
"""


def upgrade():
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(LOCKING)


def downgrade():
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(PREVIOUS)
