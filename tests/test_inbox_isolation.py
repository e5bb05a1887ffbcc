"""The failed-event inbox filters by tenant in the query, before any limit (break-it issue #10, finding 9).

Whatever mix of failed events two organizations have (tied to the tenant by ``organization_id``, or only by the
WorkOS organization, directory or connection their ``data`` names, or by nobody), each organization's
``/api/v1/webhook-inbox/failed``, read to its last page, lists exactly its own, and replaying another's is a 404.
"""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, select

from hatidata_auth.extensions import db
from hatidata_auth.models import WebhookEvent, utcnow
from tests.api_support import Tenant, headers_for, make_tenant

# How an event names its tenant; "domain" and "nobody" name no tenant the inbox may show it to.
LINKS = ("organization_id", "data.organization_id", "data.directory_id", "data.connection_id", "organization.id",
         "domain", "nobody", "not_an_object")
_serial = itertools.count()


def _row(tenant: Tenant, refs: dict[str, str], link: str, received: Any) -> tuple[dict[str, Any], bool]:
    """An inbox row tied to *tenant* by *link*, and whether the tenant may see it."""
    event_id = f"event_iso_{next(_serial)}"
    event_type, data, organization_id = "dsync.user.updated", {"id": "directory_user_x"}, None
    if link == "organization_id":
        organization_id = tenant.id
    elif link.startswith("data."):
        data[link.removeprefix("data.")] = refs[link.removeprefix("data.")]
    elif link == "organization.id":
        event_type, data = "organization.updated", {"id": refs["organization_id"]}
    elif link == "domain":  # an organization_domain event's own id is not an organization
        event_type, data = "organization_domain.verified", {"id": refs["organization_id"]}
    elif link == "not_an_object":
        data = [refs["organization_id"]]  # type: ignore[assignment]
    row = {"event_id": event_id, "event_type": event_type, "organization_id": organization_id,
           "payload": {"id": event_id, "event": event_type, "data": data}, "received_at": received,
           "status": "failed", "source": "webhook", "attempts": 1, "last_error": "boom"}
    return row, link not in ("domain", "nobody", "not_an_object")


def _arrival(app: Flask) -> dict[str, int]:
    """Each stored event's place in the order of arrival."""
    with app.app_context():
        try:
            return {event_id: serial for event_id, serial in db.session.execute(
                select(WebhookEvent.event_id, WebhookEvent.id))}
        finally:
            db.session.remove()


def _listed(app: Flask, tenant: Tenant, limit: int) -> list[str]:
    client, ids, cursor = app.test_client(), [], None
    while True:
        query = {"limit": limit} | ({"cursor": cursor} if cursor else {})
        response = client.get("/api/v1/webhook-inbox/failed", query_string=query, headers=headers_for(tenant, "admin"))
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        ids += [row["event_id"] for row in body["data"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return ids


def test_each_organization_lists_exactly_its_failed_events_whatever_the_others_hold(app: Flask) -> None:
    tenants = [make_tenant(app, "Kestrel"), make_tenant(app, "Heron")]
    refs = [{"organization_id": t.workos_id, "directory_id": f"directory_{n}", "connection_id": f"conn_{n}"}
            for t, n in zip(tenants, ("kestrel", "heron"), strict=True)]
    expected: list[set[str]] = [{t.ids["inbox_event"]} for t in tenants]
    stranger: list[str] = []

    @given(events=st.lists(st.tuples(st.integers(0, 1), st.sampled_from(LINKS), st.integers(1, 30)), max_size=12),
           limit=st.integers(1, 7))
    @settings(max_examples=12, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def check(events: list[tuple[int, str, int]], limit: int) -> None:
        start = utcnow() - timedelta(days=2)
        rows = []
        for owner, link, copies in events:
            for _ in range(copies):  # bursts: one tenant's many older failures come first
                row, visible = _row(tenants[owner], refs[owner], link, start + timedelta(microseconds=len(rows)))
                rows.append(row)
                (expected[owner] if visible else set()).add(row["event_id"])
                if not visible:
                    stranger.append(row["event_id"])
        if rows:
            with app.app_context():
                db.session.execute(insert(WebhookEvent), rows)
                db.session.commit()
                db.session.remove()
        arrival = _arrival(app)
        for index, tenant in enumerate(tenants):
            listed = _listed(app, tenant, limit)
            assert len(listed) == len(set(listed))
            assert set(listed) == expected[index]
            assert listed == sorted(listed, key=arrival.__getitem__), "in the order they arrived"
        for index, tenant in enumerate(tenants):
            others = sorted(expected[1 - index])[:2] + stranger[-2:]
            for event_id in others:
                replayed = app.test_client().post(f"/api/v1/webhook-inbox/{event_id}/replay",
                                                  headers=headers_for(tenant, "admin"))
                assert replayed.status_code == 404, (event_id, replayed.get_json())

    check()
