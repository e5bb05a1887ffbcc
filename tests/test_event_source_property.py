"""Property: histories of three organizations' directories, mixed with events naming another organization's
directory or a deleted directory, delivered shuffled and duplicated, leave every organization equal to its own
live directory, and no refused or ignored event changes anything."""

from __future__ import annotations

import itertools
from typing import Any

from flask import Flask
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from hatidata_auth.models import AuditEvent, DirectoryUser, Organization, WebhookEvent
from hatidata_auth.services import reconcile
from tests.conftest import _empty_tables
from tests.support.dsync import mirror_organizations, post_event
from tests.support.servers import EmulatorControl
from tests.support.sources import (
    DIRECTORY_EVENT_TYPES,
    active_members,
    directory_objects,
    directory_of,
    event,
    payload_for,
)

DOMAINS = ("globex.test", "initech.test", "umbrella.test")
KINDS = ("create_user", "deactivate", "reactivate", "delete_user", "add", "remove", "update_user",
         "replace_directory")
# Stale events of a deleted directory: its objects' events. (A dsync.activated of the old directory delivered
# before its deletion is a legitimate event that makes it the organization's directory again: left out.)
LATE_TYPES = [t for t in DIRECTORY_EVENT_TYPES if t.startswith(("dsync.user.", "dsync.group."))]
_counter = itertools.count()

op = st.tuples(st.integers(0, len(DOMAINS) - 1), st.sampled_from(KINDS), st.integers(0, 1000), st.integers(0, 1000))
foreign = st.tuples(st.integers(0, len(DOMAINS) - 1), st.integers(1, len(DOMAINS) - 1),
                    st.sampled_from(DIRECTORY_EVENT_TYPES))


def _play(control: EmulatorControl, orgs: list[Organization], ops: list[tuple[int, str, int, int]]) -> dict[
        int, tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]]:
    """Apply the operations at the IdP; returns the directories deleted on the way (with their objects)."""
    replaced: dict[int, tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]] = {}
    for index, kind, a, b in ops:
        org = orgs[index]
        directory = directory_of(control, org.workos_organization_id)
        users, groups = directory_objects(control, directory["id"])
        if kind == "replace_directory" and index not in replaced:
            replaced[index] = (directory, users, groups)
            control.ctl("DELETE", f"/directories/{directory['id']}")
            control.ctl("POST", f"/organizations/{org.workos_organization_id}/directories", {"name": "HR"})
        elif kind == "create_user" or not users or kind == "replace_directory":
            n = next(_counter)
            control.ctl("POST", f"/directories/{directory['id']}/users",
                        {"email": f"q{n}@{org.domains[0]}", "first_name": "Q", "last_name": str(n)})
        elif kind in ("add", "remove"):
            if groups:
                verb = "POST" if kind == "add" else "DELETE"
                control.ctl(verb, f"/directory_groups/{groups[b % len(groups)]['id']}/members/"
                                  f"{users[a % len(users)]['id']}")
        elif kind == "update_user":
            control.ctl("PATCH", f"/directory_users/{users[a % len(users)]['id']}", {"last_name": f"L{b}"})
        elif kind == "delete_user":
            control.ctl("DELETE", f"/directory_users/{users[a % len(users)]['id']}")
        else:
            control.ctl("POST", f"/directory_users/{users[a % len(users)]['id']}/{kind}")
    return replaced


def _live(control: EmulatorControl, org: Organization) -> tuple[set[str], set[str]]:
    users, _ = directory_objects(control, directory_of(control, org.workos_organization_id)["id"])
    return {u["id"] for u in users}, {u["email"] for u in users if u["state"] == "active"}


# No shrink phase: each example replays whole emulator histories, so shrinking takes minutes.
@settings(max_examples=10, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=st.lists(op, min_size=1, max_size=8), foreigners=st.lists(foreign, max_size=4),
       late=st.lists(st.sampled_from(LATE_TYPES), max_size=3), data=st.data())
def test_histories_with_foreign_and_stale_sources_converge(ops: list[tuple[int, str, int, int]],
                                                           foreigners: list[tuple[int, int, str]],
                                                           late: list[str], data: st.DataObject,
                                                           app: Flask, emulator: Any) -> None:
    from hatidata_auth.extensions import db

    emulator.reset()
    _empty_tables(app)
    control = EmulatorControl(emulator.url)
    with app.app_context():
        session = db.session
        workos_client = app.extensions["hatidata_workos"].client
        found = mirror_organizations(session, workos_client)
        orgs = [found[d] for d in DOMAINS]
        for org in orgs:
            reconcile.full_resync(session, workos_client, organization_id=org.id)
        seeds = [(directory_of(control, o.workos_organization_id),
                  *directory_objects(control, directory_of(control, o.workos_organization_id)["id"])) for o in orgs]
        start = len(control.events())
        replaced = _play(control, orgs, ops)
        history = control.events()[start:]
        crafted = []
        for owner, shift, event_type in foreigners:  # another organization's directory
            directory, users, groups = seeds[owner]
            claimed = orgs[(owner + shift) % len(orgs)]
            crafted.append(event(event_type, payload_for(event_type, directory=directory, user=users[0],
                                                         group=groups[0],
                                                         organization_id=claimed.workos_organization_id)))
        stale = []
        for n, event_type in enumerate(late):  # late events of a deleted directory
            if replaced:
                index = sorted(replaced)[n % len(replaced)]
                directory, users, groups = replaced[index]
                stale.append(event(event_type, payload_for(event_type, directory=directory, user=users[0],
                                                           group=groups[0],
                                                           organization_id=orgs[index].workos_organization_id)))
        deliveries = history + crafted + stale
        duplicates = data.draw(st.lists(st.integers(0, max(len(deliveries) - 1, 0)),
                                        max_size=len(deliveries) // 2)) if deliveries else []
        queue = [deliveries[i] for i in data.draw(st.permutations(list(range(len(deliveries))) + duplicates))]
        position = {}
        for i, payload in enumerate(queue):
            position.setdefault(payload["id"], i)
        deleted_by = {e["data"]["id"]: position[e["id"]] for e in history if e["event"] == "dsync.deleted"}
        client = app.test_client()
        for payload in queue:
            response = post_event(client, app, payload)
            assert response.status_code == 200, response.get_json()

        for org in orgs:
            ids, emails = _live(control, org)
            session.expire_all()
            ours = set(session.scalars(select(DirectoryUser.workos_id).where(
                DirectoryUser.organization_id == org.id, DirectoryUser.deleted_at.is_(None))))
            session.rollback()
            assert ours == ids, org.domains
            assert active_members(session, org) == emails, org.domains
        session.expire_all()
        stored = {row.event_id: row for row in session.scalars(select(WebhookEvent))}
        for payload in crafted:
            assert stored[payload["id"]].status == "ignored"
            assert (stored[payload["id"]].last_error or "").startswith("refused: ")
        for payload in stale:  # those that arrive after their directory's deletion are ignored
            directory_id = payload["data"].get("directory_id")
            if position[payload["id"]] > deleted_by[directory_id]:
                assert (stored[payload["id"]].status, stored[payload["id"]].last_error) == (
                    "ignored", "directory deleted")
        not_applied = [e for e, row in stored.items() if row.status == "ignored"]
        caused = session.scalars(select(AuditEvent.action).where(AuditEvent.source_event_id.in_(not_applied))).all()
        assert set(caused) <= {"directory_event.refused", "directory_event.ignored"}  # no change, only the record
        session.rollback()

