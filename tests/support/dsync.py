"""Helpers for directory-sync tests: signing webhooks, posting them, and reading our mirrored state."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections import Counter
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from hatidata_auth.causes import Actor
from hatidata_auth.models import (
    AuditEvent,
    DirectoryGroup,
    DirectoryGroupMembership,
    DirectoryUser,
    Membership,
    Organization,
    User,
    WebhookEvent,
)


def sign(secret: str, body: str, timestamp_ms: int | None = None) -> str:
    """A ``WorkOS-Signature`` header value."""
    ts = str(timestamp_ms if timestamp_ms is not None else int(time.time() * 1000))
    digest = hmac.new(secret.encode(), f"{ts}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"t={ts}, v1={digest}"


def drain_inbox(app: Flask) -> int:
    """Run the inbox applier synchronously until no event is due (what the applier threads do in a deployment);
    returns how many events it claimed."""
    from hatidata_auth.extensions import db
    from hatidata_auth.services import inbox_worker

    with app.app_context():
        return inbox_worker.drain(db.session(), app.extensions["hatidata_workos"].client,
                                  fanout_chunk=app.config.get("HATIDATA_FANOUT_CHUNK"))


def forget_events(app: Flask, event_ids: list[str]) -> None:
    """Delete these inbox rows: a property example that failed leaves none of its events pending for the next
    example, which would claim or count them."""
    from hatidata_auth.extensions import db

    with app.app_context():
        db.session.execute(delete(WebhookEvent).where(WebhookEvent.event_id.in_(event_ids)))
        db.session.commit()
        db.session.remove()


def post_event(client: FlaskClient, app: Flask, payload: dict[str, Any] | str, *,
               secret: str | None = None, timestamp_ms: int | None = None, drain: bool = True) -> Any:
    """POST a signed event to the webhook route through the test client, then (unless *drain* is false) apply
    what the inbox holds, so the event's effects are visible when this returns; returns the webhook's answer."""
    body = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    signature = sign(secret or app.config["WORKOS_WEBHOOK_SECRET"], body, timestamp_ms)
    response = client.post("/webhooks/workos", data=body, headers={"WorkOS-Signature": signature,
                                                                   "Content-Type": "application/json"})
    if drain:
        drain_inbox(app)
    return response


def wait_applied(app: Flask, timeout: float = 30.0) -> None:
    """Wait until no event of the inbox is ``received`` (applier threads of other processes apply them)."""
    from hatidata_auth.extensions import db
    from hatidata_auth.services import inbox_worker

    deadline = time.monotonic() + timeout
    with app.app_context():
        while (waiting := inbox_worker.pending(db.session())) and time.monotonic() < deadline:
            time.sleep(0.05)
        db.session.remove()
    assert not waiting, f"{waiting} event(s) still waiting for an applier after {timeout}s"


def deliver(client: FlaskClient, app: Flask, payload: dict[str, Any]) -> str:
    """POST a signed event (it must be acknowledged) and apply the inbox; returns what became of the event:
    ``duplicate`` (the webhook's answer) or its stored status (``applied``, ``ignored``, ``failed``)."""
    response = post_event(client, app, payload)
    assert response.status_code == 200, response.get_json()
    answer = response.get_json()
    assert answer["event_id"] == payload["id"], answer
    if answer["status"] == "duplicate":
        return "duplicate"
    assert answer["status"] == "received", answer
    from hatidata_auth.extensions import db

    with app.app_context():
        status = db.session.scalar(select(WebhookEvent.status).where(WebhookEvent.event_id == payload["id"]))
    assert status is not None
    return status


def inbox_status(session: Session, event_id: str) -> str | None:
    """The stored status of an event (``None``: not stored)."""
    session.expire_all()
    status = session.scalar(select(WebhookEvent.status).where(WebhookEvent.event_id == event_id))
    session.rollback()
    return status


def mirror_organizations(session: Session, workos_client: Any) -> dict[str, Organization]:
    """Mirror the emulator's organizations; returns them by first domain."""
    from hatidata_auth.services.organizations import sync_from_workos

    sync_from_workos(session, workos_client, Actor.system("test"))
    return {org.domains[0]: org for org in session.scalars(select(Organization)) if org.domains}


def snapshot(session: Session) -> dict[str, Any]:
    """Every row count and a digest of the state a rejected webhook must not change."""
    session.expire_all()
    out: dict[str, Any] = {}
    for model in (AuditEvent, DirectoryUser, DirectoryGroup, DirectoryGroupMembership, Membership, User,
                  WebhookEvent, Organization):
        out[model.__tablename__] = session.scalar(select(func.count()).select_from(model))
    out["memberships"] = sorted((m.organization_id, m.user_id, m.role, m.status)
                                for m in session.scalars(select(Membership)))
    session.rollback()
    return out


def member_roles(session: Session, organization_id: str) -> dict[str, tuple[str | None, str]]:
    """``{email: (role, status)}`` of an organization's members."""
    session.expire_all()
    rows = session.execute(select(User.email, Membership.role, Membership.status)
                           .join(Membership, Membership.user_id == User.id)
                           .where(Membership.organization_id == organization_id))
    out = {email: (role, status) for email, role, status in rows}
    session.rollback()
    return out


def mirror_all(app: Flask) -> dict[str, str]:
    """Mirror the emulator's organizations in their own transaction; returns our organization ids by domain."""
    from hatidata_auth.extensions import db

    with app.app_context():
        orgs = mirror_organizations(db.session(), app.extensions["hatidata_workos"].client)
        ids = {domain: org.id for domain, org in orgs.items()}
        db.session.commit()
        db.session.remove()
    return ids


def audit_by_event(app: Flask) -> Counter[tuple[str, str, str | None]]:
    """``(source event id, action, target id)`` -> how many audit rows, over every row a WorkOS event caused."""
    from hatidata_auth.extensions import db

    with app.app_context():
        rows = db.session.execute(select(AuditEvent.source_event_id, AuditEvent.action, AuditEvent.target_id)
                                  .where(AuditEvent.source_event_id.is_not(None))).all()
        db.session.remove()
    return Counter((str(e), str(a), t) for e, a, t in rows)
