"""Break-it review (issue #10 rule 8): bad input is a 4xx, never a 500.

A pagination ``cursor`` is opaque base64 of a one-element JSON list; ``decode_cursor`` accepts any ``int``
inside it and the list views hand it to the database as the sort key. An integer beyond 64 bits (SQLite,
PostgreSQL) or an integer compared with a text id column (PostgreSQL) is a server error, not a 422.
Timestamps (audit ``since``/``until``, a key's ``expires_at``) whose offset puts their UTC form outside years
1-9999 pass validation and overflow when converted for the database.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest
from flask import Flask

from tests.api_support import headers_for, make_tenant
from tests.credential_support import bearer, new_session

LISTS = ("/api/v1/audit-events", "/api/v1/members", "/api/v1/organization/alerts")


def _cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps([value]).encode()).decode().rstrip("=")


@pytest.mark.parametrize("path", list(LISTS))
@pytest.mark.parametrize("value", [2**63, 10**30, -(2**70)])
def test_out_of_range_integer_cursor_is_a_4xx(app: Flask, path: str, value: int) -> None:
    tenant = make_tenant(app, "Cursorco")
    app.config["PROPAGATE_EXCEPTIONS"] = False
    response = app.test_client().get(path, query_string={"cursor": _cursor(value)},
                                     headers=headers_for(tenant, "admin"))
    assert 400 <= response.status_code < 500, (response.status_code, response.get_data(as_text=True)[:200])


@pytest.mark.parametrize("path", ["/api/v1/members", "/api/v1/organization/alerts"])
def test_integer_cursor_on_a_text_key_is_not_a_5xx(app: Flask, path: str) -> None:
    # Ids are text: an integer cursor is either a 422 or an empty page, never a database type error (PostgreSQL).
    tenant = make_tenant(app, "Cursortext")
    app.config["PROPAGATE_EXCEPTIONS"] = False
    response = app.test_client().get(path, query_string={"cursor": _cursor(7)}, headers=headers_for(tenant, "admin"))
    assert response.status_code < 500, (response.status_code, response.get_data(as_text=True)[:200])


# Valid ISO 8601 instants with an offset whose UTC form is outside year 1-9999: parsing accepts them, the
# conversion to UTC on the way to the database overflows.
EDGE_INSTANTS = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"]


@pytest.mark.parametrize("field", ["since", "until"])
@pytest.mark.parametrize("value", EDGE_INSTANTS)
def test_audit_time_filters_at_the_edge_of_the_calendar_are_a_4xx_or_an_answer(app: Flask, field: str,
                                                                               value: str) -> None:
    tenant = make_tenant(app, "Calendarco")
    app.config["PROPAGATE_EXCEPTIONS"] = False
    response = app.test_client().get("/api/v1/audit-events", query_string={field: value},
                                     headers=headers_for(tenant, "admin"))
    assert response.status_code < 500, (response.status_code, response.get_data(as_text=True)[:200])


def test_a_key_expiry_at_the_edge_of_the_calendar_is_a_4xx_or_a_key(app: Flask, emulator: Any) -> None:
    tenant = make_tenant(app, "Calendarkeys")
    _, token = new_session(app, emulator, tenant.id, tenant.users["admin"])  # keys are made by signed-in members
    app.config["PROPAGATE_EXCEPTIONS"] = False
    response = app.test_client().post("/api/v1/api-keys", headers=bearer(token),
                                      json={"name": "edge", "scopes": ["data:read"], "expires_at": EDGE_INSTANTS[1]})
    assert response.status_code < 500, (response.status_code, response.get_data(as_text=True)[:200])


# PostgreSQL refuses text containing NUL (0x00) with a DataError that is not a connection error, so it becomes
# a 500; the query-string arguments are validated against it, path parameters and /auth/login's are not.
NUL_ID = "a%00b"


def _path_operations(app: Flask) -> list[tuple[str, str]]:
    document = app.test_client().get("/api/openapi.json").get_json()
    return [(method.upper(), re.sub(r"\{[^}]+\}", NUL_ID, path))
            for path, item in document["paths"].items() if "{" in path
            for method in item if method in ("get", "post", "patch", "delete", "put")]


def test_a_nul_in_any_path_parameter_is_a_4xx(app: Flask) -> None:
    tenant = make_tenant(app, "Nulpaths")
    app.config["PROPAGATE_EXCEPTIONS"] = False
    operations = _path_operations(app)
    assert len(operations) >= 10
    failures = []
    for method, path in operations:
        response = app.test_client().open(path, method=method, headers=headers_for(tenant, "admin"), json={})
        if response.status_code >= 500:
            failures.append(f"{method} {path}: {response.status_code}")
    assert not failures, failures


def test_a_nul_in_the_login_organization_is_a_4xx(app: Flask) -> None:
    app.config["PROPAGATE_EXCEPTIONS"] = False
    response = app.test_client().get(f"/auth/login?organization_id={NUL_ID}")
    assert response.status_code < 500, response.status_code
