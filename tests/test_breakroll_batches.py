"""Breaking the savepoint expiry (inbox_worker.roll_back), the person read with its directory user's lock and the
one-query membership lookup: batches whose directory users share people across organizations (an email change
then relinks one of them to a new person), with failing events anywhere, end as one event per transaction does."""

from __future__ import annotations

import os
from typing import Any

from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import test_inbox_batch_scope as bs

ACME, GLOBEX = bs.ACME, bs.GLOBEX


def _person_user(org: str, user: int, person: int, domain: str, state: str = "active", *,
                 refused: bool = False, deleted: bool = False) -> dict[str, Any]:
    """A directory user whose email names person *person* whatever its organization (so two organizations'
    directory users can share one person)."""
    event = bs._user(org, user, domain, state, refused=refused, deleted=deleted)
    event["data"]["email"] = f"p{person}@{domain}"
    return event


people = st.integers(0, 3)
pdomains = st.sampled_from(("shared.test", "initech.test"))
pstep = st.one_of(
    st.tuples(st.just("puser"), bs.orgs, st.integers(0, 2), people, pdomains,
              st.sampled_from(("active", "active", "active", "suspended"))),
    st.tuples(st.just("pdeleted"), bs.orgs, st.integers(0, 2), people, pdomains),
    st.tuples(st.just("prefused"), bs.orgs, st.integers(0, 2), people, pdomains),
    st.tuples(st.just("member"), st.integers(0, 2), st.booleans()),
    st.tuples(st.just("domains"), st.sampled_from((ACME, GLOBEX)), st.sampled_from(((), ("shared.test",))),
              st.booleans()),
    st.tuples(st.just("org_deleted"), st.just(GLOBEX)),
    st.tuples(st.just("directory_deleted"), bs.orgs),
    st.tuples(st.just("group_renamed"), st.sampled_from(("HatiData Admins", "Others"))),
)


def _pevent(spec: tuple[Any, ...]) -> dict[str, Any]:
    kind = spec[0]
    if kind == "puser":
        return _person_user(spec[1], spec[2], spec[3], spec[4], spec[5])
    if kind in ("pdeleted", "prefused"):
        return _person_user(spec[1], spec[2], spec[3], spec[4], deleted=kind == "pdeleted",
                            refused=kind == "prefused")
    if kind == "group_renamed":
        event = bs._group_created()
        event["event"], event["data"]["name"] = "dsync.group.updated", spec[1]
        return event
    return bs._event(spec)


