"""Tenant isolation, proven on every operation of the served OpenAPI document.

For every path and method, callers of organization A (admin, developer, viewer, by API key) use
organization B's identifiers: the answer is 404 exactly like an identifier that does not exist (or 403 when
the caller's role lacks the operation's permission), and nothing stored for B changes. Operations without
identifiers must not leak B's identifiers either.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from hatidata_auth.roles import permissions_for
from tests.api_support import ROLES, Tenant, headers_for, make_tenant, snapshot

# Which of B's identifiers each path parameter takes (by the path's first segment where names repeat).
PARAMETER_IDS = {
    ("members", "member_id"): "member",
    ("users", "user_id"): "user",
    ("sessions", "session_id"): "session",
    ("api-keys", "key_id"): "key",
    ("role-mappings", "mapping_id"): "mapping",
    ("audit-events", "event_id"): "audit_event",
    ("webhook-inbox", "event_id"): "inbox_event",
    ("organization", "attempt_id"): "sign_in_attempt",
    ("organization", "alert_id"): "alert",
    ("audit-events", "job_id"): "audit_export",
    ("organization", "stream_id"): "audit_stream",
}
MISSING = "does_not_exist_0000000000000000"


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    ops = []
    for path, item in document["paths"].items():
        for method, op in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                ops.append((path, method, op))
    return ops


def _resolve(schema: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = document["components"]["schemas"][name]
    return schema


def example(schema: dict[str, Any], document: dict[str, Any]) -> Any:
    """A minimal valid instance of a schema of the document (required properties only)."""
    schema = _resolve(schema, document)
    if "enum" in schema:
        return next(v for v in schema["enum"] if v is not None)
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        return {name: example(props[name], document) for name in schema.get("required", []) if name in props}
    if kind == "array":
        return []
    if kind == "integer":
        return int(schema.get("minimum", 0))
    if kind == "boolean":
        return False
    if kind == "string":
        return "x" * int(schema.get("minLength", 1))
    return None


def _body(op: dict[str, Any], document: dict[str, Any]) -> Any:
    """A minimal valid body: the required properties, or every property when none is required (a PATCH must
    change something)."""
    content = (op.get("requestBody") or {}).get("content", {}).get("application/json")
    if content is None:
        return None
    schema = _resolve(content["schema"], document)
    if schema.get("required") or not schema.get("properties"):
        return example(schema, document)
    return example({**schema, "required": list(schema["properties"])}, document)


def _url(path: str, ids: dict[str, str]) -> tuple[str, bool]:
    segments = path.split("/")
    prefix = segments[3] if len(segments) > 3 else ""

    def sub(match: re.Match[str]) -> str:
        return ids.get(PARAMETER_IDS[(prefix, match.group(1))], MISSING)

    url = re.sub(r"\{(\w+)\}", sub, path)
    return url, url != path


@pytest.fixture
def tenants(app: Flask) -> tuple[Tenant, Tenant]:
    return make_tenant(app, "Alpha"), make_tenant(app, "Bravo")


def test_every_operation_isolates_tenants(app: Flask, client: FlaskClient, tenants: tuple[Tenant, Tenant]) -> None:
    alpha, bravo = tenants
    document = client.get("/api/openapi.json").get_json()
    operations = _operations(document)
    assert len(operations) >= 30
    bravo_ids = set(bravo.ids.values()) | set(bravo.members.values()) | set(bravo.users.values()) | {bravo.id}
    before = snapshot(app, bravo)
    failures: list[str] = []
    checked = 0
    for path, method, op in operations:
        required = set(op.get("x-permissions", []))
        for role in ROLES:
            url, has_ids = _url(path, bravo.ids)
            allowed = required <= permissions_for(role)
            response = client.open(url, method=method.upper(), json=_body(op, document),
                                   headers=headers_for(alpha, role))
            checked += 1
            label = f"{method.upper()} {path} as {role}: {response.status_code}"
            if response.status_code >= 500:
                failures.append(f"{label} (server error)")
            elif not allowed:
                if response.status_code != 403:
                    failures.append(f"{label}, expected 403 (lacks {sorted(required - permissions_for(role))})")
            elif has_ids:
                if response.status_code not in (403, 404):
                    failures.append(f"{label}, expected 404 for another organization's identifier")
                elif response.status_code == 404:
                    # Exactly like a missing identifier.
                    missing_url = re.sub(r"\{(\w+)\}", MISSING, path)
                    missing = client.open(missing_url, method=method.upper(), json=_body(op, document),
                                          headers=headers_for(alpha, role))
                    theirs, absent = response.get_json()["error"], missing.get_json()["error"]
                    if missing.status_code != 404 or (theirs["code"], theirs["message"], theirs["details"]) != (
                            absent["code"], absent["message"], absent["details"]):
                        failures.append(f"{label} differs from a missing identifier: {theirs} vs {absent}")
            else:
                text = response.get_data(as_text=True)
                leaked = sorted(i for i in bravo_ids if i in text)
                if leaked:
                    failures.append(f"{label} leaked Bravo identifiers {leaked}")
            after = snapshot(app, bravo)
            if after != before:
                changed = sorted(k for k in before if before[k] != after[k])
                failures.append(f"{label} changed Bravo's {changed}")
                before = after
    assert not failures, "\n".join(failures)
    assert checked == len(operations) * len(ROLES)


def test_unauthenticated_callers_get_401_everywhere(client: FlaskClient, tenants: tuple[Tenant, Tenant]) -> None:
    document = client.get("/api/openapi.json").get_json()
    _, bravo = tenants
    for path, method, _op in _operations(document):
        url, _ = _url(path, bravo.ids)
        response = client.open(url, method=method.upper())
        assert response.status_code == 401, f"{method.upper()} {path}: {response.status_code}"
        assert set(response.get_json()["error"]) >= {"code", "message", "details"}
