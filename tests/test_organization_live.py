"""``Organization.live`` is the one rule for "its members may hold access here": the same answer in Python (an
instance's state) and in SQL (a query's condition), for every state an organization can be in. Each reader of an
organization's state (sign-in, switch, credentials, WorkOS's membership word, the directory, fan-out) uses it, so
a deleted organization cannot be live to one and gone to another."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import product

from flask import Flask
from sqlalchemy import select

from hatidata_auth.extensions import db
from hatidata_auth.models import Organization

STATES = list(product(("active", "deleted", "suspended"), (None, datetime(2031, 2, 5, tzinfo=UTC))))


def test_live_is_one_rule_in_python_and_sql(app: Flask) -> None:
    orgs = [Organization(name=f"Live {i}", status=status, deleted_at=deleted_at)
            for i, (status, deleted_at) in enumerate(STATES)]
    db.session.add_all(orgs)
    db.session.commit()
    ids = [o.id for o in orgs]
    db.session.expire_all()
    from_sql = set(db.session.scalars(select(Organization.id).where(Organization.id.in_(ids), Organization.live)))
    from_python = {o.id for o in db.session.scalars(select(Organization).where(Organization.id.in_(ids))) if o.live}
    flags = dict(db.session.execute(select(Organization.id, Organization.live).where(Organization.id.in_(ids))).all())
    assert from_sql == from_python == {orgs[0].id}  # active and never deleted: nothing else
    assert {i for i, live in flags.items() if live} == from_sql
