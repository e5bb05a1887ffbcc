"""Break-it review (tenant isolation of ``/api/v1/webhook-inbox/failed``): one organization's failures never
hide another's.

The list reads the oldest 5000 failed events of *every* organization, then keeps the caller's. When one big
tenant has 5000 older failures (a directory outage, a bad mapping), every other tenant's admins see an empty
list: their own failed events exist but are never shown (and so never replayed).
"""

from __future__ import annotations

from datetime import timedelta

from flask import Flask
from sqlalchemy import insert

from hatidata_auth.extensions import db
from hatidata_auth.models import WebhookEvent, utcnow
from tests.api_support import headers_for, make_tenant

NOISY_FAILURES = 5001


def test_another_tenants_many_failures_do_not_hide_mine(app: Flask) -> None:
    noisy = make_tenant(app, "Noisy")
    quiet = make_tenant(app, "Quiet")
    start = utcnow() - timedelta(days=1)
    rows = [{"event_id": f"event_noisy_{i}", "event_type": "dsync.user.updated", "organization_id": noisy.id,
             "payload": {"id": f"event_noisy_{i}", "event": "dsync.user.updated", "data": {}},
             "received_at": start + timedelta(milliseconds=i), "status": "failed", "source": "webhook",
             "attempts": 1, "last_error": "boom"} for i in range(NOISY_FAILURES)]
    with app.app_context():
        db.session.execute(insert(WebhookEvent), rows)
        db.session.commit()
        db.session.remove()
    listed = app.test_client().get("/api/v1/webhook-inbox/failed", headers=headers_for(quiet, "admin"))
    assert listed.status_code == 200
    ids = [row["event_id"] for row in listed.get_json()["data"]]
    assert quiet.ids["inbox_event"] in ids, ids
