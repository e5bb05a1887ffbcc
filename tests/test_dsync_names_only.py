"""Property: a change of a directory user's names alone, mirrored without recomputing the membership
(``directory_state.mirror_settled_names``), leaves exactly what the full recompute (``sync_member``) leaves,
after any directory history and after any change an admin made by hand to the membership (the overwrite rule:
the directory wins at its next event).

For any directory history (renames among email changes, deactivations, deletions and group changes; its events
shuffled and duplicated, stored first and then applied by the appliers in batches, so that events of one batch
share a transaction and its deferred flushes), the directory users, their people, their memberships and the audit
actions of every event are the same with the fast path and with it turned off.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from hatidata_auth.causes import Actor, Cause
from hatidata_auth.models import DirectoryUser, Membership, User, utcnow
from hatidata_auth.services import provisioning, tenant_admin, workos_memberships
from hatidata_auth.services.events import directory_users
from tests.conftest import _empty_tables
from tests.support.dsync import audit_by_event, drain_inbox, post_event
from tests.support.people import prepare
from tests.support.servers import EmulatorControl
from tests.test_dsync_people_property import _run_history, _users

RENAME_HEAVY = ("rename", "rename", "rename", "create_user", "change_email", "take_email", "take_email",
                "deactivate", "reactivate", "delete_user", "add", "remove", "department")
ops_strategy = st.lists(st.tuples(st.sampled_from(RENAME_HEAVY), st.integers(0, 1000), st.integers(0, 1000)),
                        min_size=2, max_size=14)


def _play(control: EmulatorControl, ops: list[tuple[str, int, int]]) -> None:
    """Play the IdP (``test_dsync_people_property``'s history), plus ``take_email``: a user takes the email of
    another (a person's email held elsewhere: the link is refused, so a later rename is not settled)."""
    for kind, a, b in ops:
        if kind != "take_email":
            _run_history(control, [(kind, a, b)])
            continue
        users = _users(control)
        if len(users) > 1:
            taker, holder = users[a % len(users)], users[b % len(users)]
            if taker["id"] != holder["id"]:
                control.ctl("PATCH", f"/directory_users/{taker['id']}", {"email": holder["email"]})


def _state(session: Any, org_id: str) -> dict[str, Any]:
    """The organization's directory users with their person and memberships, keyed by what does not depend on
    generated ids (WorkOS ids, emails)."""
    session.expire_all()
    people = {u.id: (u.email, u.first_name, u.last_name) for u in session.scalars(select(User))}
    held: dict[str, list[tuple[Any, ...]]] = {}
    for m in session.scalars(select(Membership).where(Membership.organization_id == org_id)):
        held.setdefault(m.directory_user_id or f"person:{people[m.user_id][0]}", []).append(
            (people[m.user_id], m.role, m.role_source, m.status, m.source))
    users = {du.workos_id: (du.email, du.first_name, du.last_name, du.state, du.deleted_at is not None,
                            people.get(du.user_id) if du.user_id else None,
                            sorted(held.get(du.workos_id, []), key=repr))
             for du in session.scalars(select(DirectoryUser).where(DirectoryUser.organization_id == org_id))}
    session.rollback()
    return {"directory_users": users, "people": sorted(people.values(), key=repr),  # names may be None
            "unlinked": sorted((k, sorted(v, key=repr)) for k, v in held.items() if k.startswith("person:"))}


def _apply(app: Flask, emulator: Any, events: list[dict[str, Any]]) -> tuple[dict[str, Any], Counter[Any]]:
    """From the demo directory as seeded: store every event, then let the appliers apply them in batches."""
    from hatidata_auth.extensions import db

    emulator.reset()
    _empty_tables(app)
    client = app.test_client()
    with app.app_context():
        org_id = prepare(db.session, app.extensions["hatidata_workos"].client)["acme.test"].id
        for event in events:
            assert post_event(client, app, event, drain=False).status_code == 200
        drain_inbox(app)
        state = _state(db.session, org_id)
    ids = {event["id"] for event in events}  # the resync that seeds the directory has ids of its own
    actions = Counter((source, action) for (source, action, _target), n in audit_by_event(app).items()
                      if source in ids for _ in range(n))
    return state, actions


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(ops=ops_strategy, data=st.data())
def test_names_only_fast_path_equals_the_full_recompute(ops: list[tuple[str, int, int]], data: st.DataObject,
                                                        app: Flask, emulator: Any) -> None:
    emulator.reset()
    control = EmulatorControl(emulator.url)
    start = len(control.events())
    _play(control, ops)
    events = control.events()[start:]
    duplicates = data.draw(st.lists(st.integers(0, max(len(events) - 1, 0)), max_size=len(events) // 2 + 1))
    order = data.draw(st.permutations(list(range(len(events))) + (duplicates if events else [])))
    delivered = [events[i] for i in order]

    fast = _apply(app, emulator, delivered)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(directory_users, "mirror_settled_names", lambda *_args: False)
        full = _apply(app, emulator, delivered)
    assert fast[0] == full[0]
    assert fast[1] == full[1]


def _hand_made(writer: str, session: Any, workos: Any, org_id: str, membership_id: str, email: str) -> None:
    """A writer other than the directory changes a directory-managed member: the CLI's admin grant, or a removal by
    an admin (refused now, ``tenant_admin.remove_member``; databases keep the ones made before, written here as it
    wrote them)."""
    cause = Cause.by(Actor.system("test"))
    if writer == "remove":
        membership = session.get(Membership, membership_id)
        workos_memberships.remove_here(membership, now=utcnow())
        provisioning.set_access(session, workos, membership, role=None, role_source=membership.role_source,
                                active=False, cause=cause.with_reason("removed by an admin"),
                                inactive_status="deprovisioned")
    else:
        tenant_admin.grant_admin(session, organization_id=org_id, email=email, actor=Actor.system("test"))


def _rename_after(app: Flask, emulator: Any, writer: str) -> tuple[Any, ...]:
    from hatidata_auth.extensions import db

    emulator.reset()
    _empty_tables(app)
    control = EmulatorControl(emulator.url)
    client = app.test_client()
    with app.app_context():
        workos = app.extensions["hatidata_workos"].client
        org_id = prepare(db.session, workos)["acme.test"].id
        du, membership = db.session.execute(
            select(DirectoryUser, Membership).join(Membership, Membership.user_id == DirectoryUser.user_id)
            .where(DirectoryUser.organization_id == org_id, Membership.organization_id == org_id,
                   Membership.status == "active", Membership.role != "admin",
                   Membership.directory_user_id == DirectoryUser.workos_id)
            .order_by(DirectoryUser.workos_id)).first()
        workos_id, user_id, membership_id = du.workos_id, du.user_id, membership.id
        email = db.session.get(User, user_id).email
        db.session.rollback()
        _hand_made(writer, db.session, workos, org_id, membership_id, email)
        db.session.commit()
        start = len(control.events())
        control.ctl("PATCH", f"/directory_users/{workos_id}", {"first_name": "Tomasz", "last_name": "Wren"})
        for event in control.events()[start:]:
            assert post_event(client, app, event).status_code == 200
        db.session.expire_all()
        after = db.session.get(Membership, membership_id)
        person = db.session.get(User, user_id)
        state = (after.role, after.role_source, after.status, person.first_name, person.last_name)
        db.session.rollback()
    return state


@pytest.mark.parametrize("writer", ["remove", "grant_admin"])
def test_a_rename_after_a_hand_made_change_equals_the_full_recompute(app: Flask, emulator: Any,
                                                                     writer: str) -> None:
    """Found by a break-it review: the shortcut kept a role set by hand where the full recompute applies the
    overwrite rule. The membership must be settled too (active, the directory's, its role from the mappings)."""
    fast = _rename_after(app, emulator, writer)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(directory_users, "mirror_settled_names", lambda *_args: False)
        full = _rename_after(app, emulator, writer)
    assert fast == full


def test_a_rename_of_a_settled_user_reads_no_membership(app: Flask, emulator: Any) -> None:
    """The fast path is taken for the common case, a settled active user renamed: its person gets the new names,
    audited once as ``user.updated``, and no ``directory_user.*`` recompute runs."""
    from hatidata_auth.extensions import db

    emulator.reset()
    _empty_tables(app)
    control = EmulatorControl(emulator.url)
    client = app.test_client()
    with app.app_context():
        org_id = prepare(db.session, app.extensions["hatidata_workos"].client)["acme.test"].id
        # In order: without it the database may return the person Globex's directory also lists, whose rename
        # Acme alone does not carry (docs: the names rule), and the test would check the wrong rule.
        du = db.session.scalars(select(DirectoryUser).where(DirectoryUser.organization_id == org_id,
                                                            DirectoryUser.state == "active")
                                .order_by(DirectoryUser.workos_id)).first()
        assert du is not None
        assert du.user_id is not None
        workos_id, user_id = du.workos_id, du.user_id
        db.session.rollback()
        start = len(control.events())
        control.ctl("PATCH", f"/directory_users/{workos_id}", {"first_name": "Ngozi", "last_name": "Okafor-Lind"})
        taken: list[bool] = []
        original = directory_users.mirror_settled_names

        def spy(*args: Any) -> bool:
            taken.append(original(*args))
            return taken[-1]

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(directory_users, "mirror_settled_names", spy)
            renamed = control.events()[start:]
            for event in renamed:
                assert post_event(client, app, event).status_code == 200
        assert taken == [True]
        person = db.session.get(User, user_id)
        assert person is not None
        assert (person.first_name, person.last_name) == ("Ngozi", "Okafor-Lind")
        db.session.rollback()
    ids = {event["id"] for event in renamed}
    actions = {action for (source, action, target) in audit_by_event(app) if source in ids}
    assert {target for (source, _action, target) in audit_by_event(app) if source in ids} == {workos_id, user_id}
    assert actions == {"directory_user.updated", "user.updated"}
