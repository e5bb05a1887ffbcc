"""Break-it review (issue #10 rule 8): bad input is a 4xx, never a 500.

A pagination ``cursor`` is opaque base64 of a one-element JSON list; ``decode_cursor`` accepts any ``int``
inside it and the list views hand it to the database as the sort key. An integer beyond 64 bits (SQLite,
PostgreSQL) or an integer compared with a text id column (PostgreSQL) is a server error, not a 422.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from flask import Flask

from tests.api_support import headers_for, make_tenant

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
