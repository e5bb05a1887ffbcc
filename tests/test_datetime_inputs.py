"""Every datetime input is loaded by one field (:class:`hatidata_auth.api.common.Instant`): a value whose UTC form,
or a day's arithmetic on it, leaves years 1-9999 is a 422 naming the field, never a 500 (break-it issue #10, 8b/8c).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from flask import Flask
from hypothesis import example, given, settings
from hypothesis import strategies as st
from marshmallow import Schema, ValidationError

from hatidata_auth.api.common import Instant
from tests.api_support import make_tenant
from tests.credential_support import bearer, new_session

# Offsets of up to a day either way (ISO 8601 allows +-23:59; real zones reach +-14:00).
offsets = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes)))
aware = st.builds(lambda naive, tz: naive.replace(tzinfo=tz), st.datetimes(), offsets)


class _Probe(Schema):
    at = Instant()


def _has_room(value: datetime) -> bool:
    """Whether *value* converts to UTC and a day can be added to or taken from it (the oracle)."""
    try:
        utc = value.astimezone(UTC)
        utc + timedelta(days=1), utc - timedelta(days=1)
    except OverflowError:
        return False
    return True


@given(value=aware)
@example(value=datetime.min.replace(tzinfo=timezone(timedelta(hours=9))))
@example(value=datetime.max.replace(tzinfo=timezone(timedelta(hours=-3))))
@example(value=(datetime.min + timedelta(days=1)).replace(tzinfo=UTC))
@settings(max_examples=500, deadline=None, database=None)
def test_an_instant_loads_as_utc_with_a_day_of_room_or_is_refused_by_name(value: datetime) -> None:
    try:
        loaded = _Probe().load({"at": value.isoformat()})["at"]
    except ValidationError as exc:
        refused: Any = exc.messages
    else:
        refused = None
        assert loaded == value
        assert loaded.utcoffset() == timedelta(0)
    assert (refused is None) == _has_room(value), (value.isoformat(), refused)
    assert refused is None or set(refused) == {"at"}


# Values of our own at (and just inside/outside) both edges of the calendar.
EDGES = ["0001-01-01T03:00:00+05:30", "0001-01-01T00:00:00Z", "9999-12-31T22:00:00-09:00",
         "9999-12-31T23:59:59.999999+00:00", "9999-12-30T12:00:00-23:59"]


def _date_time_inputs(app: Flask) -> list[tuple[str, str, str, str]]:
    """(method, path, location, field) of every date-time input the OpenAPI document declares."""
    document = app.test_client().get("/api/openapi.json").get_json()
    schemas = document["components"]["schemas"]
    found = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if "{" in path or not isinstance(operation, dict):
                continue
            for parameter in operation.get("parameters", []):
                if parameter.get("schema", {}).get("format") == "date-time":
                    found.append((method.upper(), path, parameter["in"], parameter["name"]))
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
            properties = schemas[body["$ref"].rsplit("/", 1)[1]]["properties"] if "$ref" in body else {}
            found += [(method.upper(), path, "json", name) for name, spec in properties.items()
                      if spec.get("format") == "date-time"]
    return found


def test_every_datetime_input_refuses_the_edges_of_the_calendar_by_name(app: Flask, emulator: Any) -> None:
    tenant = make_tenant(app, "Almanac")
    _, token = new_session(app, emulator, tenant.id, tenant.users["admin"])
    inputs = _date_time_inputs(app)
    assert {("GET", "/api/v1/audit-events", "query", "since"), ("POST", "/api/v1/api-keys", "json", "expires_at")} \
        <= set(inputs), inputs
    app.config["PROPAGATE_EXCEPTIONS"] = False
    failures = []
    for method, path, location, name in inputs:
        for value in EDGES:
            query = {name: value} if location == "query" else None
            body = {name: value} if location == "json" else None
            response = app.test_client().open(path, method=method, query_string=query, json=body,
                                              headers=bearer(token))
            fields = (response.get_json(silent=True) or {}).get("error", {}).get("details", {}).get("fields", {})
            response.close()  # a streamed answer (the export) ends its request context here, not at collection
            if response.status_code != 422 or name not in fields:
                failures.append(f"{method} {path} {name}={value}: {response.status_code} {fields}")
    assert not failures, failures


@pytest.mark.parametrize("option", ["--since", "--until"])
def test_the_audit_export_command_refuses_the_edges_of_the_calendar_by_name(app: Flask, option: str) -> None:
    tenant = make_tenant(app, "Ledger")
    for value in EDGES:
        result = app.test_cli_runner().invoke(args=["hatidata", "audit", "export", "--organization", tenant.id,
                                                    option, value])
        assert result.exit_code == 2, (value, result.output, result.exception)
        assert option in result.output, result.output
        assert "UTC" in result.output, result.output
