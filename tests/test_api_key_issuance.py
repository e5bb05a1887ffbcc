"""A key is issued or given back only to an owner who is an active member when it commits, and a rotation's
successor carries every restriction of the key it replaces (``services/api_keys.py``).

Two faults a break-it review found on ``make run``:

- A key created while its owner was being removed stayed active: the creation read the owner's membership without a
  lock, the removal suspended the keys that existed, and the creation's key, inserted after, came back to life with
  the person's re-addition (4 of 8 races). The rule now: every path that issues a key or gives one back (creation,
  rotation, reinstatement) reads the owner's membership under a shared lock before it touches the key, the order a
  removal takes (the membership, then the keys). Tested over each path with a removal in progress, on both
  databases (SQLite's writers take turns: the read takes the write turn first).
- A rotation dropped the key's IP allowlist: the holder of a restricted key lifted an admin's restriction by
  rotating it. The successor now copies every column of :data:`api_keys.CARRIED_BY_ROTATION`, and every column of
  ``api_keys`` is either carried or the successor's own (a new column must be placed).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from hatidata_auth.causes import Actor, Cause
from hatidata_auth.errors import AppError
from hatidata_auth.extensions import db
from hatidata_auth.models import ApiKey, Membership, utcnow
from hatidata_auth.services import api_keys, last_admin, tenant_admin
from tests.api_support import Tenant, headers_for, make_tenant

OWN_COLUMNS = frozenset({"id", "prefix", "key_hash", "status", "last_used_at", "revoked_at", "revoked_by",
                         "rotated_from_id", "grace_until", "created_at", "updated_at"})
SYSTEM = Cause.by(Actor.system("test"))


def _key_of(tenant: Tenant, role: str) -> str:
    with db.session() as session:
        return str(session.scalar(select(ApiKey.id).where(ApiKey.organization_id == tenant.id,
                                                          ApiKey.owner_user_id == tenant.users[role])))


def _suspend(tenant: Tenant, key_id: str) -> None:
    api_keys.suspend_key(db.session(), organization_id=tenant.id, key_id=key_id, cause=SYSTEM)
    db.session.commit()


ISSUERS: dict[str, tuple[Callable[[Tenant, str], None], Callable[[Session, Tenant, str], Any]]] = {
    "create": (lambda tenant, key: None, lambda s, tenant, key: api_keys.create_key(
        s, organization_id=tenant.id, owner_user_id=tenant.users["developer"], name="raced",
        scopes=["data:read"], cause=SYSTEM)),
    "rotate": (lambda tenant, key: None, lambda s, tenant, key: api_keys.rotate_key(
        s, organization_id=tenant.id, key_id=key, cause=SYSTEM, grace_seconds=60)),
    "reinstate": (_suspend, lambda s, tenant, key: api_keys.reinstate_key(
        s, organization_id=tenant.id, key_id=key, cause=SYSTEM)),
}


def _removal(app: Flask, tenant: Tenant, held: threading.Event, release: threading.Event) -> None:
    """The owner's removal: the membership locked and deprovisioned, the owner's keys suspended; then *held* is set,
    and the transaction commits once *release* is set."""
    with app.app_context():
        session = db.session()
        owner = (Membership.organization_id == tenant.id, Membership.user_id == tenant.users["developer"])
        session.scalars(select(Membership).where(*owner).with_for_update()).all()
        session.execute(update(Membership).where(*owner).values(status="deprovisioned"))
        api_keys.suspend_user_keys(session, organization_id=tenant.id, user_id=tenant.users["developer"],
                                   cause=SYSTEM)
        held.set()
        release.wait(30)
        session.commit()
        db.session.remove()


def _held_transaction(app: Flask, before: Callable[[Session], Any], errors: list[BaseException],
                      held: threading.Event, release: threading.Event,
                      after: Callable[[Session], Any] = lambda session: None) -> None:
    """*before*, then *held* set; once *release* is set, *after* and the commit; what it raised in *errors*."""
    with app.app_context():
        try:
            before(db.session())
            held.set()
            release.wait(30)
            after(db.session())
            db.session.commit()
        except BaseException as exc:  # noqa: BLE001 - reported to the test's thread
            db.session.rollback()
            errors.append(exc)
        finally:
            held.set()
            db.session.remove()


@pytest.mark.parametrize("first", ["removal", "issuer"])
@pytest.mark.parametrize("path", sorted(ISSUERS))
def test_a_key_issued_while_its_owner_is_removed_never_outlives_the_removal(app: Flask, path: str,
                                                                           first: str) -> None:
    """Whichever locks first, the other waits for its commit: a removal first refuses the issuance (422
    ``invalid_owner``, or 409 for a key it suspended); an issuance first is followed by the removal, which suspends
    the key it issued. Either way the removed owner holds no active key."""
    prepare, issue = ISSUERS[path]
    tenant = make_tenant(app, f"Issued {path} {first}")
    errors: list[BaseException] = []
    with app.app_context():
        key = _key_of(tenant, "developer")
        prepare(tenant, key)
        db.session.remove()
    events = {name: (threading.Event(), threading.Event()) for name in ("removal", "issuer")}
    threads = {"removal": threading.Thread(target=_removal, args=(app, tenant, *events["removal"])),
               "issuer": threading.Thread(target=_held_transaction, args=(
                   app, lambda session: issue(session, tenant, key), errors, *events["issuer"]))}
    second = "issuer" if first == "removal" else "removal"
    try:
        threads[first].start()
        assert events[first][0].wait(30)
        assert not errors, errors
        threads[second].start()
        time.sleep(0.5)
        assert not events[second][0].is_set(), f"the {second} did not wait for the {first}'s lock on the membership"
    finally:
        for name in (first, second):
            events[name][1].set()
            threads[name].join(30)
    if first == "removal":
        assert len(errors) == 1, f"{path} issued a key to a member removed meanwhile"
        assert isinstance(errors[0], AppError), errors[0]
        assert (errors[0].status, errors[0].code) in ((422, "invalid_owner"), (409, "invalid_state"))
    else:
        assert not errors, errors
    with app.app_context():
        live = db.session.scalars(select(ApiKey.id).where(ApiKey.owner_user_id == tenant.users["developer"],
                                                          ApiKey.status == "active")).all()
        db.session.remove()
    assert live == []


def test_every_column_of_a_key_is_carried_by_a_rotation_or_the_successors_own() -> None:
    columns = set(ApiKey.__table__.columns.keys())
    assert api_keys.CARRIED_BY_ROTATION.isdisjoint(OWN_COLUMNS)
    assert columns == api_keys.CARRIED_BY_ROTATION | OWN_COLUMNS, "place a new column of api_keys in one of them"


def test_a_rotation_carries_every_restriction_and_the_allowlist_still_binds(app: Flask) -> None:
    tenant = make_tenant(app, "Rotated Restrictions")
    admin = app.test_client()
    with app.app_context():
        key = _key_of(tenant, "developer")
        db.session.execute(update(ApiKey).where(ApiKey.id == key).values(
            expires_at=utcnow() + timedelta(days=3), name="restricted agent"))
        db.session.commit()
        db.session.remove()
    restricted = admin.put(f"/api/v1/api-keys/{key}/ip-allowlist", json={"ip_allowlist": ["10.99.0.0/16"]},
                           headers=headers_for(tenant, "admin"))
    assert restricted.status_code == 200, restricted.get_json()
    rotated = admin.post(f"/api/v1/api-keys/{key}/rotate", json={"grace_seconds": 0},
                         headers=headers_for(tenant, "admin"))
    assert rotated.status_code == 201, rotated.get_json()
    successor = rotated.get_json()["key"]["id"]
    with app.app_context():
        old, new = (db.session.get(ApiKey, key), db.session.get(ApiKey, successor))
        assert old is not None
        assert new is not None
        carried = {c: (getattr(old, c), getattr(new, c)) for c in api_keys.CARRIED_BY_ROTATION}
        db.session.remove()
    assert all(before == after for before, after in carried.values()), carried
    secret = rotated.get_json()["secret"]
    outside = app.test_client().get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"})
    inside = app.test_client().get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"},
                                   environ_base={"REMOTE_ADDR": "10.99.1.2"})
    assert (outside.status_code, inside.status_code) == (403, 200), (outside.get_json(), inside.get_json())


@pytest.mark.parametrize("path", sorted(ISSUERS))
def test_an_issuance_waits_behind_an_admin_holding_the_organization_without_a_deadlock(app: Flask,
                                                                                      path: str) -> None:
    """The admin holds the organization's row and will lock the owner's membership next; the issuance started
    meanwhile waits for the row before it locks the membership (the order organization, membership, key). Taken
    the other way, the issuance held the membership and its insert waited for the row: a deadlock (a break-it
    review)."""
    prepare, issue = ISSUERS[path]
    tenant = make_tenant(app, f"Ordered {path}")
    with app.app_context():
        key = _key_of(tenant, "developer")
        prepare(tenant, key)
        db.session.remove()
    errors: list[BaseException] = []
    admin_held, admin_release = threading.Event(), threading.Event()
    issued, issue_release = threading.Event(), threading.Event()
    # An admin's change of the owner (a removal or role change): the organization's row, then the membership.
    admin = threading.Thread(target=_held_transaction, args=(
        app, lambda session: last_admin.lock_organization(session, tenant.id), errors, admin_held, admin_release,
        lambda session: tenant_admin.load_member(session, tenant.id, tenant.members["developer"], for_update=True)))
    issuer = threading.Thread(target=_held_transaction, args=(
        app, lambda session: issue(session, tenant, key), errors, issued, issue_release))
    issue_release.set()  # the issuance commits as soon as it is done
    try:
        admin.start()
        assert admin_held.wait(30)
        issuer.start()
        time.sleep(0.5)
        assert not issued.is_set(), f"{path} did not wait for the admin holding the organization"
    finally:
        admin_release.set()
        admin.join(30)
        issuer.join(30)
    assert not errors, errors