@settings(max_examples=int(os.environ.get("BREAKROLL_EXAMPLES", "20")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(specs=st.lists(st.lists(pstep, min_size=6, max_size=20), min_size=2, max_size=4),
       batch=st.integers(2, 20))
def test_shared_people_batches_end_as_one_event_per_transaction_does(app: Flask, specs: list[list[tuple[Any, ...]]],
                                                                     batch: int) -> None:
    groups = [[bs._group_created()], *bs._groups(specs, _pevent)]
    bs._prepare(app)
    bs._apply(app, groups, 1)
    alone = bs._state(app)
    bs._prepare(app)
    bs._apply(app, groups, batch)
    assert bs._state(app) == alone


def _run(app: Flask, groups: list[list[dict[str, Any]]], batch: int) -> dict[str, Any]:
    bs._prepare(app)
    bs._apply(app, groups, batch)
    return bs._state(app)


def test_a_relink_with_failing_events_around_it_ends_as_one_event_per_transaction_does(app: Flask) -> None:
    """A0 and G0 share person p0; A0's email change relinks it to a new person (p0 is Globex's too), its old
    membership retired; a failing event before and after it in the same batch."""
    for fail_at in (0, 1, 2, 3):
        before = [[bs._group_created()], [_person_user(ACME, 0, 0, "shared.test")],
                  [_person_user(GLOBEX, 0, 0, "shared.test")], [bs._membership(0, True)]]
        batch = [bs._membership(1, True), _person_user(ACME, 0, 1, "shared.test"),
                 _person_user(GLOBEX, 1, 2, "shared.test"), _person_user(ACME, 2, 0, "shared.test")]
        batch.insert(fail_at, bs._organization(ACME, ("shared.test",), broken=True))
        groups = [*before, batch]
        alone, batched = _run(app, groups, 1), _run(app, groups, 20)
        assert batched == alone
        actions = {a for (_e, a, *_r) in alone["audit"]}
        assert {"directory_user.relinked", "membership.directory_unlinked"} <= actions, actions


def _old_paths(monkeypatch: Any) -> None:
    """The code before ce4b056 and 22dca4b: the lock reads the directory user alone (the person by Session.get),
    and the hanging memberships are read after set_access (retire_other_memberships with hanging=None)."""
    from sqlalchemy import select

    from hatidata_auth.models import DirectoryUser
    from hatidata_auth.services import directory_people as people
    from hatidata_auth.services.events import directory_state, directory_users

    def locked(ctx: Any, org: Any, workos_id: str) -> Any:
        return ctx.session.scalar(select(DirectoryUser).where(
            DirectoryUser.organization_id == org.id, DirectoryUser.workos_id == workos_id).with_for_update())

    monkeypatch.setattr(directory_state, "locked_directory_user", locked)
    monkeypatch.setattr(directory_users, "locked_directory_user", locked)
    monkeypatch.setattr(people, "membership_and_hanging",
                        lambda ctx, org, user_id, du: (people.membership_of(ctx, org, user_id), None))


@settings(max_examples=int(os.environ.get("BREAKROLL_EXAMPLES", "20")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(specs=st.lists(st.lists(pstep, min_size=6, max_size=20), min_size=2, max_size=4),
       batch=st.integers(1, 20))
def test_the_one_statement_lookups_end_as_the_two_statement_ones(app: Flask, monkeypatch: Any,
                                                                 specs: list[list[tuple[Any, ...]]],
                                                                 batch: int) -> None:
    groups = [[bs._group_created()], *bs._groups(specs, _pevent)]
    now = _run(app, groups, batch)
    with monkeypatch.context() as patch:
        _old_paths(patch)
        before = _run(app, groups, batch)
    assert now == before


def _split(app: Flask, on_other: bool) -> None:
    """A second person's membership hanging on A0 (a split), and, *on_other*, A0's person's membership moved onto
    another directory user (A9): the repair must keep A0's person's and retire the other."""
    from sqlalchemy import select, update

    from hatidata_auth.extensions import db
    from hatidata_auth.models import DirectoryUser, Membership, Organization, User

    with app.app_context():
        s = db.session()
        acme = s.scalar(select(Organization).where(Organization.workos_organization_id == ACME))
        assert acme is not None
        du = s.scalar(select(DirectoryUser).where(DirectoryUser.workos_id == "directory_user_A0"))
        assert du is not None
        assert du.user_id
        other = User(email="q@elsewhere.test")
        s.add(other)
        s.flush()
        s.add(Membership(organization_id=acme.id, user_id=other.id, role="admin", role_source="mapping",
                         source="directory", status="active", directory_user_id="directory_user_A0", details={}))
        if on_other:
            s.execute(update(Membership).where(Membership.user_id == du.user_id,
                                               Membership.organization_id == acme.id)
                      .values(directory_user_id="directory_user_A9"))
        s.commit()
        db.session.remove()


def test_a_split_is_repaired_as_with_two_statements(app: Flask, monkeypatch: Any) -> None:
    """Splits repaired by an applier's sync_member, on a state change, an email change (relink: the person is
    Globex's too), an email change back to a free email, with a failing event before it: the one-query lookup
    ends as the two-query one, in batches and alone."""
    setup = [[bs._group_created()], [_person_user(ACME, 0, 0, "shared.test")],
             [_person_user(GLOBEX, 0, 0, "shared.test")]]
    cases = {
        "suspend_then_active": [[_person_user(ACME, 0, 0, "shared.test", "suspended")],
                                [_person_user(ACME, 0, 0, "shared.test")]],
        "relink": [[_person_user(ACME, 0, 3, "shared.test")]],
        "member_and_relink": [[bs._membership(0, True), bs._organization(ACME, ("shared.test",), broken=True)],
                              [_person_user(ACME, 0, 3, "shared.test")]],
    }
    for name, steps in cases.items():
        for on_other in (False, True):
            for size in (1, 20):
                ends = []
                for old in (False, True):
                    with monkeypatch.context() as patch:
                        if old:
                            _old_paths(patch)
                        bs._prepare(app)
                        bs._apply(app, setup, 1)
                        _split(app, on_other)
                        bs._apply(app, steps, size)
                        state = bs._state(app)
                    ends.append(state)
                assert ends[0] == ends[1], (name, on_other, size)
                actions = {a for (_e, a, *_r) in ends[0]["audit"]}
                assert "membership.directory_unlinked" in actions, (name, on_other, size, actions)
