"""One cause per request or event: every audit row a change writes names the same actor, request and source event.

A service hands the ``Cause`` it was given on whole (``cause.with_reason(...)`` / ``with_event(...)``); it never
rebuilds one from another cause's parts, which drops what it does not copy (the request, the event). Causes are
built where a change starts: views (``identity.request_cause()``), event handlers (``EventContext.cause``), the
CLI and jobs.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from hatidata_auth.causes import Cause
from hatidata_auth.extensions import db
from hatidata_auth.models import AuditEvent, AuthSession, RoleMapping, utcnow
from hatidata_auth.services import alerts
from tests.api_support import Tenant, headers_for, make_tenant

PACKAGE = Path(__file__).resolve().parents[1] / "hatidata_auth"
CAUSE_PARTS = {"actor", "request", "source_event_id", "reason", "event_id"}
CONSTRUCTORS = {"by", "from_event", "system"}
# The one place a cause is assembled from its parts: an event's context is where the event's cause starts.
ALLOWED = {("services/events/context.py", "cause")}


def _is_cause_call(node: ast.Call) -> bool:
    func = node.func
    if isinstance(func, ast.Name):
        return func.id == "Cause"
    return (isinstance(func, ast.Attribute) and func.attr in CONSTRUCTORS
            and isinstance(func.value, ast.Name) and func.value.id == "Cause")


def _rebuilt_from_parts(node: ast.Call) -> bool:
    """The call passes an attribute of another cause or context (``x.actor``, ``ctx.event_id``, ...)."""
    args = [*node.args, *(k.value for k in node.keywords)]
    return any(isinstance(sub, ast.Attribute) and sub.attr in CAUSE_PARTS
               for arg in args for sub in ast.walk(arg))


def rebuilt_causes(source: str, name: str) -> list[str]:
    """``file:line in function`` of every cause built from another cause's parts in *source*."""
    found: list[str] = []

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else function
            if (isinstance(child, ast.Call) and _is_cause_call(child) and _rebuilt_from_parts(child)
                    and (name, function) not in ALLOWED):
                found.append(f"{name}:{child.lineno} in {function}")
            visit(child, inner)

    visit(ast.parse(source), "<module>")
    return found


def _service_modules() -> Iterator[tuple[str, str]]:
    for path in sorted((PACKAGE / "services").rglob("*.py")):
        yield path.relative_to(PACKAGE).as_posix(), path.read_text(encoding="utf-8")


def test_no_service_rebuilds_a_cause_from_another_causes_parts() -> None:
    found = [hit for name, source in _service_modules() for hit in rebuilt_causes(source, name)]
    assert found == [], "hand the cause on (cause.with_reason / with_event), never rebuild it: " + ", ".join(found)


@pytest.mark.parametrize("snippet", [
    "def f(cause):\n    return Cause.by(cause.actor)",
    "def f(cause):\n    return Cause.by(cause.actor, reason='x')",
    "def f(cause):\n    return Cause.from_event(cause.source_event_id, actor=cause.actor)",
    "def f(ctx):\n    return Cause.from_event(ctx.event_id, reason='r', actor=ctx.actor)",
    "def f(cause):\n    return Cause(cause.actor, cause.request, None)",
    "def f(cause):\n    return Cause.system(cause.reason)",
    "def f(self):\n    return Cause.by(Actor('user', None), self.request)",
])
def test_the_guard_sees_each_kind_of_rebuilt_cause(snippet: str) -> None:
    assert rebuilt_causes(snippet, "services/x.py")


@pytest.mark.parametrize("snippet", [
    "def f(cause):\n    return cause.with_reason('login')",
    "def f(cause):\n    return cause.with_event('event_1')",
    "def f(request):\n    return Cause.by(Actor('user', 'usr_1', 'a@b.test'), request)",
    "def f():\n    return Cause.system('reconcile')",
])
def test_the_guard_lets_causes_be_handed_on_or_started(snippet: str) -> None:
    assert rebuilt_causes(snippet, "services/x.py") == []


