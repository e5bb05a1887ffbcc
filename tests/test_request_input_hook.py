"""The input hook (:func:`hatidata_auth.inputs.check_request_input`) reads the WSGI environ directly on its hot path
(header entries, an absent query string, an absent ``Content-Type``): it decides every request as the plain rule
over ``request.headers``, ``request.args`` and the body does (a property over headers, queries and bodies)."""

from __future__ import annotations

import json
from typing import Any

from flask import Flask, request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hatidata_auth.errors import AppError
from hatidata_auth.inputs import check_request_input, unstorable

TEXT = st.text(alphabet=st.sampled_from(["a", "Z", "0", " ", "-", "\x00", "é", "\ud800"]), max_size=6)
QUERY_TEXT = TEXT.map(lambda v: v.replace("\ud800", "x"))  # a URL carries UTF-8, which has no lone surrogate
HEADER_NAMES = st.sampled_from(["X-Trace", "Accept", "User-Agent", "X-Request-ID", "Content-Length-Ish"])
CONTENT_TYPES = st.sampled_from([None, "application/json", "application/x-www-form-urlencoded", "text/plain",
                                 "application/vnd.api+json"])
PATH = "/api/v1/api-keys"  # a POST route that takes a JSON body


def _plain_rule() -> str | None:
    """The rule as first written, over the request's parsed views: the error code it answers, or None."""
    if any("\x00" in value for _, value in request.headers.items()):
        return "bad_request"
    if any(unstorable(k) or unstorable(v) for k, v in request.args.items(multi=True)):
        return "validation_error"
    if request.is_json:
        body = request.get_data(as_text=True)
        return "validation_error" if ("\\u0000" in body or "\x00" in body) else None
    if request.mimetype == "application/x-www-form-urlencoded":
        return "validation_error" if any(unstorable(k) or unstorable(v)
                                         for k, v in request.form.items(multi=True)) else None
    return None


def _hook() -> str | None:
    try:
        check_request_input()
    except AppError as exc:
        return exc.code
    return None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(headers=st.dictionaries(HEADER_NAMES, TEXT.filter(lambda v: v == v.strip()), max_size=3),
       query=st.lists(st.tuples(QUERY_TEXT.filter(bool), QUERY_TEXT), max_size=2), content_type=CONTENT_TYPES,
       value=TEXT)
def test_the_hook_decides_as_the_plain_rule(app: Flask, headers: dict[str, str], query: list[tuple[str, str]],
                                            content_type: str | None, value: str) -> None:
    kwargs: dict[str, Any] = {"headers": headers, "query_string": query}
    if content_type is not None:
        clean = value.replace("\ud800", "x")
        body = json.dumps({"v": clean}) if "json" in content_type else f"v={clean}"
        kwargs.update(data=body.encode(), content_type=content_type)
    with app.test_request_context(PATH, method="POST", **kwargs):
        assert request.routing_exception is None
        expected = _plain_rule()
    with app.test_request_context(PATH, method="POST", **kwargs):
        assert _hook() == expected
