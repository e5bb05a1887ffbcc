"""An organization deleted here keeps its members deprovisioned, whatever WorkOS says of them after or before.

A break-it review found WorkOS's ``organization_membership.*`` word, applied after the organization's deletion (two
inbox keys: either may be applied first), moving a member from ``deprovisioned`` to ``inactive`` with WorkOS's role
for later, a ``created`` making a row holding an admin role, and the sign-in's mirroring of a person's other
memberships making an active admin row in the deleted organization (``workos_memberships.apply``,
``sign_in_membership.sync_user_memberships``). No access followed (sign-in, switch and credentials check the
organization), but the end state depended on the delivery order. (A deactivation applied before the deletion
still ends inactive, after it deprovisioned: the deletion deprovisions active members only, in chunks counted
from them.)
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from hatidata_auth.extensions import db
from hatidata_auth.models import Membership, User
from hatidata_auth.services import sign_in_membership
from tests.test_inbox_batch_scope import ACME, _envelope, _prepare
from tests.test_membership_trust_order import _state
from tests.test_organization_membership_order import _deliver, _event, _person


def _org_deleted() -> dict[str, Any]:
    stamp = "2031-02-05T12:00:00.000Z"
    return _envelope("organization.deleted", {"object": "organization", "id": ACME, "name": "Acme", "domains": [],
                                              "created_at": "2024-01-01T00:00:00.000Z", "updated_at": stamp}, stamp)


def _ends(app: Flask, before: list[dict[str, Any]], word: dict[str, Any], org_deleted_first: bool,
          workos_user_id: str, user_id: str) -> tuple[Any, ...]:
    _deliver(app, before)
    _deliver(app, [_org_deleted(), word] if org_deleted_first else [word, _org_deleted()])
    return _state(app, user_id)[:3]


@pytest.mark.parametrize("history", ["member", "no row"])
@pytest.mark.parametrize("word", [("updated", 1, 6, "developer", "active"), ("created", 1, 6, "admin", "active"),
                                  ("deleted", 1, 6, None, "active")], ids=["promoted", "created", "deleted"])
def test_a_deleted_organizations_member_ends_alike_in_either_order(app: Flask, history: str,
                                                                  word: tuple[Any, ...]) -> None:
    """A member (viewer) or a person with no row; WorkOS's word of them and the organization's deletion, in either
    order: the same end, deprovisioned (the role held for later as in-order delivery leaves it)."""
    ends = []
    for org_deleted_first in (False, True):
        _prepare(app)
        workos_user_id, user_id = _person(app)
        before = [_event("created", 1, 1, "viewer", workos_user_id)] if history == "member" else []
        kind, membership, version, role, status = word
        event = _event(kind, membership, version, role, workos_user_id)
        event["data"]["status"] = status
        ends.append(_ends(app, before, event, org_deleted_first, workos_user_id, user_id))
    assert ends[0] == ends[1], ends
    assert ends[0][0] == "deprovisioned", ends


def test_the_mirroring_makes_no_active_row_in_a_deleted_organization(app: Flask, emulator_control: Any) -> None:
    """The person is an active member of Acme at WorkOS (its organization.deleted applied here first): a sign-in
    elsewhere mirrors the person's memberships; no active membership of the deleted organization is created."""
    from tests.support.membership_word import WorkOS

    _prepare(app)
    person = WorkOS(emulator_control, app)
    person.add("admin")
    _deliver(app, [_org_deleted()])
    with app.app_context():
        user = User(email=person.email, workos_user_id=person.user_id)
        db.session.add(user)
        db.session.commit()
        user_id = user.id
        sign_in_membership.sync_user_memberships(db.session(), app.extensions["hatidata_workos"].client,
                                                 user_id=user_id, workos_user_id=person.user_id)
        db.session.commit()
        m = db.session.scalar(select(Membership).where(Membership.user_id == user_id))
        state = None if m is None else (m.status, m.role)
        db.session.remove()
    assert state is None or state[0] != "active", state
