"""An admin's decision of a member's role here stands against WorkOS's older word delivered after it.

WorkOS does not promise delivery order. A member WorkOS had promoted at one moment (its event not delivered yet),
demoted here by an admin later, was an admin again when the promotion arrived: the row compared WorkOS's versions
only (a break-it review, F1). In order the promotion would have come first and the admin's decision after it. Now
the row keeps the time of the decision (``workos_memberships.ROLE_DECIDED``, set by a role change and by
``grant-admin``, also of a person who was an admin already) and WorkOS's word of a version not after it keeps the
role decided; its status still applies (in order, a deactivation before the decision would have left nothing to
decide), and WorkOS's newer word decides as before. Over every kind of WorkOS word, before and after the decision.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from hatidata_auth.causes import Actor, Cause
from hatidata_auth.extensions import db
from hatidata_auth.models import Membership, Organization, User
from hatidata_auth.services import tenant_admin
from tests.test_inbox_batch_scope import ACME, _envelope, _prepare
from tests.test_organization_membership_order import _deliver, _membership, _person

_ids = itertools.count(1)
LONG_AGO = datetime(2026, 1, 1, tzinfo=UTC)  # before any decision a test makes
# (status, role slug) of WorkOS's word, or None for a deletion.
WORDS: list[tuple[str, str | None] | None] = [("active", "admin"), ("active", "viewer"), ("active", "contractor"),
                                              ("inactive", "admin"), ("pending", None), None]


def _word(workos_user_id: str, membership: str, at: datetime, word: tuple[str, str | None] | None
          ) -> dict[str, Any]:
    stamp = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    status, role = word if word is not None else ("active", None)
    data: dict[str, Any] = {"object": "organization_membership", "id": membership, "user_id": workos_user_id,
                            "organization_id": ACME, "status": status, "created_at": "2025-12-01T00:00:00.000Z",
                            "updated_at": stamp}
    if role is not None:
        data["role"] = {"slug": role}
    kind = "deleted" if word is None else "updated"
    return _envelope(f"organization_membership.{kind}", data, stamp)


@pytest.fixture
def acme_prepared(app: Flask) -> Flask:
    _prepare(app)
    return app


def _member(app: Flask, role: str) -> tuple[str, str, str]:
    workos_user_id, user_id = _person(app)
    membership = f"om_RDH_{next(_ids)}"
    _deliver(app, [_word(workos_user_id, membership, LONG_AGO, ("active", role))])
    return workos_user_id, user_id, membership


def _org_id(app: Flask) -> str:
    with app.app_context():
        org_id = db.session.scalar(select(Organization.id).where(Organization.workos_organization_id == ACME))
        db.session.remove()
    assert org_id is not None
    return str(org_id)


def _change_role(app: Flask, user_id: str, role: str) -> None:
    with app.app_context():
        m = db.session.scalar(select(Membership).where(Membership.user_id == user_id))
        assert m is not None
        tenant_admin.change_member_role(db.session(), app.extensions["hatidata_workos"].client,
                                        organization_id=m.organization_id, membership_id=m.id, role=role,
                                        cause=Cause.by(Actor.system("test")))
        db.session.commit()
        db.session.remove()


def _expected(word: tuple[str, str | None] | None, decided: str, *, before: bool) -> tuple[str, str | None]:
    if word is None:
        return "deprovisioned", None
    status, slug = word
    named = slug if slug in ("admin", "developer", "viewer") else None
    role = decided if before or named is None else named
    return ("active", role) if status == "active" else ("inactive", role)


@pytest.mark.parametrize("before", [True, False], ids=["older", "newer"])
@pytest.mark.parametrize("word", WORDS, ids=lambda w: "deleted" if w is None else f"{w[0]}-{w[1]}")
def test_an_admins_role_change_stands_against_older_word(acme_prepared: Flask, word: Any, before: bool) -> None:
    app = acme_prepared
    workos_user_id, user_id, membership = _member(app, "developer")
    decided_at = datetime.now(UTC)
    _change_role(app, user_id, "developer" if word == ("active", "viewer") else "viewer")
    decided = _membership(app, user_id)
    assert decided is not None
    at = decided_at - timedelta(seconds=30) if before else decided_at + timedelta(days=1)
    _deliver(app, [_word(workos_user_id, membership, at, word)])
    m = _membership(app, user_id)
    assert m is not None
    status, role = _expected(word, str(decided.role), before=before)
    assert m.status == status, (m.status, m.role, m.details)
    if status == "active":
        assert m.role == role, (m.role, m.details)


def _grant(app: Flask, user_id: str) -> None:
    with app.app_context():
        email = db.session.scalar(select(User.email).where(User.id == user_id))
        tenant_admin.grant_admin(db.session(), organization_id=_org_id(app), email=str(email),
                                 actor=Actor.system("test"))
        db.session.commit()
        db.session.remove()


@pytest.mark.parametrize("before", [True, False], ids=["older", "newer"])
@pytest.mark.parametrize("word", WORDS, ids=lambda w: "deleted" if w is None else f"{w[0]}-{w[1]}")
@pytest.mark.parametrize("was", ["admin", "developer"])
def test_grant_admin_stands_against_older_word(acme_prepared: Flask, word: Any, before: bool, was: str) -> None:
    """``grant-admin`` decides the role as a role change does, also of an admin already: WorkOS's older word keeps
    it; WorkOS's status and a deletion still apply (a break-it review: holding the whole access against older word
    kept a person WorkOS deleted after the grant an admin here, a deletion's version being the membership's last
    update)."""
    app = acme_prepared
    workos_user_id, user_id, membership = _member(app, was)
    granted_at = datetime.now(UTC)
    _grant(app, user_id)
    at = granted_at - timedelta(seconds=30) if before else granted_at + timedelta(days=1)
    _deliver(app, [_word(workos_user_id, membership, at, word)])
    m = _membership(app, user_id)
    assert m is not None
    status, role = _expected(word, "admin", before=before)
    assert m.status == status, (m.status, m.role, m.details)
    if status == "active":
        assert m.role == role, m.details


def test_grant_admin_of_an_admin_stands_against_late_word_naming_a_role(acme_prepared: Flask) -> None:
    """A break-it review: the row kept an admin through a slug we do not know; ``grant-admin`` of that admin
    changed nothing, so the late-word rule gave an older event's ``viewer`` (delivered after) as in-order delivery
    would have without the grant."""
    app = acme_prepared
    workos_user_id, user_id, membership = _member(app, "admin")
    _deliver(app, [_word(workos_user_id, membership, LONG_AGO + timedelta(hours=2), ("active", "contractor"))])
    _grant(app, user_id)
    _deliver(app, [_word(workos_user_id, membership, LONG_AGO + timedelta(hours=1), ("active", "viewer"))])
    m = _membership(app, user_id)
    assert m is not None
    assert (m.status, m.role) == ("active", "admin"), m.details


def test_a_role_change_stands_against_late_word_naming_a_role(acme_prepared: Flask) -> None:
    """The same through a role change here that changed nothing (the member had that role already)."""
    app = acme_prepared
    workos_user_id, user_id, membership = _member(app, "developer")
    _deliver(app, [_word(workos_user_id, membership, LONG_AGO + timedelta(hours=2), ("active", "contractor"))])
    _change_role(app, user_id, "developer")
    _deliver(app, [_word(workos_user_id, membership, LONG_AGO + timedelta(hours=1), ("active", "viewer"))])
    m = _membership(app, user_id)
    assert m is not None
    assert (m.status, m.role) == ("active", "developer"), m.details
