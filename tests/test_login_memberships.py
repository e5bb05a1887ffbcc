"""A login mirrors the user's other WorkOS memberships across every page WorkOS lists (the SDK's paging)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from hatidata_auth.models import Membership, Organization, User
from hatidata_auth.services import sign_in_membership

CONSULTANT = "user_01HTDQ8G900000000000000001"  # consultant@partners.test: a member of Acme and Globex


def test_every_page_of_memberships_is_mirrored(db_session: Any, workos_client: Any) -> None:
    user = User(workos_user_id=CONSULTANT, email="consultant@partners.test")
    db_session.add(user)
    db_session.flush()

    created = sign_in_membership.sync_user_memberships(db_session, workos_client, user_id=user.id,
                                                       workos_user_id=CONSULTANT, page_size=1)
    db_session.commit()

    assert created == 2
    names = set(db_session.scalars(select(Organization.name).join(Membership).where(Membership.user_id == user.id)))
    assert names == {"Acme Corp", "Globex"}
    assert sign_in_membership.sync_user_memberships(db_session, workos_client, user_id=user.id,
                                                    workos_user_id=CONSULTANT, page_size=1) == 0


def test_a_claimed_role_replaces_a_default_role_not_a_mapped_one(db_session: Any, workos_client: Any) -> None:
    """WorkOS's claimed role at a sign-in replaces a directory member's default role (the IT admin the directory
    provisioned before any group was mapped signs in as an admin to map them), never a mapped or a manual one."""
    from hatidata_auth.causes import NO_REQUEST
    from hatidata_auth.models import utcnow
    from hatidata_auth.services import sign_in_person
    from tests.support.dsync import mirror_organizations

    acme = mirror_organizations(db_session, workos_client)["acme.test"]
    roles = {}
    for role_source in ("default", "mapping", "manual"):
        workos_user = f"user_LM_{role_source}"
        person = User(email=f"{workos_user.lower()}@partners.test", workos_user_id=workos_user)
        db_session.add(person)
        db_session.flush()
        db_session.add(Membership(organization_id=acme.id, user_id=person.id, source="directory", status="active",
                                  role="viewer", role_source=role_source,
                                  directory_user_id=f"directory_user_LM_{role_source}"))
        db_session.commit()
        signed_in = sign_in_person.upsert(db_session, acme, {"id": workos_user, "email": person.email}, utcnow())
        membership = sign_in_membership.upsert(db_session, workos_client, acme, signed_in, "admin", NO_REQUEST)
        db_session.commit()
        roles[role_source] = (membership.role, membership.role_source)
    assert roles == {"default": ("admin", "idp"), "mapping": ("viewer", "mapping"), "manual": ("viewer", "manual")}
