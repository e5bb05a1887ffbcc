"""Every change of a member's access is audited (``provisioning.set_access``), whatever sequence of writes makes it.

A membership's access is its role, how that role was decided (``role_source``: what an admin, a directory group
or the organization's default says) and its status. For any sequence of ``set_access`` calls, each call that
changes any of the three returns the change and records exactly one ``membership.*`` audit event naming the
membership and its role and role source before and after (the role an inactive member holds for when it is active
again included: a deactivation that gave a new membership its role recorded neither); each call that changes
nothing returns ``None`` and records nothing. (A change of the role source alone, an admin's grant taken over by a
directory group at the same role, was written without an event.)
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from hatidata_auth.causes import Cause
from hatidata_auth.extensions import db
from hatidata_auth.models import AuditEvent, Membership
from hatidata_auth.roles import ROLES
from hatidata_auth.services import provisioning
from tests.api_support import make_tenant

SOURCES = ("default", "manual", "mapping", "idp", "sso")

calls = st.fixed_dictionaries({
    "role": st.one_of(st.none(), st.sampled_from(ROLES)),
    "role_source": st.sampled_from(SOURCES),
    "active": st.booleans(),
    "inactive_status": st.sampled_from(("deprovisioned", "inactive")),
    "dormant_role": st.booleans(),
})


def _events(membership_id: str) -> list[AuditEvent]:
    return list(db.session.scalars(select(AuditEvent).where(
        AuditEvent.target_type == "membership", AuditEvent.target_id == membership_id,
        AuditEvent.action.like("membership.%")).order_by(AuditEvent.id)))


def _access(membership: Membership) -> tuple[str | None, str, str]:
    return membership.role, membership.role_source, membership.status


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequence=st.lists(calls, min_size=1, max_size=6))
def test_each_change_of_access_is_one_audit_event_and_no_change_is_none(
        app: Flask, sequence: list[dict[str, Any]]) -> None:
    with app.app_context():
        name = f"Audited{db.session.scalar(select(func.count()).select_from(Membership))}"
    tenant = make_tenant(app, name)
    with app.app_context():
        membership = db.session.get(Membership, tenant.members["developer"])
        assert membership is not None
        for call in sequence:
            before, seen = _access(membership), len(_events(membership.id))
            change = provisioning.set_access(db.session, None, membership, cause=Cause.system("property"), **call)
            db.session.commit()  # audit events are written when their transaction commits
            after, events = _access(membership), _events(membership.id)[seen:]
            if after == before:
                assert change is None, (call, before)
                assert events == [], (call, before)
                continue
            assert change is not None, (call, before, after)
            assert len(events) == 1, (call, before, after, [e.action for e in events])
            # Every event names the access before and after it (the role an inactive member holds included).
            details = events[0].details
            role = details["to"] if events[0].action == "membership.role_changed" else details["role"]
            previous = details["from"] if events[0].action == "membership.role_changed" else details["previous_role"]
            assert (previous, details["previous_role_source"]) == before[:2], (call, before, details)
            assert (role, details["role_source"]) == after[:2], (call, before, after, details)
            assert (details["previous_status"], details.get("status", "active")) == (before[2], after[2]), details
        db.session.commit()
        db.session.remove()


def test_a_change_of_role_source_alone_names_both_sources(app: Flask) -> None:
    """An admin's grant taken over by a directory group at the same role: the event says what decided it before."""
    tenant = make_tenant(app, "Resourced")
    with app.app_context():
        membership = db.session.get(Membership, tenant.members["developer"])
        assert membership is not None
        membership.role_source = "manual"
        db.session.commit()
        change = provisioning.set_access(db.session, None, membership, role="developer", role_source="mapping",
                                         active=True, cause=Cause.system("dsync.group.user_added"))
        assert change is not None
        assert (change.from_role, change.to_role) == ("developer", "developer")
        db.session.commit()
        [event] = _events(membership.id)
        assert event.action == "membership.role_changed"
        assert event.details["previous_role_source"] == "manual"
        assert event.details["role_source"] == "mapping"
        db.session.commit()
        db.session.remove()
