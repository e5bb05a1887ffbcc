"""A person at WorkOS (the emulator, through its API) and the membership steps of a sign-in and of an admin's
removal here, for the tests of ``services.workos_memberships`` (tests/test_workos_membership_word.py,
tests/test_admin_removal_mark.py)."""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from hatidata_auth.causes import NO_REQUEST, Actor, Cause
from hatidata_auth.extensions import db
from hatidata_auth.models import Membership, Organization, User, utcnow
from hatidata_auth.services import sign_in_membership, sign_in_person, tenant_admin, workos_memberships
from tests.support.people import Replay
from tests.support.servers import EmulatorControl, http_json
from tests.test_inbox_batch_scope import ACME
from tests.test_membership_rows_race import _store_and_drain

PEOPLE = itertools.count(1)


class WorkOS:
    """One person at WorkOS (the emulator), changed through WorkOS's API; the events each change emitted."""

    def __init__(self, control: EmulatorControl, app: Flask) -> None:
        self.replay = Replay(control, app)
        self.api = f"{control.base_url}/user_management"
        self.headers = control.headers
        self.email = f"word{next(PEOPLE)}.{time.monotonic_ns() % 10**9}@partners.test"
        self.user_id = self._call("POST", "/users", {"email": self.email})["id"]
        self.events: list[dict[str, Any]] = []
        self.replay.new_events()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        time.sleep(0.002)  # WorkOS's updated_at has millisecond resolution: keep each change its own version
        status, data = http_json(method, self.api + path, body, self.headers)
        assert status < 300, (status, data)
        return data

    def _emitted(self) -> None:
        self.events += [e for e in self.replay.new_events() if e["event"].startswith("organization_membership.")
                        and e["data"].get("user_id") == self.user_id]

    def add(self, role: str = "viewer") -> str:
        m = self._call("POST", "/organization_memberships", {"user_id": self.user_id, "organization_id": ACME,
                                                            "role_slug": role})
        self._emitted()
        return str(m["id"])

    def set_role(self, membership_id: str, role: str) -> None:
        self._call("PUT", f"/organization_memberships/{membership_id}", {"role_slug": role})
        self._emitted()

    def remove(self, membership_id: str) -> None:
        self._call("DELETE", f"/organization_memberships/{membership_id}")
        self._emitted()

    def set_status(self, membership_id: str, what: str) -> None:
        """``deactivate`` or ``reactivate`` the membership."""
        self._call("PUT", f"/organization_memberships/{membership_id}/{what}")
        self._emitted()


UNKNOWN_SLUGS = ("member", "contractor", "billing-admin", "admin-2")
"""Role slugs WorkOS's environment has and we do not (made through WorkOS's roles API by :func:`prepared_acme`)."""


def prepared_acme(app: Flask, control: EmulatorControl, *, with_admin: bool) -> tuple[Flask, EmulatorControl]:
    """Acme mirrored (``tests.test_inbox_batch_scope._prepare``), the environment's roles including
    :data:`UNKNOWN_SLUGS`, and, *with_admin*, an admin (so that removing one is not refused as the last)."""
    from tests.test_inbox_batch_scope import _prepare

    _prepare(app)
    for slug in UNKNOWN_SLUGS:
        status, body = http_json("POST", f"{control.base_url}/authorization/roles",
                                 {"slug": slug, "name": slug.title()}, control.headers)
        assert status in (201, 409), body
    if with_admin:
        standing = WorkOS(control, app)
        standing.add("admin")
        sign_in(app, standing, "admin")
    return app, control


def acme_org(session: Any) -> Organization:
    org = session.scalar(select(Organization).where(Organization.workos_organization_id == ACME))
    assert org is not None
    return org


def sign_in(app: Flask, person: WorkOS, role: str | None = None, *, issued_at: float | None = None) -> Membership:
    """The membership part of a sign-in into Acme (``sign_in_membership.upsert``) whose token claims *role*, issued
    at *issued_at* (its ``iat``; unknown by default), committed (the membership as it is then); raises
    :class:`LoginDenied` (rolled back) as the callback would refuse."""
    with app.app_context():
        s = db.session()
        try:
            org, client = acme_org(s), app.extensions["hatidata_workos"].client
            listed = workos_memberships.listing_for_sign_in(s, client, ACME, {"id": person.user_id,
                                                                              "email": person.email})
            signed = sign_in_person.upsert(s, org, {"id": person.user_id, "email": person.email}, utcnow())
            m = sign_in_membership.upsert(s, client, org, signed, role, NO_REQUEST, listed=listed,
                                          issued_at=issued_at)
            s.commit()
            s.refresh(m)
            s.expunge_all()
            return m
        finally:
            s.rollback()
            db.session.remove()


def mirror(app: Flask, person: WorkOS, user_id: str) -> None:
    """The sign-in's mirroring of the person's memberships (``sign_in_membership.sync_user_memberships``),
    committed."""
    with app.app_context():
        sign_in_membership.sync_user_memberships(db.session(), app.extensions["hatidata_workos"].client,
                                                 user_id=user_id, workos_user_id=person.user_id)
        db.session.commit()
        db.session.remove()


def membership_of(app: Flask, person: WorkOS) -> Membership | None:
    with app.app_context():
        m = db.session.scalar(select(Membership).join(User, User.id == Membership.user_id)
                              .where(User.workos_user_id == person.user_id,
                                     Membership.organization_id == acme_org(db.session).id))
        db.session.expunge_all()
        db.session.remove()
        return m


def remove_here(app: Flask, person: WorkOS, *, skew: float = 0.0) -> None:
    """An admin of Acme removes the person (``DELETE /api/v1/members/<id>``'s service), now by our clock (*skew*
    seconds off WorkOS's)."""
    from datetime import timedelta

    m = membership_of(app, person)
    assert m is not None
    with app.app_context(), pytest.MonkeyPatch.context() as patch:
        patch.setattr(tenant_admin, "utcnow", lambda: utcnow() + timedelta(seconds=skew))
        tenant_admin.remove_member(db.session(), app.extensions["hatidata_workos"].client,
                                   organization_id=m.organization_id, membership_id=m.id,
                                   cause=Cause.by(Actor("user", "usr_word_admin", "it@acme.test")))
        db.session.commit()
        db.session.remove()


TOLERANCE = workos_memberships.CLOCK_TOLERANCE
"""The clocks' tolerance the module ships with (the tests of the order of things set it to 0)."""


def removed_member(app: Flask, control: EmulatorControl) -> tuple[WorkOS, str]:
    """A person added at WorkOS, signed in, the membership's ``created`` applied, then removed here by an admin; the
    person and the WorkOS membership id."""
    person = WorkOS(control, app)
    first = person.add("viewer")
    sign_in(app, person, "viewer")
    _store_and_drain(app, person.events)
    remove_here(app, person)
    return person, first


def strip_mark(app: Flask, person: WorkOS) -> None:
    """The row as a removal made before the mark existed left it."""
    from hatidata_auth.models import Membership as Row

    m = membership_of(app, person)
    assert m is not None
    with app.app_context():
        row = db.session.get(Row, m.id)
        assert row is not None
        row.details = {k: v for k, v in row.details.items() if k != "removed_here"}
        db.session.commit()
        db.session.remove()


def migration_0023() -> Any:
    """Migration 0023's module (its ``mark_removals``)."""
    import importlib.util

    from hatidata_auth.app import MIGRATIONS_DIR

    spec = importlib.util.spec_from_file_location("m0023", MIGRATIONS_DIR / "versions" / "0023_admin_removal_marks.py")
    assert spec is not None
    assert spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    return migration
