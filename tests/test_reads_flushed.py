"""The rule of ``unit_of_work.reads_flushed``: a query that skips the autoflush still sees every change the session
holds of the tables it reads. The appliers skip the flush before their per-event lookups (an earlier event's rows
of other tables wait for the batch's commit); a pending change of the very rows looked up must be flushed first."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import select

from hatidata_auth.models import DirectoryGroupMembership, DirectoryUser, User
from hatidata_auth.services import role_mapping
from hatidata_auth.unit_of_work import NO_AUTOFLUSH, attach_inserted, built_from_values, reads_flushed
from tests.conftest import _empty_tables
from tests.support.people import prepare


def db_models() -> list[type[Any]]:
    """Every mapped model of the app."""
    from hatidata_auth.extensions import db

    return [mapper.class_ for mapper in db.Model.registry.mappers]


def test_a_pending_change_of_the_tables_read_is_flushed_first(app: Flask, emulator: Any) -> None:
    from hatidata_auth.extensions import db

    emulator.reset()
    _empty_tables(app)
    with app.app_context():
        session = db.session
        org_id = prepare(session, app.extensions["hatidata_workos"].client)["acme.test"].id
        row = session.scalars(select(DirectoryGroupMembership).where(
            DirectoryGroupMembership.organization_id == org_id, DirectoryGroupMembership.present.is_(True))).first()
        assert row is not None
        before = role_mapping.directory_groups_of(session, org_id, row.user_workos_id)
        assert row.group_workos_id in {g.workos_id for g in before}
        assert reads_flushed(session, DirectoryGroupMembership) is NO_AUTOFLUSH  # nothing pending yet

        row.present = False  # pending, not flushed
        assert dict(reads_flushed(session, DirectoryGroupMembership)) == {}  # SQLAlchemy's default: flush first
        after = role_mapping.directory_groups_of(session, org_id, row.user_workos_id)
        assert row.group_workos_id not in {g.workos_id for g in after}
        session.rollback()


def test_a_pending_change_of_other_tables_is_left_for_the_commit(app: Flask, emulator: Any) -> None:
    from hatidata_auth.extensions import db

    emulator.reset()
    _empty_tables(app)
    with app.app_context():
        session = db.session
        org_id = prepare(session, app.extensions["hatidata_workos"].client)["acme.test"].id
        du = session.scalars(select(DirectoryUser).where(DirectoryUser.organization_id == org_id,
                                                         DirectoryUser.user_id.is_not(None))).first()
        assert du is not None
        du.first_name = "Pending"
        assert reads_flushed(session, User, DirectoryGroupMembership) is NO_AUTOFLUSH
        role_mapping.directory_groups_of(session, org_id, du.workos_id)
        assert du in session.dirty  # not flushed by the lookup: sent with the transaction's other changes
        session.rollback()


def test_attach_inserted_refuses_a_row_missing_a_mapped_column(app: Flask) -> None:
    """A missing column would be expired on the object and read back by a query at its first use."""
    from hatidata_auth.extensions import db

    with app.app_context():
        with pytest.raises(ValueError, match="User row lacks last_login_at, workos_user_id"):
            attach_inserted(db.session, User, {"id": "usr_x", "email": "ada@example.test", "first_name": None,
                                               "last_name": None, "created_at": None, "updated_at": None})
        assert not db.session.new
        db.session.rollback()


@pytest.mark.parametrize("model", sorted(db_models(), key=lambda m: m.__name__), ids=lambda m: m.__name__)
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_built_from_values_is_the_constructed_object(model: type[Any], data: st.DataObject) -> None:
    """``built_from_values`` (the appliers' and the audit log's way to build an object without the constructor's
    per-attribute events) gives what ``model(**values)`` gives, for every model and any subset of its columns:
    the same attribute values, transient, nothing pending; a key that is no column is refused."""
    keys = sorted(attr.key for attr in sa_inspect(model).column_attrs)
    chosen = data.draw(st.lists(st.sampled_from(keys), unique=True))
    values = {key: data.draw(st.none() | st.text(max_size=8) | st.integers()) for key in chosen}
    built, constructed = built_from_values(model, values), model(**values)
    assert {k: getattr(built, k) for k in keys} == {k: getattr(constructed, k) for k in keys}
    assert sa_inspect(built).transient
    assert not any(sa_inspect(built).attrs[k].history.has_changes() for k in keys)
    with pytest.raises(ValueError, match="has no column"):
        built_from_values(model, {**values, "no_such_column": 1})
