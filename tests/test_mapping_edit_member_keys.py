"""A role-mapping edit never waits for a member's entity key while it holds the organization's row
(``fanout_jobs.try_hold_members``, ``role_mapping._recompute_or_queue``).

A member's own event is claimed with its key held, then shares the organization's row; a mapping edit holds that row
(the mappings' lock) and then took the members' keys, waiting for them. Each waited for the other until PostgreSQL
rolled one back after ``deadlock_timeout``: under a storm of group-membership webhooks 13-23 of 50 edits answered 503
after three tries (a break-it review, F5). Now the edit takes the keys without waiting: when a member's event holds
one, the recompute is queued as a job (the answer's ``recompute`` is ``queued``), which the appliers apply once the
event has committed, holding the keys as every fan-out chunk does.

Tested over every route that edits the mappings or the default role: with a member's key held by another
transaction (as an applier's claim holds it) each answers 200 at once with its recompute queued, the other
transaction then shares the organization's row without a deadlock, and once the queued job is applied every
member's role is the one the mappings give.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, text

from hatidata_auth.extensions import db
from hatidata_auth.models import Organization, WebhookEvent
from hatidata_auth.services import fanout_jobs, role_mapping
from tests.api_support import Tenant, headers_for, make_tenant
from tests.support.dsync import drain_inbox
from tests.test_conflict_reruns import KEY, _linked

MAPPINGS = "/api/v1/role-mappings"
EDITS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "replace": ("PUT", MAPPINGS, {"mappings": [
        {"identifier_kind": "name", "group_identifier": "Keyed Admins", "role": "admin"},
        {"identifier_kind": "name", "group_identifier": "Keyed Viewers", "role": "viewer"}]}),
    "add": ("POST", MAPPINGS, {"identifier_kind": "name", "group_identifier": "Keyed Others", "role": "developer"}),
    "update": ("PATCH", MAPPINGS + "/{mapping}", {"role": "developer", "priority": 7}),
    "delete": ("DELETE", MAPPINGS + "/{mapping}", {}),
    "default_role": ("PATCH", "/api/v1/organization/settings", {"default_role": "developer"}),
}


def _with_a_mapping(app: Flask, tenant: Tenant) -> str:
    """Map the group "Keyed Viewers" (no key held: recomputed in the request); its mapping id."""
    response = app.test_client().post(MAPPINGS, headers=headers_for(tenant, "admin"), json={
        "identifier_kind": "name", "group_identifier": "Keyed Viewers", "role": "viewer"})
    assert response.status_code in (200, 201), response.get_json()
    assert response.get_json()["recompute"]["status"] == "done"
    return str(response.get_json()["mapping"]["id"])


def _consistent(app: Flask, organization_id: str) -> list[Any]:
    """The role changes a recompute under the stored mappings would make now (none when every role is right)."""
    with app.app_context():
        session = db.session()
        org = session.get(Organization, organization_id)
        assert org is not None
        changes = role_mapping.preview(session, organization_id=organization_id,
                                       specs=role_mapping.list_mappings(session, organization_id),
                                       default_role=org.default_role)
        db.session.remove()
    return list(changes)


@pytest.mark.postgres
@pytest.mark.parametrize("name", sorted(EDITS))
def test_an_edit_queues_the_recompute_of_members_whose_key_is_held_and_never_waits(
        app: Flask, name: str, caplog: pytest.LogCaptureFixture) -> None:
    method, path, body = EDITS[name]
    tenant = make_tenant(app, f"Keyed {name}")
    _linked(app, tenant)
    mapping_id = _with_a_mapping(app, tenant)
    answers: list[Any] = []
    with app.app_context():
        applier = db.engine.connect()
        applier.execute(text("SET LOCAL lock_timeout = '10s'"))  # a wait for the edit's row would fail, not hang
        applier.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
                        {"key": fanout_jobs.member_key(f"{KEY}_D")})

        def admin() -> None:
            answers.append(app.test_client().open(path.format(mapping=mapping_id), method=method, json=body or None,
                                                  headers=headers_for(tenant, "admin")))

        thread = threading.Thread(target=admin)
        with caplog.at_level(logging.WARNING, "hatidata_auth.services.db_conflicts"):
            try:
                thread.start()
                thread.join(10)  # before the fix: waiting for the key the applier holds, for ever
                assert not thread.is_alive(), "the edit waited for a member's key while holding the organization"
                # The applier's next step, sharing the organization's row, finds it free: no cycle.
                applier.execute(select(Organization.id).where(Organization.id == tenant.id)
                                .with_for_update(read=True))
            finally:
                applier.commit()
                applier.close()
                thread.join(20)
    assert answers[0].status_code in (200, 201, 204), answers[0].get_json()
    assert not [r for r in caplog.records if "rolled back by the database" in r.getMessage()]
    with app.app_context():
        jobs = db.session.scalars(select(WebhookEvent.event_id).where(
            WebhookEvent.event_type == fanout_jobs.JOB_TYPE, WebhookEvent.status == "received",
            WebhookEvent.organization_id == tenant.id)).all()
        db.session.remove()
    assert jobs, "the recompute of the held member was neither done nor queued"
    if answers[0].status_code != 204 and "recompute" in (answers[0].get_json() or {}):
        assert answers[0].get_json()["recompute"] == {"status": "queued", "job_id": jobs[0]}
    drain_inbox(app)
    assert _consistent(app, tenant.id) == []


def test_without_a_held_key_an_edit_recomputes_in_the_request(app: Flask) -> None:
    """The contrast, on every database: nobody holds a member's key, so the members are recomputed at once."""
    tenant = make_tenant(app, "Keyed Free")
    _linked(app, tenant)
    _with_a_mapping(app, tenant)
    response = app.test_client().put(MAPPINGS, headers=headers_for(tenant, "admin"), json=EDITS["replace"][2])
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["recompute"] == {"status": "done", "job_id": None}
    assert response.get_json()["members_checked"] >= 1
    assert _consistent(app, tenant.id) == []
