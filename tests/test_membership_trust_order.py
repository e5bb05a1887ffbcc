"""A row that takes WorkOS's membership on trust ends alike whatever order WorkOS's events arrive in.

An active row that knows no WorkOS membership id (``grant-admin``'s first admin, an admin's grant before the
person's membership was known, a sign-in WorkOS did not answer the listing of) takes the first membership WorkOS
speaks of as its own and keeps its role while that membership's slug is not one of ours
(``workos_memberships.continues``). When the first word delivered was of a re-add, its predecessor's word arrived
after it as old news, and the re-add kept the grant's role: ``grant-admin``'s admin, removed and added again at
WorkOS, was an admin or the default role depending on the order WorkOS's events arrived in (a break-it review).
Now the predecessor's late word makes the re-add what in-order delivery makes it (``predecessor_seen``,
``restart``): the role of ours WorkOS named for it, else the default; a decision made here since stands.

A slug we do not know keeps the role the row holds when it arrives, so an older event of the same membership naming
one of ours, delivered after it, was lost: a granted admin WorkOS made a developer stayed an admin. Such a late
event now gives its role when nothing else decided the role since (``late_named_role``).

The property: any subset of the person's history, delivered in any order with repeats, ends as the same subset
delivered in the order it happened.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from hatidata_auth.causes import NO_REQUEST, Actor, Cause
from hatidata_auth.extensions import db
from hatidata_auth.models import Membership, Organization, User, utcnow
from hatidata_auth.services import role_mapping, sign_in_membership, sign_in_person, tenant_admin
from tests.test_inbox_batch_scope import ACME, _prepare
from tests.test_organization_membership_order import _deliver, _membership, _person
from tests.test_organization_membership_order import _event as _active_event

# One person's memberships at WorkOS in the order they happened: (type, membership, version, role, status), with
# slugs that are not ours (``member``, ``contractor``) and ours, invitations (``pending``) and deactivations.
HISTORY = [("created", 1, 1, "member", "pending"), ("updated", 1, 2, "contractor", "active"),
           ("deleted", 1, 2, None, "active"),
           ("created", 2, 3, "contractor", "pending"), ("updated", 2, 4, "developer", "inactive"),
           ("updated", 2, 5, "member", "active"), ("deleted", 2, 5, None, "active"),
           ("created", 3, 7, "member", "active"), ("updated", 3, 8, "admin", "active"),
           ("updated", 3, 9, "contractor", "active")]


def _event(kind: str, membership: int, version: int, role: str | None, status: str,
           workos_user_id: str) -> dict[str, Any]:
    payload = _active_event(kind, membership, version, role, workos_user_id)
    payload["data"]["status"] = status
    return payload


def _email(workos_user_id: str) -> str:
    """The email ``_person`` gave the person of *workos_user_id*."""
    return f"omo{int(workos_user_id.removeprefix('user_OMO'))}@partners.test"


def _acme(s: Any) -> Organization:
    org = s.scalar(select(Organization).where(Organization.workos_organization_id == ACME))
    assert org is not None
    return org


def _granted_person(app: Flask) -> tuple[str, str]:
    """A person ``grant-admin`` made Acme's admin before WorkOS's word on any membership of theirs."""
    workos_user_id, user_id = _person(app)
    with app.app_context():
        s = db.session()
        email = _email(workos_user_id)
        tenant_admin.grant_admin(s, organization_id=_acme(s).id, email=email, actor=Actor.system("cli"))
        s.commit()
        db.session.remove()
    return workos_user_id, user_id


def _signed_in_unlisted(app: Flask) -> tuple[str, str]:
    """A person signed in as an admin by the token while WorkOS did not answer the listing (the row knows no id)."""
    workos_user_id, user_id = _person(app)
    with app.app_context():
        s = db.session()
        org = _acme(s)
        email = _email(workos_user_id)
        signed = sign_in_person.upsert(s, org, {"id": workos_user_id, "email": email}, utcnow())
        m = sign_in_membership.upsert(s, app.extensions["hatidata_workos"].client, org, signed, "admin", NO_REQUEST,
                                      listed=[])
        assert (m.status, m.role, m.workos_membership_id) == ("active", "admin", None)
        s.commit()
        db.session.remove()
    return workos_user_id, user_id


STARTS = {"grant-admin": _granted_person, "sign-in": _signed_in_unlisted, "no row": _person}


def _state(app: Flask, user_id: str) -> tuple[Any, ...]:
    m = _membership(app, user_id)
    assert m is not None
    return m.status, m.role, m.role_source, m.workos_membership_id


def _same_end(app: Flask, got: tuple[Any, ...], want: tuple[Any, ...], what: Any) -> None:
    # A deleted membership's role is not compared: its row is out, and a re-add starts afresh.
    held = 1 if got[0] == want[0] == "deprovisioned" else 3
    assert got[:held] == want[:held], (what, got, want)
    assert (got[3] is None) == (want[3] is None), (what, got, want)
    if got[3] is not None:
        assert got[3].rsplit("_", 1)[1] == want[3].rsplit("_", 1)[1], (what, got, want)  # the same membership


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(delivered=st.lists(st.sampled_from(range(len(HISTORY))), min_size=1, max_size=8),
       default_role=st.sampled_from(["viewer", None]), start=st.sampled_from(sorted(STARTS)))
@example(delivered=[3, 2], default_role="viewer", start="grant-admin")  # the re-add, then the removal before it
@example(delivered=[7, 0], default_role="viewer", start="grant-admin")  # the third, then the first's late created
@example(delivered=[4, 2, 5], default_role="viewer", start="grant-admin")  # inactive with our role, then the removal
@example(delivered=[4, 0, 5], default_role=None, start="grant-admin")  # the same, no default role
@example(delivered=[7, 0, 2], default_role="viewer", start="sign-in")  # the token's admin, then the removal
@example(delivered=[0, 4, 3], default_role="viewer", start="grant-admin")  # our role while inactive, then older
@example(delivered=[9, 8], default_role="viewer", start="grant-admin")  # a slug not ours, then our older role
@example(delivered=[5, 4], default_role="viewer", start="sign-in")  # the same, the membership inactive before
@example(delivered=[3, 0], default_role="viewer", start="no row")  # a row made by a pending re-add
def test_a_role_taken_on_trust_ends_alike_in_any_delivery_order(app: Flask, delivered: list[int],
                                                                default_role: str | None, start: str) -> None:
    """*start*: how the row came to know no id; *default_role*: the organization's."""
    _prepare(app)
    with app.app_context():
        s = db.session()
        role_mapping.replace_mappings(s, app.extensions["hatidata_workos"].client, organization_id=_acme(s).id,
                                      specs=[], cause=Cause.by(Actor.system("test")), default_role=default_role)
        s.commit()
        db.session.remove()
    _granted_person(app)  # another admin: the roles below may change without an admin left
    workos_user_id, user_id = STARTS[start](app)
    in_order_user, in_order_id = STARTS[start](app)
    _deliver(app, [_event(*HISTORY[i], workos_user_id) for i in delivered])
    _deliver(app, [_event(*HISTORY[i], in_order_user) for i in sorted(set(delivered))])
    _same_end(app, _state(app, user_id), _state(app, in_order_id), delivered)


