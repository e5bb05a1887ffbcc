"""Every query parameter of every HTML page is validated: a value the page cannot use is a 400 page naming the
parameter (as the API answers 422), never a 500 (docs/pages.md, "Query parameters"). Fuzzed over every admin page
a browser can GET, with the parameters the pages read and any others."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hatidata_auth.inputs import INT64_MAX
from hatidata_auth.services.sign_in_attempts import PAGE_KEY
from tests.auth_support import login, sync_organizations

# The parameters the pages read (sign-ins: filters and paging; guides: protocol; policy: saved; wizard callback).
PARAMETERS = ("after", "reason", "outcome", "email", "protocol", "saved", "state", "code", "error",
              "error_description")
NOT_PAGES = ("/api/", "/auth/", "/static/", "/admin/sso/static/", "/healthz", "/readyz", "/metrics")
SAMPLES = {"plugin": "okta", "key": "metadata"}
VALUES = st.one_of(
    st.text(max_size=40),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(["", "0", "-1", str(PAGE_KEY.largest), str(PAGE_KEY.largest + 1), str(INT64_MAX),
                     str(INT64_MAX + 1), "9" * 30, "1e9", " 7", "٣", "true",
                     "not_assigned_to_app", "failure", "saml", "1", "x" * 400]),
)
QUERIES = st.dictionaries(st.one_of(st.sampled_from(PARAMETERS), st.text(min_size=1, max_size=8)), VALUES,
                          max_size=4)


def _pages(app: Flask) -> list[str]:
    urls = []
    for rule in app.url_map.iter_rules():
        if "GET" not in (rule.methods or set()) or rule.rule.startswith(NOT_PAGES):
            continue
        url = rule.rule
        for argument in rule.arguments:
            url = re.sub(rf"<(?:[^:>]+:)?{argument}>", SAMPLES.get(argument, "1"), url)
        urls.append(url)
    return sorted(urls)


@pytest.fixture
def admin(app: Flask, client: FlaskClient) -> FlaskClient:
    sync_organizations(app)
    assert login(client, "admin@acme.test").status_code == 302  # an attempt on the sign-ins page
    app.config["PROPAGATE_EXCEPTIONS"] = False  # as in production: the error handlers answer
    return client


def test_every_pages_query_parameters_never_give_a_500(app: Flask, admin: FlaskClient) -> None:
    pages = _pages(app)
    assert {"/admin/sso/sign-ins/", "/admin/policy", "/admin/sso/okta/wizard/metadata",
            "/admin/sso/idp/okta/guide"} <= set(pages), pages

    @settings(max_examples=40, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(page=st.sampled_from(pages), query=QUERIES)
    def check(page: str, query: dict[str, str]) -> None:
        answer = admin.get(page, query_string=query, headers={"Accept": "text/html"})
        assert answer.status_code < 500, (page, query, answer.status_code)

    check()


@pytest.mark.parametrize(("page", "query", "named"), [
    ("/admin/sso/sign-ins/", {"after": str(INT64_MAX + 1)}, "after"),
    ("/admin/sso/sign-ins/", {"after": str(PAGE_KEY.largest + 1)}, "after"),  # past PostgreSQL's INTEGER
    ("/admin/sso/sign-ins/", {"after": "9" * 30}, "after"),
    ("/admin/sso/sign-ins/", {"after": "-3"}, "after"),
    ("/admin/sso/sign-ins/", {"after": "0"}, "after"),
    ("/admin/sso/sign-ins/", {"after": "٣"}, "after"),
    ("/admin/sso/sign-ins/", {"reason": "nope"}, "reason"),
    ("/admin/sso/sign-ins/", {"outcome": "maybe"}, "outcome"),
    ("/admin/sso/sign-ins/", {"email": "a" * 321}, "email"),
    ("/admin/policy", {"saved": "yes"}, "saved"),
])
def test_an_invalid_parameter_is_a_400_page_naming_it(admin: FlaskClient, page: str, query: dict[str, Any],
                                                      named: str) -> None:
    answer = admin.get(page, query_string=query, headers={"Accept": "text/html"})
    assert answer.status_code == 400, answer.status_code
    assert answer.mimetype == "text/html"
    assert f"&#39;{named}&#39;" in answer.get_data(as_text=True) or f"'{named}'" in answer.get_data(as_text=True)


def test_valid_parameters_still_page_and_filter(admin: FlaskClient) -> None:
    for query in ({}, {"after": str(PAGE_KEY.largest)}, {"after": "1"}, {"reason": "not_assigned_to_app"},
                  {"outcome": "success", "email": "admin@acme.test"}, {"reason": "", "outcome": "", "after": ""}):
        assert admin.get("/admin/sso/sign-ins/", query_string=query).status_code == 200, query
    assert admin.get("/admin/policy", query_string={"saved": "1"}).status_code == 200


def test_every_lists_cursor_past_its_column_is_a_422_not_a_500(admin: FlaskClient) -> None:
    """The API's side of the rule: a cursor's key outside its column's range (PostgreSQL's INTEGER is 32-bit,
    SQLite's 64-bit: one bound for both) is a 422 naming ``cursor`` on every paged list."""
    from hatidata_auth.api.common import encode_cursor

    spec = admin.get("/api/openapi.json").get_json()
    lists = [path for path, item in spec["paths"].items() if "{" not in path and any(
        p["name"] == "cursor" for p in item.get("get", {}).get("parameters", []))]
    assert "/api/v1/organization/sign-in-attempts" in lists, lists
    for path in lists:
        for key in (2**31, -(2**31) - 1, 2**63 - 1, 2**15 + 1):
            # a continuation (the export) streams its answer: read it whole, which also ends its request context
            with admin.get(path, query_string={"cursor": encode_cursor(key)}) as answer:
                answer.get_data()
                assert answer.status_code in (200, 422), (path, key, answer.status_code)
                if answer.status_code == 422:
                    assert set(answer.get_json()["error"]["details"]["fields"]) == {"cursor"}, (path, key)
    past = admin.get("/api/v1/organization/sign-in-attempts", query_string={"cursor": encode_cursor(2**31)})
    assert past.status_code == 422
