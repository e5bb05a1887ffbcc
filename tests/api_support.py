"""Helpers for the admin API tests: two organizations with members of every role and their API keys.

Callers authenticate with real API keys created through issue #3's key service (``Authorization: Bearer``);
switching to session cookies means changing :func:`headers_for` only.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from flask import Flask
from sqlalchemy import select

from hatidata_auth.causes import Actor, Cause, RequestInfo
from hatidata_auth.extensions import db
from hatidata_auth.models import (
    ApiKey,
    AuditEvent,
    AuditExportJob,
    AuditStream,
    AuthSession,
    Membership,
    Organization,
    OrganizationAlert,
    RoleMapping,
    SignInAttempt,
    User,
    WebhookEvent,
    new_id,
    utcnow,
)
from hatidata_auth.roles import permissions_for
from hatidata_auth.services import api_keys as key_service
from hatidata_auth.services import audit

ROLES = ("admin", "developer", "viewer")


@dataclass
class Tenant:
    """One organization of the fixture, with its identifiers."""

    id: str
    workos_id: str
    keys: dict[str, str] = field(default_factory=dict)  # role -> secret
    members: dict[str, str] = field(default_factory=dict)  # role -> membership id
    users: dict[str, str] = field(default_factory=dict)  # role -> user id
    ids: dict[str, str] = field(default_factory=dict)  # kind -> identifier


def _member(session: Any, org: Organization, email: str, role: str, source: str = "manual") -> Membership:
    user = User(email=email, workos_user_id=f"user_{email.replace('@', '_').replace('.', '_')}"[:64])
    session.add(user)
    session.flush()
    membership = Membership(organization_id=org.id, user_id=user.id, role=role, role_source="manual",
                            source=source, status="active")
    session.add(membership)
    session.flush()
    return membership


def make_tenant(app: Flask, name: str) -> Tenant:
    """An organization with an admin, a developer and a viewer (each with an API key of all their
    permissions), a directory-managed member, a session, a role mapping, audit events and a failed event."""
    slug = name.lower()
    with app.app_context():
        session = db.session
        org = Organization(name=name, domains=[f"{slug}.test"], workos_organization_id=f"org_{slug}_workos",
                           directory_id=f"directory_{slug}", directory_type="okta scim v2.0",
                           directory_state="active", connection_id=f"conn_{slug}", connection_type="OktaSAML",
                           connection_state="active")
        session.add(org)
        session.flush()
        tenant = Tenant(org.id, org.workos_organization_id or "")
        for role in ROLES:
            membership = _member(session, org, f"{role}@{slug}.test", role)
            tenant.members[role] = membership.id
            tenant.users[role] = membership.user_id
            created = key_service.create_key(session, organization_id=org.id, owner_user_id=membership.user_id,
                                             name=f"{role} key", scopes=sorted(permissions_for(role)),
                                             cause=Cause.by(Actor("user", membership.user_id)))
            tenant.keys[role] = created.secret
        directory_member = _member(session, org, f"synced@{slug}.test", "developer", source="directory")
        directory_member.role_source = "mapping"
        tenant.ids["directory_member"] = directory_member.id
        victim = _member(session, org, f"victim@{slug}.test", "viewer")
        tenant.ids["member"] = victim.id
        tenant.ids["user"] = victim.user_id
        record = AuthSession(organization_id=org.id, workos_session_id=f"session_{slug}_1", user_id=victim.user_id,
                             expires_at=utcnow() + timedelta(hours=1))
        session.add(record)
        mapping = RoleMapping(organization_id=org.id, identifier_kind="name", group_identifier=f"{name} Admins",
                              role="admin", priority=0)
        session.add(mapping)
        victim_key = key_service.create_key(session, organization_id=org.id, owner_user_id=victim.user_id,
                                            name="victim key", scopes=["data:read"], cause=Cause.by(Actor.system()))
        session.flush()
        tenant.ids["session"] = record.id
        tenant.ids["mapping"] = mapping.id
        tenant.ids["key"] = victim_key.key.id
        event = audit.record(session, action="test.seeded", organization_id=org.id,
                             cause=Cause.by(Actor.system("test"), RequestInfo(ip_address="10.0.0.1",
                                                                              user_agent="pytest",
                                                                              request_id="req-seed")),
                             target_type="organization", target_id=org.id)
        tenant.ids["audit_event"] = event.public_id
        export = AuditExportJob(id=new_id("axp"), organization_id=org.id, status="pending", filters={})
        session.add(export)
        tenant.ids["audit_export"] = export.id
        inbox_event = WebhookEvent(event_id=f"event_{slug}_failed", event_type="dsync.user.created",
                                   payload={"id": f"event_{slug}_failed", "event": "dsync.user.created",
                                            "data": {"directory_id": org.directory_id,
                                                     "organization_id": org.workos_organization_id},
                                            "created_at": utcnow().isoformat()},
                                   status="failed", attempts=1, last_error="boom")
        session.add(inbox_event)
        alert = OrganizationAlert(organization_id=org.id, kind="saml_certificate_renewal", target_type="connection",
                                  target_id=org.connection_id, message=f"{name}'s certificate expires soon.",
                                  details={}, version_at=utcnow())
        session.add(alert)
        # An id no other number on a page contains by chance (the isolation test looks for leaks by substring).
        attempt = SignInAttempt(id=2**30 + zlib.crc32(slug.encode()) % 10**6, organization_id=org.id,
                                kind="sign_in", outcome="failure", reason="not_assigned_to_app",
                                sources="event", email=f"dev@{slug}.test", attributes={"email": f"dev@{slug}.test"})
        session.add(attempt)
        # paused: a worker pass in any test never reaches for this made-up host
        stream = AuditStream(id=new_id("ast"), organization_id=org.id, name=f"{name} SIEM", kind="syslog_tls",
                             endpoint=f"siem.{slug}.test:6514", enabled=False, state="paused", cursor=0,
                             attempts=0, delivered_events=0)
        session.add(stream)
        session.commit()
        tenant.ids["audit_stream"] = stream.id
        tenant.ids["alert"] = alert.id
        tenant.ids["sign_in_attempt"] = str(attempt.id)
        tenant.ids["inbox_event"] = inbox_event.event_id
        session.remove()
    return tenant


def headers_for(tenant: Tenant, role: str) -> dict[str, str]:
    """Request headers authenticating as *role* of *tenant*."""
    return {"Authorization": f"Bearer {tenant.keys[role]}"}


def snapshot(app: Flask, tenant: Tenant) -> dict[str, Any]:
    """Everything stored for one organization (to prove nothing changed)."""
    organization_id = tenant.id
    tables = (Membership, AuthSession, ApiKey, RoleMapping, SignInAttempt)
    with app.app_context():
        session = db.session
        out: dict[str, Any] = {}
        org = session.get(Organization, organization_id)
        assert org is not None
        out["organization"] = {c.key: getattr(org, c.key) for c in Organization.__table__.columns}
        for model in tables:
            rows = session.scalars(select(model).where(model.organization_id == organization_id)).all()
            out[model.__tablename__] = sorted(
                tuple((c.key, repr(getattr(r, c.key))) for c in model.__table__.columns
                       if c.key not in ("last_used_at",)) for r in rows)
        out["audit_events"] = audit.count(session, organization_id)
        inbox_row = session.scalar(select(WebhookEvent).where(WebhookEvent.event_id == tenant.ids["inbox_event"]))
        assert inbox_row is not None
        out["inbox_event"] = (inbox_row.status, inbox_row.attempts, inbox_row.last_error)
        out["audit_last"] = session.scalar(select(AuditEvent.hash).where(
            AuditEvent.organization_id == organization_id).order_by(AuditEvent.seq.desc()).limit(1))
        session.remove()
    return out


def sso_verified(app: Flask, tenant: Tenant, *, age: timedelta = timedelta(minutes=5)) -> str:
    """Record that *tenant*'s admin signed in through its SSO connection *age* ago (what safe enforcement needs);
    returns the session's id."""
    with app.app_context():
        org = db.session.get(Organization, tenant.id)
        assert org is not None
        record = AuthSession(organization_id=org.id, workos_session_id=f"session_sso_{tenant.id}_{age.seconds}",
                             user_id=tenant.users["admin"], auth_method="sso", auth_organization_id=org.id,
                             auth_connection_id=org.connection_id, expires_at=utcnow() + timedelta(hours=1))
        record.created_at = record.authenticated_at = utcnow() - age
        db.session.add(record)
        db.session.commit()
        record_id = record.id
        db.session.remove()
    return record_id


def cursor_operations(document: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The GETs of an OpenAPI *document* taking a ``cursor`` (no path parameter), by kind: paged lists (they also
    take ``limit`` and answer a JSON page) and continuations (the rest: a stream's or a long job's next part, e.g.
    ``/audit-events/export``, ``/audit-events/verify``), which page by their own rules, not a list's."""
    lists, continuations = [], []
    for path, item in sorted(document["paths"].items()):
        get = item.get("get", {})
        names = {parameter["name"] for parameter in get.get("parameters", [])}
        if "{" in path or "cursor" not in names:
            continue
        kinds = set(get.get("responses", {}).get("200", {}).get("content", {}))
        (lists if "limit" in names and kinds == {"application/json"} else continuations).append(path)
    return lists, continuations