@pytest.mark.parametrize("start", sorted(STARTS))
def test_a_re_adds_created_tied_with_the_removal_stays_old_news_when_late(app: Flask, start: str) -> None:
    """The removal and the re-add's ``created`` (naming admin) in one millisecond, then the re-add's update with a
    slug we do not know: in order the tie keeps the ``created`` out and the update starts the re-add at the
    default; delivered late, the ``created`` is old news too, not a late role of ours (helper-136)."""
    _prepare(app)
    history = [("deleted", 1, 3, None, "active"), ("created", 2, 3, "admin", "active"),
               ("updated", 2, 4, "member", "active")]
    workos_user_id, user_id = STARTS[start](app)
    in_order_user, in_order_id = STARTS[start](app)
    _deliver(app, [_event(*history[i], workos_user_id) for i in (0, 2, 1)])
    _deliver(app, [_event(*e, in_order_user) for e in history])
    _same_end(app, _state(app, user_id), _state(app, in_order_id), start)
    assert _state(app, user_id)[1] != "admin"


def test_the_same_deletion_again_does_not_undo_a_grant_made_after_it(app: Flask) -> None:
    """WorkOS removed the person; ``grant-admin`` made them an admin here after; the same deletion delivered again
    (another event id: a re-delivery) is old news (helper-136: a deletion won every tie, its own repeat too)."""
    _prepare(app)
    _granted_person(app)  # another admin
    workos_user_id, user_id = _person(app)
    _deliver(app, [_event(*e, workos_user_id) for e in (("created", 1, 1, "viewer", "active"),
                                                         ("deleted", 1, 1, None, "active"))])
    with app.app_context():
        s = db.session()
        user = s.get(User, user_id)
        assert user is not None
        tenant_admin.grant_admin(s, organization_id=_acme(s).id, email=user.email, actor=Actor.system("cli"))
        s.commit()
        db.session.remove()
    _deliver(app, [_event("deleted", 1, 1, None, "active", workos_user_id)])
    assert _state(app, user_id)[:2] == ("active", "admin")


