"""Every integer in a JSON request body is an integer: a fraction (``1.5``), a numeric string (``"7"``) or ``2.0`` is
a 422 naming the field, never truncated and stored (a break-it review: ``PATCH /role-mappings/{id}
{"priority": 1.5}`` answered 200 and stored priority 1). Checked over every integer property the OpenAPI document
declares for a JSON body, top level, in an object (``PATCH /organization/settings``'s ``session_policy``) and in
the objects of an array (``PUT /role-mappings``'s ``mappings``).
"""

from __future__ import annotations

import re
from typing import Any

from flask import Flask

from tests.api_support import make_tenant
from tests.credential_support import bearer, new_session
from tests.test_api_isolation import PARAMETER_IDS, example

NOT_INTEGERS = [1.5, "7", 2.0]


def _integer_inputs(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any], str, str | None]]:
    """(method, path, the body's schema, property, the array or object property holding it or ``None``) of every
    integer in a JSON request body."""
    schemas = document["components"]["schemas"]

    def resolve(schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            schema = schemas[schema["$ref"].rsplit("/", 1)[1]]
        return schema

    found = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if not isinstance(operation, dict):
                continue
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body is None:
                continue
            for name, spec in resolve(body).get("properties", {}).items():
                spec = resolve(spec)
                if spec.get("type") == "integer":
                    found.append((method.upper(), path, body, name, None))
                inner = resolve(spec["items"]) if spec.get("type") == "array" and "items" in spec else spec
                found += [(method.upper(), path, body, nested, name)
                          for nested, nested_spec in inner.get("properties", {}).items()
                          if resolve(nested_spec).get("type") == "integer"]
    return found


def test_every_integer_of_a_json_body_refuses_what_is_not_an_integer_by_name(app: Flask, emulator: Any) -> None:
    tenant = make_tenant(app, "Integral")
    _, token = new_session(app, emulator, tenant.id, tenant.users["admin"])
    document = app.test_client().get("/api/openapi.json").get_json()
    inputs = _integer_inputs(document)
    assert {("PATCH", "/api/v1/role-mappings/{mapping_id}", "priority"), ("PUT", "/api/v1/role-mappings", "priority"),
            ("POST", "/api/v1/api-keys/{key_id}/rotate", "grace_seconds"),
            ("PATCH", "/api/v1/organization/settings", "active_ttl")} <= {(m, p, n) for m, p, _b, n, _a in inputs}
    app.config["PROPAGATE_EXCEPTIONS"] = False
    failures = []
    for method, path, body_schema, name, array in inputs:
        prefix = path.split("/")[3]
        url = re.sub(r"\{(\w+)\}", lambda m, prefix=prefix: tenant.ids.get(
            PARAMETER_IDS.get((prefix, m.group(1)), ""), "x"), path)
        for value in NOT_INTEGERS:
            body = example(body_schema, document)
            if array is None:
                body[name] = value
            else:  # in the objects of an array, or in an object
                outer = document["components"]["schemas"][body_schema["$ref"].rsplit("/", 1)[1]]["properties"][array]
                if "items" in outer:
                    body[array] = [{**example(outer["items"], document), name: value}]
                else:
                    body[array] = {**example(outer, document), name: value}
            response = app.test_client().open(url, method=method, json=body, headers=bearer(token))
            fields = (response.get_json(silent=True) or {}).get("error", {}).get("details", {}).get("fields", {})
            if response.status_code != 422 or (array or name) not in fields:
                failures.append(f"{method} {url} {array or ''}{'[].' if array else ''}{name}={value!r}: "
                                f"{response.status_code} {fields or response.get_json(silent=True)}")
    assert not failures, "\n".join(failures)
