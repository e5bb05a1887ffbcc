"""Break-it round 2: a member removal racing a role change across two database connections (PostgreSQL).

docs/security.md rule 1: a transition reads the record's state under a row lock, so the first of two concurrent
transitions wins and the second sees it. ``tenant_admin.change_member_role`` refuses a membership that is not
active (409 ``membership_inactive``); raced against ``remove_member`` it does not.
"""

from __future__ import annotations

from typing import Any, cast

import pytest
from sqlalchemy import select

from hatidata_auth.causes import Actor, Cause, RequestInfo
from hatidata_auth.models import AuditEvent, Membership, Organization, User
from hatidata_auth.services import tenant_admin
from hatidata_auth.unit_of_work import AppSession
from tests.support.races import race

pytestmark = pytest.mark.postgres

NO_WORKOS = cast(Any, None)  # no session to revoke at WorkOS: the removal never calls it


def _setup(db_session: Any) -> tuple[str, str, str]:
    org = Organization(name="Brightwater Mills", domains=["brightwater-mills.test"])
    admin_a, admin_b = User(email="ana.admin@brightwater-mills.test"), User(email="bo.admin@brightwater-mills.test")
    member = User(email="casey.contractor@brightwater-mills.test")
    db_session.add_all([org, admin_a, admin_b, member])
    db_session.flush()
    for user in (admin_a, admin_b):
        db_session.add(Membership(organization_id=org.id, user_id=user.id, role="admin", status="active",
                                  role_source="manual", source="manual"))
    target = Membership(organization_id=org.id, user_id=member.id, role="viewer", status="active",
                        role_source="manual", source="manual")
    db_session.add(target)
    db_session.commit()
    return org.id, target.id, admin_a.id


def test_a_role_change_racing_a_removal_sees_the_removal(app: Any, db_session: Any) -> None:
    org_id, membership_id, admin_id = _setup(db_session)
    ana = Cause.by(Actor("user", admin_id, "ana.admin@brightwater-mills.test"),
                   RequestInfo("198.51.100.4", "breakit2", "req-remove"))
    bo = Cause.by(Actor("user", "usr_bo", "bo.admin@brightwater-mills.test"),
                  RequestInfo("198.51.100.5", "breakit2", "req-promote"))
    errors = race(
        app,
        lambda s: tenant_admin.remove_member(s, NO_WORKOS, organization_id=org_id, membership_id=membership_id,
                                             cause=ana),
        lambda s: tenant_admin.change_member_role(s, NO_WORKOS, organization_id=org_id,
                                                  membership_id=membership_id, role="admin", cause=bo),
    )
    db_session.expire_all()
    membership = db_session.get(Membership, membership_id)
    assert membership.status == "deprovisioned"
    assert membership.role == "viewer", "the removed member was promoted after the removal"
    assert [getattr(e, "code", None) for e in errors] == ["membership_inactive"], errors
    changed = db_session.scalars(select(AuditEvent).where(AuditEvent.target_id == membership_id,
                                                          AuditEvent.action == "membership.role_changed")).all()
    assert not changed


def test_a_removal_racing_a_role_change_removes_the_changed_member(app: Any, db_session: Any) -> None:
    org_id, membership_id, admin_id = _setup(db_session)
    ana = Cause.by(Actor("user", admin_id, "ana.admin@brightwater-mills.test"))
    errors = race(
        app,
        lambda s: tenant_admin.change_member_role(s, NO_WORKOS, organization_id=org_id,
                                                  membership_id=membership_id, role="developer", cause=ana),
        lambda s: tenant_admin.remove_member(s, NO_WORKOS, organization_id=org_id, membership_id=membership_id,
                                             cause=ana),
    )
    assert not errors, errors
    db_session.expire_all()
    membership = db_session.get(Membership, membership_id)
    assert (membership.status, membership.role) == ("deprovisioned", "developer")
    actions = db_session.scalars(select(AuditEvent.action).where(AuditEvent.target_id == membership_id)
                                 .order_by(AuditEvent.seq)).all()
    assert actions[0] == "membership.role_changed", actions
    assert "membership.role_changed" not in actions[1:], actions


def test_two_removals_racing_audit_one_removal(app: Any, db_session: Any) -> None:
    org_id, membership_id, admin_id = _setup(db_session)
    ana = Cause.by(Actor("user", admin_id, "ana.admin@brightwater-mills.test"))

    def remove(s: AppSession) -> object:
        return tenant_admin.remove_member(s, NO_WORKOS, organization_id=org_id, membership_id=membership_id,
                                          cause=ana)

    assert not race(app, remove, remove)
    db_session.expire_all()
    before = db_session.scalars(select(AuditEvent.action).where(AuditEvent.target_id == membership_id)).all()
    assert db_session.get(Membership, membership_id).status == "deprovisioned"
    assert len(before) == len(set(before)), before