# --- every audit row of one admin request carries that request and its actor -------------------------------------

AGENT = "cause-handoff-console/1.0"
_ids = itertools.count(1)


def _actions(tenant: Tenant) -> list[tuple[str, str, dict[str, Any] | None, int]]:
    """Every state-changing ``/api/v1`` route, in an order that leaves each next one something to change:
    (method, path, body, expected status)."""
    ids = tenant.ids
    key, member = ids["key"], ids["member"]
    return [
        ("PATCH", "/api/v1/organization/settings", {"default_role": "developer"}, 200),
        ("PATCH", "/api/v1/organization/policy", {"idle_timeout": 900, "ip_allowlist": ["127.0.0.0/8"]}, 200),
        ("PUT", f"/api/v1/api-keys/{key}/ip-allowlist", {"ip_allowlist": ["127.0.0.1/32", "::1"]}, 200),
        ("POST", f"/api/v1/organization/sign-in-attempts/{ids['sign_in_attempt']}/reveal", None, 200),
        ("POST", "/api/v1/role-mappings", {"identifier_kind": "name", "group_identifier": "Engineers",
                                           "role": "developer"}, 201),
        ("PATCH", "/api/v1/role-mappings/<Engineers>", {"priority": 5}, 200),
        ("POST", "/api/v1/role-mappings/preview", {"mappings": []}, 200),
        ("PUT", "/api/v1/role-mappings", {"mappings": [{"identifier_kind": "name", "group_identifier": "Ops",
                                                        "role": "viewer"}], "default_role": "viewer"}, 200),
        ("DELETE", "/api/v1/role-mappings/<Ops>", None, 200),
        ("POST", "/api/v1/api-keys", {"name": "handoff"}, 403),  # keys are made by a signed-in member
        ("POST", f"/api/v1/api-keys/{key}/suspend", None, 200),
        ("POST", f"/api/v1/api-keys/{key}/reinstate", None, 200),
        ("POST", f"/api/v1/api-keys/{key}/rotate", {"grace_seconds": 600}, 201),
        ("POST", f"/api/v1/api-keys/{key}/revoke", {"reason": "handoff"}, 200),
        ("POST", f"/api/v1/sessions/{ids['session']}/revoke", {"reason": "handoff"}, 200),
        ("POST", f"/api/v1/users/{ids['user']}/sessions/revoke", None, 200),
        ("POST", "/api/v1/organization/sessions/revoke", None, 200),
        ("PATCH", f"/api/v1/members/{member}", {"role": "developer"}, 200),
        ("POST", f"/api/v1/webhook-inbox/{ids['inbox_event']}/replay", None, 200),
        ("POST", "/api/v1/organization/directory/resync", None, 409),
        # Refused before any change (the rotation's own audit rows: tests/test_cert_rotation.py)
        ("POST", "/api/v1/organization/sso/certificate-rotation", {"metadata_xml": "<x/>"}, 422),
        ("POST", "/api/v1/organization/sso/certificate-rotation/switched", None, 404),
        ("DELETE", "/api/v1/organization/sso/certificate-rotation", None, 404),
        ("PUT", "/api/v1/organization/break-glass", {"members": [member]}, 200),
        ("PUT", "/api/v1/organization/break-glass", {"members": []}, 200),
        ("POST", f"/api/v1/organization/alerts/{ids['break_glass_alert']}/resolve", None, 200),
        ("POST", "/api/v1/audit-events/exports", {}, 202),
        ("POST", "/api/v1/organization/audit-streams", {"name": "SIEM", "kind": "syslog_tls",
                                                        "endpoint": "siem.handoff.test:6514"}, 201),
        ("PATCH", f"/api/v1/organization/audit-streams/{ids['audit_stream']}", {"name": "renamed"}, 200),
        ("POST", f"/api/v1/organization/audit-streams/{ids['audit_stream']}/retry", None, 409),  # paused
        ("DELETE", f"/api/v1/organization/audit-streams/{ids['audit_stream']}", None, 204),
        ("DELETE", f"/api/v1/members/{member}", None, 200),
    ]


