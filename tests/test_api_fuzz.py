"""Property-based fuzzing of the admin API with schemathesis, against the served OpenAPI document.

Every operation of ``/api/openapi.json`` is called with both documented credentials (``bearerAuth``: an admin
and a viewer API key; ``cookieAuth``: an admin's dashboard session with its CSRF token). Schema-conforming
cases must answer below 500 and conform to the document (status code documented, content type, body schema);
schema-violating ("negative") cases must answer below 500 with a documented content type.

``HATIDATA_SCHEMATHESIS_EXAMPLES`` sets the examples per operation, mode and caller (CI: the default below).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import select, update

from hatidata_auth.extensions import db
from hatidata_auth.models import Membership, User
from tests.api_support import headers_for, make_tenant
from tests.auth_support import csrf_headers, login, sync_organizations

EXAMPLES = int(os.environ.get("HATIDATA_SCHEMATHESIS_EXAMPLES", "10"))
CHECKS: dict[GenerationMode, list[Any]] = {
    GenerationMode.POSITIVE: [not_a_server_error, status_code_conformance, content_type_conformance,
                              response_schema_conformance],
    GenerationMode.NEGATIVE: [not_a_server_error, content_type_conformance],
}


# Every date-time field also gets instants at the edge of the calendar (their UTC form leaves years 1-9999, or a
# day's arithmetic would): the shared Instant field must refuse them with a 422, never a 500.
EDGE_INSTANTS = st.sampled_from(["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "0001-01-01T08:30:00Z",
                                 "9999-12-31T12:00:00+00:00", "0001-01-02T00:00:00+23:59"])
ORDINARY_INSTANTS = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2200, 1, 1),
                                 timezones=st.just(UTC)).map(lambda value: value.isoformat())
schemathesis.openapi.format("date-time", ORDINARY_INSTANTS | EDGE_INSTANTS)


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    """Room for the cookie caller to sign in again each time a case revoked its session."""
    app_config["HATIDATA_LOGIN_RATE_LIMIT"] = "1000 per minute"
    return app_config


Credentials = tuple[dict[str, str], dict[str, str]]  # headers, cookies


def _credentials(app: Flask, caller: str) -> Callable[[], Credentials]:
    """A function returning fresh headers and cookies for *caller* (the cookie session signs in again)."""
    if caller.startswith("bearer"):
        tenant = make_tenant(app, "Wombat")
        role = caller.removeprefix("bearer-")
        return lambda: (headers_for(tenant, role), {})
    sync_organizations(app)
    client = app.test_client()

    def sign_in() -> Credentials:
        if login(client, "admin@acme.test").status_code != 302:
            _reinstate(app, "admin@acme.test")  # a case suspended or removed the caller itself
            assert login(client, "admin@acme.test").status_code == 302
        headers = csrf_headers(client)
        db.session.remove()
        cookies = [client.get_cookie(name) for name in (app.config["HATIDATA_COOKIE_NAME"], "session")]
        return headers, {c.key: c.value for c in cookies if c is not None}

    return sign_in


def _reinstate(app: Flask, email: str) -> None:
    with app.app_context():
        user_ids = select(User.id).where(User.email == email).scalar_subquery()
        db.session.execute(update(Membership).where(Membership.user_id.in_(user_ids)).values(status="active"))
        db.session.commit()
        db.session.remove()


def _signed_in(app: Flask, credentials: Credentials) -> bool:
    probe = app.test_client()
    for name, value in credentials[1].items():
        probe.set_cookie(name, value)
    return probe.get("/api/v1/me", headers=credentials[0]).status_code == 200


def _fuzz(operation: Any, mode: GenerationMode, credentials: Credentials, statuses: list[int]) -> int:
    """Run *operation*'s cases of *mode*, appending each status to *statuses*; returns how many were sent.

    A cookie caller's schema-conforming cases go without the ``Authorization`` header schemathesis generates for
    ``bearerAuth``: a malformed bearer token is refused before the cookie is looked at, and such cases, most of
    them, tested only the refusal (which the negative cases still do); how many got through then depended on the
    day's generated values."""
    sent = 0

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        nonlocal sent
        sent += 1
        if credentials[1] and mode is GenerationMode.POSITIVE and case.headers:
            case.headers = {k: v for k, v in case.headers.items() if k.lower() != "authorization"}
        try:
            response = case.call_and_validate(headers=credentials[0], cookies=credentials[1], checks=CHECKS[mode])
            statuses.append(response.status_code)
        finally:
            db.session.remove()  # each request of a real server starts with a fresh session

    run()
    return sent


@pytest.mark.slow
@pytest.mark.parametrize("caller", ["bearer-admin", "bearer-viewer", "cookie-admin"])
def test_fuzz_every_operation(app: Flask, caller: str) -> None:
    sign_in = _credentials(app, caller)
    credentials = sign_in()
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 30
    failures: list[str] = []
    calls: dict[str, int] = {}
    statuses: list[int] = []
    started = time.monotonic()
    for operation in operations:
        if caller.startswith("cookie") and not _signed_in(app, credentials):
            credentials = sign_in()  # an earlier case revoked the session: sign in again
        for mode in CHECKS:
            try:
                calls[operation.label] = calls.get(operation.label, 0) + _fuzz(operation, mode, credentials, statuses)
            except Exception as exc:  # noqa: BLE001 - collect every operation's failure
                failures.append(f"{operation.label} ({mode}): {exc}")
    elapsed = time.monotonic() - started
    print(f"\nschemathesis[{caller}]: {len(operations)} operations x {EXAMPLES} examples x {len(CHECKS)} modes, "
          f"{sum(calls.values())} calls, {elapsed:.1f}s")
    assert not failures, "\n\n".join(failures)
    assert set(calls) == {operation.label for operation in operations}
    # Let in at least once per operation its role may call (a viewer is refused the admin-only ones).
    from hatidata_auth.roles import permissions_for

    held = permissions_for(caller.split("-", 1)[1])
    allowed = [op for op in operations if set(op.definition.raw.get("x-permissions") or []) <= set(held)]
    assert sum(200 <= status < 300 for status in statuses) >= len(allowed), "the caller was not let in"
