"""No GET changes state (docs/api.md, "Reads never write"): every GET route of the API and every admin page, with
every boolean query flag its OpenAPI description offers set, adds no audit row. A state change (a reveal, a
replay, a revocation) is a POST, which needs a CSRF token from a cookie caller. The OAuth callbacks are the
exception by protocol (the IdP redirects with a GET), bound to the signed ``state`` of the flow that started them.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from hatidata_auth.extensions import db
from hatidata_auth.models import AuditEvent
from tests.auth_support import csrf_headers, login, sync_organizations

# GET routes that are not reads: the IdP's redirects back to us, and files.
NOT_READS = {"hatidata_auth.callback", "sso_wizard.test_login_callback", "static", "sso_wizard.static",
             "hatidata_api_docs.asset", "hatidata_auth.login"}
# Where a path's ids come from: the first item of a list the admin can read.
ID_SOURCES = {"member_id": "/api/v1/members", "event_id": "/api/v1/audit-events", "key_id": "/api/v1/api-keys",
              "mapping_id": "/api/v1/role-mappings"}
SAMPLES = {"plugin": "okta", "key": "metadata"}


def _audit_rows(app: Flask) -> int:
    with app.app_context():
        count = int(db.session.scalar(select(func.count()).select_from(AuditEvent)) or 0)
        db.session.remove()
    return count


def _flags(spec: dict[str, Any], rule: str) -> dict[str, str]:
    """Every boolean query parameter the OpenAPI description gives the GET of *rule*, set."""
    path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule).removeprefix("/api/v1")
    operation = spec.get("paths", {}).get(path, {}).get("get", {})
    return {p["name"]: "true" for p in operation.get("parameters", [])
            if p.get("in") == "query" and p.get("schema", {}).get("type") == "boolean"}


def test_no_get_route_writes_an_audit_row(app: Flask, client: FlaskClient) -> None:
    sync_organizations(app)
    assert login(client, "admin@acme.test").status_code == 302  # an SSO sign-in: an attempt with attributes
    assert client.post("/api/v1/api-keys", json={"name": "reader", "scopes": ["members:read"]},
                       headers=csrf_headers(client)).status_code == 201
    spec = client.get("/api/openapi.json").get_json()
    ids = {}
    for name, source in ID_SOURCES.items():
        data = client.get(source).get_json().get("data") or [{"id": "1"}]
        ids[name] = str(data[0]["id"])
    checked = []
    for rule in app.url_map.iter_rules():
        if "GET" not in (rule.methods or set()) or rule.endpoint in NOT_READS:
            continue
        url = rule.rule
        for argument in rule.arguments:
            url = re.sub(rf"<(?:[^:>]+:)?{argument}>", ids.get(argument) or SAMPLES.get(argument, "1"), url)
        flags = _flags(spec, rule.rule) if rule.rule.startswith("/api/v1/") else {}
        for headers in ({"Accept": "application/json"}, {"Accept": "text/html",
                                                         "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}):
            before = _audit_rows(app)
            answer = client.get(url, query_string=flags, headers=headers, buffered=True)
            assert answer.status_code < 500, (url, answer.status_code)
            assert _audit_rows(app) == before, f"GET {url} {flags} wrote {_audit_rows(app) - before} audit row(s)"
        checked.append(rule.rule)
    assert "/api/v1/organization/sign-in-attempts" in checked
    assert "/admin/sso/sign-ins/" in checked
    assert len([r for r in checked if r.startswith("/api/v1/")]) >= 19, checked