def _decided_here_after_the_re_add(app: Flask, *decisions: Callable[..., Any], re_add: tuple[Any, ...] = HISTORY[7],
                                   before: tuple[tuple[Any, ...], ...] = ()) -> tuple[str, str]:
    """A granted person whose re-add's event (*re_add*, then *before*) was taken on trust, then each of *decisions*
    (``tenant_admin`` services, given the session, the client and the membership) by an admin here; the person's
    WorkOS and our user ids."""
    _prepare(app)
    _granted_person(app)  # another admin
    workos_user_id, user_id = _granted_person(app)
    _deliver(app, [_event(*e, workos_user_id) for e in (re_add, *before)])
    for decide in decisions:
        with app.app_context():
            s = db.session()
            m = s.scalar(select(Membership).where(Membership.user_id == user_id))
            assert m is not None
            client = app.extensions["hatidata_workos"].client
            if decide is tenant_admin.grant_admin:
                user = s.get(User, user_id)
                assert user is not None
                decide(s, organization_id=m.organization_id, email=user.email, actor=Actor.system("cli"))
            else:
                decide(s, client, organization_id=m.organization_id, membership_id=m.id,
                       cause=Cause.by(Actor("user", "usr_trust_admin", "it@acme.test")))
            s.commit()
            db.session.remove()
    return workos_user_id, user_id


def _role(role: str) -> Callable[..., Any]:
    return functools.partial(tenant_admin.change_member_role, role=role)


@pytest.mark.parametrize(("re_add", "decisions", "then", "expected"), [
    # helper-135: WorkOS's word on the re-add after the decision made the decision look like the trusted role
    (("created", 3, 7, "admin", "active"), ["viewer"], [("updated", 3, 8, "member", "active")], "viewer"),
    (HISTORY[7], ["developer"], [("updated", 3, 8, "member", "active")], "developer"),
    (HISTORY[7], ["developer", "admin"], [], "admin"),  # changed and changed back
    (HISTORY[7], ["remove", "grant-admin"], [], "admin"),  # removed here and granted again
], ids=["demoted, then WorkOS's word", "changed, then WorkOS's word", "changed back", "removed and granted again"])
def test_every_decision_here_after_the_re_add_stands(app: Flask, re_add: tuple[Any, ...], decisions: list[str],
                                                     then: list[tuple[Any, ...]], expected: str) -> None:
    """Decisions here after the re-add was taken on trust, then WorkOS's word on the re-add and its predecessor's
    late deletion: the last decision stands, as in order (where it comes after the re-add and its default)."""
    made = [tenant_admin.remove_member if d == "remove" else tenant_admin.grant_admin if d == "grant-admin"
            else _role(d) for d in decisions]
    workos_user_id, user_id = _decided_here_after_the_re_add(app, *made, re_add=re_add)
    _deliver(app, [_event(*e, workos_user_id) for e in (*then, HISTORY[2])])
    assert _state(app, user_id)[:3] == ("active", expected, "manual")


