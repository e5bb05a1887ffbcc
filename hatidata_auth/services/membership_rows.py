"""A person's membership of an organization as the writers that find it by the pair (organization, person) take it:
locked and read as committed, or created unless another transaction created it first.

Such a writer (a sign-in, an admin's grant; a WorkOS ``organization_membership`` event when it creates the row)
holds no lock that the others take before their first look, so what it read may be stale by the time it acts on
it: another may have created the membership (its insert would break ``uq_membership_org_user``: a sign-in answered
500 and an event failed), or removed the member (a sign-in wrote its role onto a deprovisioned row, or recorded a
session the removal never saw, which outlived it: break-it reviews). So the row it acts on is the one
:func:`locked` or :func:`created_or_locked` hands out: on PostgreSQL its row lock waits for a writer yet to commit,
the committed row is read again over what the session held, and a removal committed after waits for the holder
(and then sees, and ends, the session a sign-in recorded). A sign-in takes it before it writes the person, in the
order of the appliers' batches (a membership, then a person for a later event): taken after, it deadlocked with
them. SQLite runs one writer at a time, from its first statement, so what it read stays true.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ..models import Membership, new_id


def locked(session: Session, membership: Membership) -> Membership:
    """*membership* (loaded) with its row locked ``FOR UPDATE`` until the transaction ends and its attributes
    read again as committed (PostgreSQL; as it is on SQLite). A sign-in calls it before it writes the person, as
    the appliers' batches hold a membership before they write a person for a later event."""
    if session.get_bind().dialect.name == "postgresql":
        session.refresh(membership, with_for_update=True)
    return membership


def created_or_locked(session: Session, *, organization_id: str, user_id: str,
                      **initial: Any) -> tuple[Membership, bool]:
    """The membership of *user_id* in *organization_id*: a new one with the *initial* columns (``source``,
    ``status``, ``role``, ``role_source``…), or, when another transaction created one first (committed, or
    waited for until it commits), that one, locked as :func:`locked`; and whether it was created here. Flushes
    the session first (a Core statement does)."""
    dialect = session.get_bind().dialect.name
    values = {"id": new_id("mem"), "organization_id": organization_id, "user_id": user_id, "details": {},
              **initial}
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    created = session.execute(insert(Membership.__table__).values(values)
                              .on_conflict_do_nothing(index_elements=["organization_id", "user_id"])
                              .returning(Membership.id)).scalar() is not None
    query = select(Membership).where(Membership.organization_id == organization_id, Membership.user_id == user_id)
    if dialect == "postgresql" and not created:
        query = query.with_for_update()
    membership = session.scalars(query.execution_options(populate_existing=True)).one()
    return membership, created
