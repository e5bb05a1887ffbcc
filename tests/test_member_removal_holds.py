"""An admin's removal either holds or is refused: no ``DELETE /api/v1/members/{id}`` that answers 200 is undone.

A new user found the removal of a directory member answered 200 and was undone by the directory's next word: a full
resync ("access repaired"), an event of the same user (a rename at the IdP), every ``make run`` (its seeding). The
directory decides its members' access (the overwrite rule, ``docs/directory-sync.md``), so the removal of a member
the directory provides is refused with 409 ``managed_by_directory`` and changes nothing; every other removal holds
against what the directory and WorkOS say next (``services/workos_memberships.py``: an admin's removal here).

Checked over every member of an organization with a directory and SSO, whatever made the member (the directory,
the CLI's admin grant, of a person the directory lists too), then the directory's next word on every one of its
users: a full resync and a rename of each at the IdP, delivered as signed webhooks. (The removal of a member
WorkOS's memberships made holds against WorkOS's word: ``tests/test_admin_removal_mark.py``. Not yet held: a member
removed here before the directory first links them, taken over by its first word.)
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from sqlalchemy import func, select

from hatidata_auth.extensions import db
from hatidata_auth.models import AuditEvent, Membership
from hatidata_auth.services import reconcile
from tests.support.dsync import post_event
from tests.support.servers import EmulatorControl, http_json
from tests.test_member_status import _setup

ACME_DIR = "directory_01HTDQ8D100000000000000001"


def _memberships(app: Flask, org_id: str) -> dict[str, tuple[Any, ...]]:
    with app.app_context():
        rows = {m.id: (m.source, m.role, m.status) for m in db.session.scalars(
            select(Membership).where(Membership.organization_id == org_id))}
        db.session.remove()
    return rows


def _audited(app: Flask, membership_id: str) -> int:
    with app.app_context():
        count = db.session.scalar(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.target_id == membership_id))
        db.session.remove()
    return int(count or 0)


def test_no_removal_that_answered_200_is_undone(app: Flask, emulator: Any) -> None:
    # Manual members beside the directory's: one the directory lacks, and one of its own made an admin by the CLI.
    ctx = _setup(app, emulator, "acme.test", also=("auditor@acme.test", "viewer@acme.test"))
    client = app.test_client()
    headers = {"Authorization": f"Bearer {ctx['secret']}"}
    before = _memberships(app, ctx["org"])
    assert {source for source, _, _ in before.values()} >= {"directory", "manual"}, before
    removed, refused = set(), set()
    for membership_id, (source, role, status) in before.items():
        if membership_id == ctx["caller"]:
            continue
        audited = _audited(app, membership_id)
        answer = client.delete(f"/api/v1/members/{membership_id}", headers=headers)
        db.session.remove()  # pytest-flask's context, which the requests share: a real request's teardown removes it
        if source == "directory":
            assert answer.status_code == 409, (source, answer.get_json())
            assert answer.get_json()["error"]["code"] == "managed_by_directory"
            assert _memberships(app, ctx["org"])[membership_id] == (source, role, status), "a refusal changed it"
            assert _audited(app, membership_id) == audited, "a refusal was recorded as a change"
            refused.add(membership_id)
        else:
            assert answer.status_code == 200, (source, answer.get_json())
            assert answer.get_json()["status"] == "deprovisioned"
            removed.add(membership_id)
    assert removed
    assert refused

    # The directory's next word on every one of its users: a full resync, then a rename of each at the IdP.
    with app.app_context():
        reconcile.full_resync(db.session, app.extensions["hatidata_workos"].client, organization_id=ctx["org"])
        db.session.commit()
        db.session.remove()
    control = EmulatorControl(emulator.url)
    status, body = http_json("GET", f"{control.base_url}/directory_users?directory={ACME_DIR}&limit=100", None,
                             control.headers)
    assert status == 200
    start = len(control.events())
    for user in body["data"]:
        control.ctl("PATCH", f"/directory_users/{user['id']}", {"first_name": "Renamed"})
    for event in control.events()[start:]:
        assert post_event(client, app, event).status_code == 200
    after = _memberships(app, ctx["org"])
    for membership_id in removed:
        assert after[membership_id][2] == "deprovisioned", ("a removal was undone", after[membership_id])
    for membership_id in refused:
        assert after[membership_id][2] == before[membership_id][2]
