"""A grant here goes on under WorkOS's first membership of the person, and delivery order does not change whose.

An active row that knows no WorkOS membership id (``grant-admin``'s first admin, an admin's grant before the
person's membership was known) takes the first membership WorkOS speaks of as its own and keeps its role while that
membership's slug is not one of ours (``workos_memberships.continues``). When the first word delivered was of a
re-add, its predecessor's word arrived after it as old news, and the grant stayed with the re-add: ``grant-admin``'s
admin, removed and added again at WorkOS, was an admin or the default role depending on the order WorkOS's events
arrived in (a break-it review). Now the predecessor's late word ends the trust (``predecessor_seen``,
``restart``): the property is that any subset of the person's history, delivered in any order with repeats, ends
as the same subset delivered in the order it happened.
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from hatidata_auth.causes import Actor
from hatidata_auth.extensions import db
from hatidata_auth.models import Organization
from hatidata_auth.services import tenant_admin
from tests.test_inbox_batch_scope import ACME, _prepare
from tests.test_organization_membership_order import _deliver, _event, _membership, _person

# One person's memberships at WorkOS in the order they happened, with slugs that are not ours (``member``,
# ``contractor``) and one that is: (type, membership, version, role).
HISTORY = [("created", 1, 1, "member"), ("updated", 1, 2, "contractor"), ("deleted", 1, 2, None),
           ("created", 2, 3, "contractor"), ("updated", 2, 4, "developer"), ("deleted", 2, 4, None),
           ("created", 3, 6, "member")]


def _granted_person(app: Flask) -> tuple[str, str]:
    """A person ``grant-admin`` made Acme's admin before WorkOS's word on any membership of theirs."""
    workos_user_id, user_id = _person(app)
    with app.app_context():
        s = db.session()
        org = s.scalar(select(Organization).where(Organization.workos_organization_id == ACME))
        assert org is not None
        email = f"omo{int(workos_user_id.removeprefix('user_OMO'))}@partners.test"
        tenant_admin.grant_admin(s, organization_id=org.id, email=email, actor=Actor.system("cli"))
        s.commit()
        db.session.remove()
    return workos_user_id, user_id


def _state(app: Flask, user_id: str) -> tuple[Any, ...]:
    m = _membership(app, user_id)
    assert m is not None
    return m.status, m.role, m.role_source, m.workos_membership_id


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(delivered=st.lists(st.sampled_from(range(len(HISTORY))), min_size=1, max_size=7))
@example(delivered=[3, 2])  # the re-add, then the removal before it
@example(delivered=[3, 0])  # the re-add, then the late created of its predecessor
@example(delivered=[6, 1])  # the third membership, then an old update of the first
@example(delivered=[6, 4, 5])  # the third, then WorkOS's role for the second, then its removal
def test_a_grant_here_ends_alike_in_any_delivery_order(app: Flask, delivered: list[int]) -> None:
    _prepare(app)
    workos_user_id, user_id = _granted_person(app)
    in_order_user, in_order_id = _granted_person(app)
    _deliver(app, [_event(*HISTORY[i], workos_user_id) for i in delivered])
    _deliver(app, [_event(*HISTORY[i], in_order_user) for i in sorted(set(delivered))])
    got, want = _state(app, user_id), _state(app, in_order_id)
    # A deleted membership's role is not compared: its row is out, and a re-add starts at the default.
    held = 1 if got[0] == want[0] == "deprovisioned" else 3
    assert got[:held] == want[:held], (delivered, got, want)
    assert (got[3] is None) == (want[3] is None), (delivered, got, want)
    if got[3] is not None:
        assert got[3].rsplit("_", 1)[1] == want[3].rsplit("_", 1)[1], (delivered, got, want)  # the same membership
