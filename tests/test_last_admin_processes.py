"""The last admin under real concurrency: two admins removing each other at the same moment, through gunicorn's
workers over HTTP, never leave the organization without an active admin (services/last_admin.py)."""

from __future__ import annotations

import threading
from typing import Any

import httpx2
import pytest
from flask import Flask
from sqlalchemy import select

from hatidata_auth.causes import Actor, Cause
from hatidata_auth.extensions import db
from hatidata_auth.models import Membership, User
from hatidata_auth.roles import Role
from hatidata_auth.services import api_keys, last_admin, tenant_admin
from tests.auth_support import sync_organizations
from tests.test_revocation_processes import app_config as app_config
from tests.test_revocation_processes import workers as workers

pytestmark = pytest.mark.slow
ROUNDS = 4


def _admin(app: Flask, org_id: str, email: str) -> tuple[str, str]:
    """*email* made an active admin of the organization; its membership id and a fresh API key of its own."""
    with app.app_context():
        membership = tenant_admin.grant_admin(db.session(), organization_id=org_id, email=email,
                                              actor=Actor.system("test"))
        db.session.flush()
        key = api_keys.create_key(db.session(), organization_id=org_id, owner_user_id=membership.user_id,
                                  name="remover", scopes=["members:write"], cause=Cause.by(Actor.system("test")))
        db.session.commit()
        ids = str(membership.id), key.secret
        db.session.remove()
    return ids


def _only_admins(app: Flask, org_id: str, emails: set[str]) -> None:
    """Demote every other admin of the organization (set up directly: the guard is what is tested over HTTP)."""
    with app.app_context():
        rows = db.session.execute(select(Membership, User.email).join(User, User.id == Membership.user_id).where(
            Membership.organization_id == org_id, Membership.role == Role.ADMIN.value)).all()
        for membership, email in rows:
            if email not in emails:
                membership.role = Role.VIEWER.value
        db.session.commit()
        db.session.remove()


def _remove(url: str, start: threading.Barrier, answers: dict[str, Any], key: str, target: str) -> None:
    with httpx2.Client(timeout=20) as http:
        start.wait()
        answers[target] = http.delete(f"{url}/api/v1/members/{target}", headers={"Authorization": f"Bearer {key}"})


def test_two_admins_removing_each_other_at_once_leave_one(app: Flask, workers: str) -> None:
    org_id = sync_organizations(app)["org_01HTDQ8A500000000000000001"]
    for round_ in range(ROUNDS):
        first, second = f"first{round_}@hooli.test", f"second{round_}@hooli.test"
        first_id, first_key = _admin(app, org_id, first)
        second_id, second_key = _admin(app, org_id, second)
        _only_admins(app, org_id, {first, second})
        start = threading.Barrier(2)
        answers: dict[str, Any] = {}

        threads = [threading.Thread(target=_remove, args=(workers, start, answers, first_key, second_id)),
                   threading.Thread(target=_remove, args=(workers, start, answers, second_key, first_id))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        statuses = sorted(answer.status_code for answer in answers.values())
        with app.app_context():
            admins = last_admin.active_admin_ids(db.session(), org_id)
            db.session.remove()
        assert len(admins) == 1, (statuses, [a.text[:200] for a in answers.values()])
        # One removal wins; the other is refused as the last admin's, or its key was suspended with its owner.
        assert statuses[0] == 200, statuses
        assert statuses[1] in (401, 409), statuses
        if statuses[1] == 409:
            refused = next(a for a in answers.values() if a.status_code == 409)
            assert refused.json()["error"]["code"] == "last_admin"
