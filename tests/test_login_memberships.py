"""A login mirrors the user's other WorkOS memberships across every page WorkOS lists (the SDK's paging)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from hatidata_auth.models import Membership, Organization, User
from hatidata_auth.services import login

CONSULTANT = "user_01HTDQ8G900000000000000001"  # consultant@partners.test: a member of Acme and Globex


def test_every_page_of_memberships_is_mirrored(db_session: Any, workos_client: Any) -> None:
    user = User(workos_user_id=CONSULTANT, email="consultant@partners.test")
    db_session.add(user)
    db_session.flush()

    created = login.sync_user_memberships(db_session, workos_client, user_id=user.id, workos_user_id=CONSULTANT,
                                          page_size=1)
    db_session.commit()

    assert created == 2
    names = set(db_session.scalars(select(Organization.name).join(Membership).where(Membership.user_id == user.id)))
    assert names == {"Acme Corp", "Globex"}
    assert login.sync_user_memberships(db_session, workos_client, user_id=user.id, workos_user_id=CONSULTANT,
                                       page_size=1) == 0