def _audit_ids(app: Flask, organization_id: str) -> set[str]:
    with app.app_context():
        found = set(db.session.scalars(select(AuditEvent.id).where(AuditEvent.organization_id == organization_id)))
        db.session.remove()
    return found


def _with_mapping(app: Flask, organization_id: str, path: str) -> str:
    """*path* with a ``<Group>`` segment replaced by the id of the organization's mapping of that group."""
    if not path.endswith(">"):
        return path
    base, _, group = path.rpartition("/")
    with app.app_context():
        mapping_id = db.session.scalar(select(RoleMapping.id).where(RoleMapping.organization_id == organization_id,
                                                                    RoleMapping.group_identifier == group[1:-1]))
        db.session.remove()
    return f"{base}/{mapping_id}"


def _shape(path: str) -> str:
    return "/".join("<x>" if part.startswith("<") else part for part in path.split("/"))


def test_the_actions_cover_every_state_changing_api_route(app: Flask) -> None:
    tenant = Tenant("org", "workos", ids={k: f"<{k}>" for k in ("key", "member", "session", "user", "inbox_event",
                                                                "sign_in_attempt", "break_glass_alert",
                                                                "audit_stream")})
    listed = {(method, _shape(path)) for method, path, _, _ in _actions(tenant)}
    routes = {(method, _shape(rule.rule)) for rule in app.url_map.iter_rules() if rule.rule.startswith("/api/v1/")
              for method in (rule.methods or set()) - {"GET", "HEAD", "OPTIONS"}}
    assert routes <= listed, f"add these routes to _actions: {sorted(routes - listed)}"


def test_every_audit_row_of_an_admin_request_carries_its_request_and_actor(
        app: Flask, client: FlaskClient, emulator: Any) -> None:
    tenant = make_tenant(app, "Handoff")
    with app.app_context():  # one more session for each of the three revocation routes to end
        for user, n in ((tenant.ids["user"], 2), (tenant.users["developer"], 3)):
            db.session.add(AuthSession(organization_id=tenant.id, workos_session_id=f"session_handoff_{n}",
                                       user_id=user, expires_at=utcnow() + timedelta(hours=1)))
        alert = alerts.raise_alert(db.session(), organization_id=tenant.id, kind=alerts.BREAK_GLASS_USED,
                                   target_type="membership", target_id=tenant.ids["member"],
                                   message="A break-glass sign-in.", details={}, cause=Cause.system("handoff"))
        tenant.ids["break_glass_alert"] = alert.id
        db.session.commit()
        db.session.remove()
    for method, path, body, status in _actions(tenant):
        path = _with_mapping(app, tenant.id, path)
        request_id = f"handoff-{next(_ids):04d}"
        before = _audit_ids(app, tenant.id)
        response = client.open(path, method=method, json=body,
                               headers={**headers_for(tenant, "admin"), "User-Agent": AGENT,
                                        "X-Request-ID": request_id})
        assert response.status_code == status, (method, path, response.get_data(as_text=True))
        with app.app_context():
            rows = list(db.session.scalars(select(AuditEvent).where(AuditEvent.organization_id == tenant.id,
                                                                    AuditEvent.id.not_in(before))))
            db.session.remove()
        if status < 300 and path != "/api/v1/role-mappings/preview":
            assert rows, f"{method} {path} changed nothing audited"
        for row in rows:
            where = (method, path, row.action)
            assert (row.actor_type, row.actor_email) == ("api_key", "admin@handoff.test"), where
            assert (row.user_agent, row.request_id) == (AGENT, request_id), where
            assert row.ip_address is not None, where
            assert row.ip_address == rows[0].ip_address, where
            assert row.actor_id == rows[0].actor_id, where