def test_an_older_role_of_ours_does_not_undo_a_decision_made_after_it(app: Flask) -> None:
    """The re-add and its next event (a slug we do not know) applied, an admin here makes the person a viewer,
    WorkOS's next event keeps it; then an event older than the decision naming admin arrives: in order it came
    before the decision, so the viewer stands."""
    workos_user_id, user_id = _decided_here_after_the_re_add(
        app, _role("viewer"), re_add=("created", 3, 5, "member", "active"),
        before=(("updated", 3, 7, "contractor", "active"),))
    _deliver(app, [_event(*e, workos_user_id) for e in (("updated", 3, 8, "member", "active"),
                                                          ("updated", 3, 6, "admin", "active"))])
    assert _state(app, user_id)[:3] == ("active", "viewer", "manual")


def test_a_decision_here_after_the_re_add_stands_against_its_predecessors_late_word(app: Flask) -> None:
    """The re-add's ``created`` taken on trust, then an admin here makes the person a developer: the predecessor's
    late deletion leaves the admin's decision (in order it would come after the default role too)."""
    workos_user_id, user_id = _decided_here_after_the_re_add(app, _role("developer"))
    _deliver(app, [_event(*HISTORY[6], workos_user_id), _event(*HISTORY[2], workos_user_id)])
    assert _state(app, user_id)[:3] == ("active", "developer", "manual")


@pytest.mark.parametrize("late", [("deleted", 1, 2, None, "active"), ("updated", 3, 6, "admin", "active")],
                         ids=["predecessor's deletion", "older role of ours"])
def test_an_admins_removal_here_stands_against_late_word(app: Flask, late: tuple[Any, ...]) -> None:
    """The re-add's ``created`` taken on trust, then an admin here removes the person: neither the predecessor's
    late deletion nor an older event of the membership naming one of our roles lets them back."""
    workos_user_id, user_id = _decided_here_after_the_re_add(app, tenant_admin.remove_member)
    _deliver(app, [_event(*late, workos_user_id)])
    assert _state(app, user_id)[0] == "deprovisioned"


@pytest.mark.postgres
@pytest.mark.parametrize("demotion", [HISTORY[2], ("updated", 3, 8, "viewer", "active")],
                         ids=["the predecessor's late deletion", "WorkOS naming viewer"])
def test_an_events_demotion_racing_a_removal_here_of_the_other_admin_alerts(app: Flask,
                                                                            demotion: tuple[Any, ...]) -> None:
    """Two admins: an admin here removes one (uncommitted, the organization locked) while WorkOS's event demotes the
    other: the event's count waits for the removal, so no admin is left and the ``no_active_admin`` alert is open
    (helper-135: each transaction counted the other's admin, and neither alerted)."""
    from hatidata_auth.models import OrganizationAlert
    from hatidata_auth.services import alerts
    from hatidata_auth.unit_of_work import AppSession

    _prepare(app)
    _, removed_id = _granted_person(app)
    workos_user_id, demoted_id = _granted_person(app)
    _deliver(app, [_event(*HISTORY[7], workos_user_id)])  # the demoted admin's re-add, taken on trust
    with app.app_context():
        other = AppSession(bind=db.engine)
        removed = other.scalar(select(Membership).where(Membership.user_id == removed_id))
        assert removed is not None
        tenant_admin.remove_member(other, app.extensions["hatidata_workos"].client,
                                   organization_id=removed.organization_id, membership_id=removed.id,
                                   cause=Cause.by(Actor("user", "usr_trust_admin", "it@acme.test")))
        event = threading.Thread(target=_deliver, args=(app, [_event(*demotion, workos_user_id)]))
        event.start()
        event.join(2)
        waited = event.is_alive()
        other.commit()
        other.close()
        event.join(30)
    assert waited
    assert _state(app, demoted_id)[:2] == ("active", "viewer")
    with app.app_context():
        open_alert = db.session.scalar(select(OrganizationAlert.id).where(
            OrganizationAlert.kind == alerts.NO_ACTIVE_ADMIN, OrganizationAlert.resolved_at.is_(None)))
        db.session.remove()
    assert open_alert is not None
