"""An organization keeps an active admin (issue #16, item 3): every API writer of roles is refused (409
``last_admin``) when it would remove the last one, and allowed when another admin exists; a directory change that
does it still applies and raises the ``no_active_admin`` alert (audited), resolved when an admin exists again; two
concurrent demotions of the two last admins never both succeed."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from hatidata_auth.causes import Actor, Cause
from hatidata_auth.extensions import db
from hatidata_auth.models import (
    AuditEvent,
    DirectoryGroup,
    DirectoryGroupMembership,
    DirectoryUser,
    Membership,
    Organization,
    OrganizationAlert,
)
from hatidata_auth.services import last_admin, role_mapping, tenant_admin
from tests.api_support import Tenant, headers_for, make_tenant


def _directory_admin(app: Flask, tenant: Tenant, name: str, *, in_group: bool = True) -> None:
    """Make the tenant's admin directory-managed: an admin through the "<name> Admins" group (or, without the
    group, through the default role ``admin``)."""
    slug = name.lower()
    with app.app_context():
        org = db.session.get(Organization, tenant.id)
        admin = db.session.get(Membership, tenant.members["admin"])
        assert org is not None
        assert admin is not None
        admin.source, admin.role_source, admin.directory_user_id = "directory", "mapping", f"du_{slug}_admin"
        db.session.add(DirectoryUser(organization_id=org.id, workos_id=f"du_{slug}_admin",
                                     directory_id=org.directory_id or "", email=f"admin@{slug}.test",
                                     state="active"))
        if in_group:
            db.session.add(DirectoryGroup(organization_id=org.id, workos_id=f"dg_{slug}_admins",
                                          directory_id=org.directory_id or "", name=f"{name} Admins"))
            db.session.add(DirectoryGroupMembership(organization_id=org.id, group_workos_id=f"dg_{slug}_admins",
                                                    user_workos_id=f"du_{slug}_admin"))
        else:
            org.default_role, admin.role_source = "admin", "default"
        db.session.commit()
        db.session.remove()


def _second_admin(app: Flask, tenant: Tenant) -> None:
    with app.app_context():
        developer = db.session.get(Membership, tenant.members["developer"])
        assert developer is not None
        developer.role = "admin"
        db.session.commit()
        db.session.remove()


def _admin_state(app: Flask, tenant: Tenant) -> tuple[str | None, str]:
    with app.app_context():
        admin = db.session.get(Membership, tenant.members["admin"])
        assert admin is not None
        state = (admin.role, admin.status)
        db.session.remove()
    return state


Writer = Callable[[FlaskClient, Tenant], Any]
WRITERS: dict[str, tuple[str | None, Writer]] = {
    # name: (directory set-up, the request)
    "member role change": (None, lambda c, t: c.patch(f"/api/v1/members/{t.members['admin']}",
                                                      headers=headers_for(t, "admin"), json={"role": "developer"})),
    "member removal": (None, lambda c, t: c.delete(f"/api/v1/members/{t.members['admin']}",
                                                   headers=headers_for(t, "admin"))),
    "mapping deletion": ("group", lambda c, t: c.delete(f"/api/v1/role-mappings/{t.ids['mapping']}",
                                                        headers=headers_for(t, "admin"))),
    "mapping edit": ("group", lambda c, t: c.patch(f"/api/v1/role-mappings/{t.ids['mapping']}",
                                                   headers=headers_for(t, "admin"), json={"role": "viewer"})),
    "mapping set replaced": ("group", lambda c, t: c.put("/api/v1/role-mappings", headers=headers_for(t, "admin"),
                                                         json={"mappings": []})),
    "default role via settings": ("default", lambda c, t: c.patch(
        "/api/v1/organization/settings", headers=headers_for(t, "admin"), json={"default_role": "viewer"})),
    "default role via mappings": ("default", lambda c, t: c.put(
        "/api/v1/role-mappings", headers=headers_for(t, "admin"),
        json={"mappings": [{"identifier_kind": "name", "group_identifier": "Other", "role": "admin"}],
              "default_role": "developer"})),
}


@pytest.mark.parametrize("another_admin", [False, True], ids=["last", "another"])
@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_every_writer_of_roles_keeps_an_active_admin(app: Flask, client: FlaskClient, writer: str,
                                                     another_admin: bool) -> None:
    name = f"W{sorted(WRITERS).index(writer)}{'b' if another_admin else 'a'}"
    tenant = make_tenant(app, name)
    setup, request = WRITERS[writer]
    if setup is not None:
        _directory_admin(app, tenant, name, in_group=setup == "group")
    if another_admin:
        _second_admin(app, tenant)
    before = _admin_state(app, tenant)
    response = request(client, tenant)
    if another_admin:
        assert response.status_code == 200, (writer, response.get_json())
        assert _admin_state(app, tenant) != before
        return
    assert response.status_code == 409, (writer, response.get_json())
    error = response.get_json()["error"]
    assert error["code"] == "last_admin"
    assert "without an active admin" in error["message"]
    assert _admin_state(app, tenant) == before == ("admin", "active")


def _alert(app: Flask, org_id: str) -> OrganizationAlert | None:
    with app.app_context():
        row = db.session.scalar(select(OrganizationAlert).where(OrganizationAlert.organization_id == org_id,
                                                                OrganizationAlert.kind == "no_active_admin"))
        db.session.expunge_all()
        db.session.remove()
    return row


def test_a_directory_change_that_removes_the_last_admin_applies_and_raises_an_alert(app: Flask) -> None:
    tenant = make_tenant(app, "Dirs")
    _directory_admin(app, tenant, "Dirs")
    with app.app_context():
        # The IdP took the admin out of the admins' group; the directory recompute (a fan-out chunk) applies it.
        membership = db.session.scalar(select(DirectoryGroupMembership).where(
            DirectoryGroupMembership.organization_id == tenant.id))
        assert membership is not None
        membership.present = False
        role_mapping.recompute_chunk(db.session, None, organization_id=tenant.id,
                                     cause=Cause.system("dsync.group.user_removed"), after=None, limit=100)
        db.session.commit()
        db.session.remove()
    assert _admin_state(app, tenant) == ("viewer", "active")  # applied: the IdP is the source of truth
    alert = _alert(app, tenant.id)
    assert alert is not None
    assert alert.resolved_at is None
    assert alert.details["last_admin_email"] == "admin@dirs.test"
    with app.app_context():
        opened = db.session.scalars(select(AuditEvent.action).where(
            AuditEvent.organization_id == tenant.id, AuditEvent.target_id == alert.id)).all()
        assert list(opened) == ["organization_alert.opened"]
        tenant_admin.grant_admin(db.session, organization_id=tenant.id, email="developer@dirs.test",
                                 actor=Actor.system("cli"))
        db.session.commit()
        db.session.remove()
    resolved = _alert(app, tenant.id)
    assert resolved is not None
    assert resolved.resolved_at is not None
    assert resolved.resolution == "admin_exists"


def test_a_deprovisioning_event_of_the_last_admin_applies_and_alerts(app: Flask) -> None:
    from hatidata_auth.services import provisioning

    tenant = make_tenant(app, "Deprov")
    with app.app_context():
        admin = db.session.get(Membership, tenant.members["admin"])
        assert admin is not None
        provisioning.set_access(db.session, None, admin, role=None, role_source=admin.role_source, active=False,
                                cause=Cause.system("dsync.user.deleted"))
        db.session.commit()
        db.session.remove()
    assert _admin_state(app, tenant) == ("admin", "deprovisioned")
    alert = _alert(app, tenant.id)
    assert alert is not None
    assert alert.resolved_at is None


def test_two_concurrent_demotions_of_the_two_last_admins_do_not_both_succeed(app: Flask) -> None:
    """The first demotion holds the organization's row lock until it commits; the second waits, counts again and
    is refused (PostgreSQL). SQLite serialises the writers: the second fails, never both succeed."""
    tenant = make_tenant(app, "Race")
    _second_admin(app, tenant)
    first_done, release = threading.Event(), threading.Event()
    outcomes: dict[str, str] = {}

    def demote(role: str, hold: bool) -> None:
        with app.app_context():
            try:
                tenant_admin.change_member_role(db.session, None, organization_id=tenant.id,  # type: ignore[arg-type]
                                                membership_id=tenant.members[role], role="viewer",
                                                cause=Cause.by(Actor.system("test")))
                if hold:
                    first_done.set()
                    release.wait(10)
                db.session.commit()
                outcomes[role] = "ok"
            except Exception as exc:  # noqa: BLE001 - the outcome is the assertion
                db.session.rollback()
                outcomes[role] = getattr(exc, "code", type(exc).__name__)
                first_done.set()
            finally:
                db.session.remove()

    first = threading.Thread(target=demote, args=("admin", True))
    first.start()
    assert first_done.wait(10)
    second = threading.Thread(target=demote, args=("developer", False))
    second.start()
    second.join(0.5)
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        assert second.is_alive(), "the second demotion must wait for the first's lock"
    release.set()
    first.join(10)
    second.join(10)
    assert outcomes["admin"] == "ok"
    assert outcomes["developer"] != "ok", outcomes
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        assert outcomes["developer"] == "last_admin"
    with app.app_context():
        assert last_admin.active_admin_ids(db.session, tenant.id) == {tenant.users["developer"]}
        db.session.remove()


@pytest.mark.postgres
def test_two_directory_demotions_sharing_the_organization_both_apply_and_the_later_count_alerts(app: Flask) -> None:
    """Two applier transactions each share the organization's row (as an event's binding does) and demote one of
    the two admins. Both reconcile: before, each upgraded its share to ``FOR UPDATE`` and waited for the other's
    share until PostgreSQL rolled one back (a deadlock, helper-155). Now the counts take the admins lock only: both
    commit, and the later count sees both demotions and opens the alert."""
    from hatidata_auth.services import provisioning

    tenant = make_tenant(app, "Upgrade")
    _second_admin(app, tenant)
    both_shared = threading.Barrier(2, timeout=10)
    errors: list[BaseException] = []

    def demote(role: str) -> None:
        with app.app_context():
            try:
                session = db.session()
                session.execute(select(Organization.id).where(Organization.id == tenant.id)
                                .with_for_update(read=True))
                both_shared.wait()
                membership = session.get(Membership, tenant.members[role])
                assert membership is not None
                provisioning.set_access(session, None, membership, role="viewer", role_source="mapping",
                                        active=True, cause=Cause.system("dsync.group.user_removed"))
                session.commit()
            except BaseException as exc:  # noqa: BLE001 - reported to the test's thread
                db.session.rollback()
                errors.append(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=demote, args=(role,)) for role in ("admin", "developer")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    with app.app_context():
        assert last_admin.active_admin_ids(db.session, tenant.id) == set()
        db.session.remove()
    alert = _alert(app, tenant.id)
    assert alert is not None
    assert alert.resolved_at is None
