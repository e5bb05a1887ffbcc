"""Two edits of single role mappings at once each keep the other's (services/mapping_admin.py).

A break-it review found that an edit read the organization's mapping set before it took the organization's lock and
wrote back that set with its own change: a priority change made while another admin deleted a mapping brought the
deleted mapping back (with its members' roles), on PostgreSQL and SQLite. The rule: an edit of one mapping (or of the
default role) applies to the set as it stands once the lock is held.

Every ordered pair of edit kinds: the second edit has read the set (as the API's lookup of a mapping by id does) and
then waits for the lock the first holds; once the first commits, the second applies to what the first committed. The
end is the pair applied one after the other, a 404 for an edit of a mapping the first deleted.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from hatidata_auth.causes import Actor, Cause
from hatidata_auth.errors import AppError
from hatidata_auth.extensions import db
from hatidata_auth.models import Organization
from hatidata_auth.services import mapping_admin, role_mapping
from hatidata_auth.services.role_mapping import MappingSpec
from hatidata_auth.unit_of_work import AppSession
from tests.test_directory_sync import orgs as orgs

CAUSE = Cause.by(Actor.system("test"))
Specs = dict[tuple[str, str], tuple[str, int]]
Edit = Callable[[Any, Any, str, dict[tuple[str, str], str]], Any]

# Each edit, as a service call and as its effect on {(kind, identifier): (role, priority)} and the default role. The
# mapping naming the admins' group is never touched: an edit that left no admin would be refused (409).
EDITS: dict[str, tuple[Edit, Callable[[Specs, str | None], tuple[Specs, str | None]]]] = {
    "add": (lambda s, c, org, ids: mapping_admin.add_mapping(
        s, c, organization_id=org, spec=MappingSpec("name", "Contractors", "viewer", 3), cause=CAUSE),
        lambda m, d: ({**m, ("name", "Contractors"): ("viewer", 3)}, d)),
    "replace_by_group": (lambda s, c, org, ids: mapping_admin.add_mapping(
        s, c, organization_id=org, spec=MappingSpec("name", "HatiData Viewers", "developer", 4), cause=CAUSE),
        lambda m, d: ({**m, ("name", "HatiData Viewers"): ("developer", 4)}, d)),
    "priority": (lambda s, c, org, ids: mapping_admin.update_mapping(
        s, c, organization_id=org, mapping_id=ids["HatiData Viewers"], role=None, priority=9, cause=CAUSE),
        lambda m, d: _patched(m, "HatiData Viewers", priority=9, default=d)),
    "role": (lambda s, c, org, ids: mapping_admin.update_mapping(
        s, c, organization_id=org, mapping_id=ids["HatiData Developers"], role="viewer", priority=None, cause=CAUSE),
        lambda m, d: _patched(m, "HatiData Developers", role="viewer", default=d)),
    "delete": (lambda s, c, org, ids: mapping_admin.delete_mapping(
        s, c, organization_id=org, mapping_id=ids["HatiData Developers"], cause=CAUSE),
        lambda m, d: _deleted(m, "HatiData Developers", d)),
    "default_role": (lambda s, c, org, ids: mapping_admin.set_default_role(
        s, c, organization_id=org, default_role="viewer", cause=CAUSE),
        lambda m, d: (m, "viewer")),
}


def _patched(specs: Specs, group: str, *, default: str | None, role: str | None = None,
             priority: int | None = None) -> tuple[Specs, str | None]:
    if ("name", group) not in specs:
        raise LookupError(group)  # the service answers 404
    old_role, old_priority = specs[("name", group)]
    return {**specs, ("name", group): (role or old_role, old_priority if priority is None else priority)}, default


def _deleted(specs: Specs, group: str, default: str | None) -> tuple[Specs, str | None]:
    if ("name", group) not in specs:
        raise LookupError(group)
    return {key: value for key, value in specs.items() if key != ("name", group)}, default


def _state(organization_id: str) -> tuple[Specs, str | None]:
    with AppSession(db.engine) as session:
        specs = {m.key: (m.role, m.priority) for m in role_mapping.list_mappings(session, organization_id)}
        default = session.get(Organization, organization_id).default_role  # type: ignore[union-attr]
        session.rollback()
    return specs, default


def _expected(start: tuple[Specs, str | None], first: str, second: str) -> tuple[tuple[Specs, str | None], bool]:
    """The two edits applied one after the other, and whether the second is refused (404)."""
    after_first = EDITS[first][1](*start)
    try:
        return EDITS[second][1](*after_first), False
    except LookupError:
        return after_first, True


@pytest.mark.parametrize(("first", "second"), list(itertools.permutations(EDITS, 2)))
def test_an_edit_waiting_for_another_applies_to_what_it_committed(app: Flask, orgs: dict[str, Any], first: str,
                                                                   second: str) -> None:
    organization_id = orgs["acme.test"].id
    client = app.extensions["hatidata_workos"].client
    with app.app_context():
        start = _state(organization_id)
        with AppSession(db.engine) as session:
            ids = {m.group_identifier: str(m.id) for m in role_mapping.list_mappings(session, organization_id)}
            session.rollback()
        expected, refused = _expected(start, first, second)
        outcome: dict[str, Any] = {}

        def run_second() -> None:
            with app.app_context(), AppSession(db.engine) as session:
                role_mapping.list_mappings(session, organization_id)  # read before the lock, as a lookup by id does
                try:
                    EDITS[second][0](session, client, organization_id, ids)
                    session.commit()
                    outcome["status"] = "done"
                except AppError as exc:
                    session.rollback()
                    outcome["status"] = exc.status

        with AppSession(db.engine) as holder:
            EDITS[first][0](holder, client, organization_id, ids)  # holds the organization's lock until it commits
            waiting = threading.Thread(target=run_second)
            waiting.start()
            time.sleep(0.3)  # the second edit reads the set, then waits for the lock
            holder.commit()
        waiting.join(timeout=30)
        assert not waiting.is_alive()
        assert outcome["status"] == (404 if refused else "done")
        assert _state(organization_id) == expected
