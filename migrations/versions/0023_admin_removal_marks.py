"""Admin removals made before the removal mark: each membership that is not active, not directory-managed, and whose
latest ``membership.deprovisioned`` / ``membership.activated`` audit event is a deprovisioning that says ``removed by
an admin``, gets the mark ``details.removed_here = {"at": that event's time, "id": the WorkOS membership id it
knew}`` (``services.workos_memberships``), so WorkOS's later word on a membership it had made by then does not bring
the person back. ``inactive`` rows count too: WorkOS's deactivation of a removed member's membership moved it from
``deprovisioned`` to ``inactive`` (a break-it review). The audit rows are streamed and only each membership's latest
is kept (its reason, not its details). Data only; nothing to undo.

Revision ID: 0023_admin_removal_marks
Revises: 0022_no_person_email_lock
Create Date: 2026-12-06 03:30:00

"""
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0023_admin_removal_marks'
down_revision = '0022_no_person_email_lock'
branch_labels = None
depends_on = None

REASON = "removed by an admin"
memberships = sa.table("memberships", sa.column("id", sa.String), sa.column("status", sa.String),
                       sa.column("source", sa.String), sa.column("workos_membership_id", sa.String),
                       sa.column("details", sa.JSON))
audit_events = sa.table("audit_events", sa.column("id", sa.BigInteger), sa.column("action", sa.String),
                        sa.column("target_type", sa.String), sa.column("target_id", sa.String),
                        sa.column("details", sa.JSON), sa.column("created_at", sa.DateTime(timezone=True)))


def _aware(value):
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def mark_removals(conn) -> int:
    """Mark every membership an admin removed last and that is still not active; returns how many."""
    rows = conn.execute(
        sa.select(memberships.c.id, audit_events.c.action, audit_events.c.details["reason"].as_string().label("reason"),
                  audit_events.c.created_at)
        .join(audit_events, sa.and_(audit_events.c.target_type == "membership",
                                    audit_events.c.target_id == memberships.c.id))
        .where(memberships.c.status.in_(("deprovisioned", "inactive")), memberships.c.source != "directory",
               audit_events.c.action.in_(("membership.deprovisioned", "membership.activated")))
        .order_by(audit_events.c.id), execution_options={"stream_results": True, "yield_per": 2000})
    latest = {}  # membership id -> (removed by an admin, when): the last deprovisioning or activation decides
    for row in rows:
        latest[row.id] = (row.action == "membership.deprovisioned" and row.reason == REASON, row.created_at)
    removed = [(membership_id, at) for membership_id, (by_admin, at) in latest.items() if by_admin]
    del latest
    marked = 0
    for start in range(0, len(removed), 500):
        chunk = dict(removed[start:start + 500])
        for row in conn.execute(sa.select(memberships.c.id, memberships.c.workos_membership_id, memberships.c.details)
                                .where(memberships.c.id.in_(list(chunk)))).all():
            details = dict(row.details or {})
            if isinstance(details.get("removed_here"), dict):
                continue
            details["removed_here"] = {"at": _aware(chunk[row.id]).isoformat(), "id": row.workos_membership_id}
            conn.execute(memberships.update().where(memberships.c.id == row.id).values(details=details))
            marked += 1
    return marked


def upgrade():
    mark_removals(op.get_bind())


def downgrade():
    pass  # the marks only narrow what WorkOS's events may do; the schema is unchanged
