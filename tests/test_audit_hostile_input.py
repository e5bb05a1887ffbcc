"""Hostile input to the audit log's readers: CSV cells, verification and export cursors, received streams, and the
keys that checkpoints may be trusted with (docs/audit.md, "Hostile input" and "Checkpoints and signing keys")."""

from __future__ import annotations

import csv
import io
import json

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hatidata_auth.api.common import encode_cursor
from hatidata_auth.services import audit_stream
from hatidata_auth.services.audit_queries import FORMULA_STARTS, csv_cell, csv_line
from tests.api_support import Tenant, headers_for, make_tenant

_fixtures = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@given(st.lists(st.one_of(st.text(), st.integers(), st.none()), min_size=1, max_size=5))
def test_no_csv_cell_starts_a_formula_and_no_cell_splits_its_row(cells: list[object]) -> None:
    (read,) = csv.reader(io.StringIO(csv_line(cells), newline=""))
    assert read == [csv_cell(c) if isinstance(c, str) else "" if c is None else str(c) for c in cells]
    # Text never starts a formula; a number (seq) is written as one, as a spreadsheet reads it anyway.
    assert not [r for r, c in zip(read, cells, strict=True) if isinstance(c, str) and r.startswith(FORMULA_STARTS)]


@given(st.text())
def test_a_formula_cell_keeps_its_text_after_the_quote(text: str) -> None:
    assert csv_cell(text) == ("'" + text if text.startswith(FORMULA_STARTS) else text)


@given(st.one_of(st.integers(), st.none()))
def test_csv_numbers_and_nulls_pass_unchanged(value: int | None) -> None:
    assert csv_cell(value) == value


@pytest.fixture
def acme(app: Flask) -> Tenant:
    return make_tenant(app, "Acme")


@_fixtures
@given(seq=st.text(max_size=40), tail=st.sampled_from(["0" * 64, "", "x"]))
def test_a_forged_verification_cursor_is_422(app: Flask, acme: Tenant, seq: str, tail: str) -> None:
    answer = app.test_client().get(f"/api/v1/audit-events/verify?cursor={encode_cursor(f'{seq}:{tail}')}",
                                   headers=headers_for(acme, "admin"))
    assert answer.status_code in (200, 422), answer.get_data(as_text=True)[:300]
    if answer.status_code == 200:
        assert seq.isascii()
        assert seq.isdigit()
        assert int(seq) < 2**63
        assert len(tail) == 64


@_fixtures
@given(key=st.one_of(st.text(max_size=30), st.integers(), st.floats(allow_nan=False), st.booleans()),
       route=st.sampled_from(["/api/v1/audit-events?", "/api/v1/audit-events/verify?", "/api/v1/audit-events/export?",
                              "/api/v1/audit-events/export?format=csv&"]))
def test_every_audit_cursor_is_200_or_422(app: Flask, acme: Tenant, key: object, route: str) -> None:
    answer = app.test_client().get(f"{route}cursor={encode_cursor(key)}", headers=headers_for(acme, "admin"))
    assert answer.status_code in (200, 401, 422), answer.get_data(as_text=True)[:300]


_hostile = st.one_of(
    st.text(max_size=200),
    st.integers(min_value=1, max_value=200_000).map(lambda n: "[" * n),
    st.integers(min_value=1, max_value=200_000).map(lambda n: '{"a":' * n),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                 lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                 max_leaves=20).map(json.dumps),
    st.fixed_dictionaries({"type": st.sampled_from(["event", "checkpoint", "trailer", "x"]),
                           "seq": st.one_of(st.integers(), st.text(max_size=3), st.none()),
                           "id": st.text(max_size=5), "hash": st.text(max_size=5), "kid": st.text(max_size=5),
                           "details": st.dictionaries(st.text(max_size=3), st.text(max_size=3))}).map(json.dumps),
    st.just('{"seq": 1, "id": "\\ud800", "prev_hash": "' + "0" * 64 + '"}'),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_hostile, min_size=1, max_size=4))
def test_verify_stream_names_a_line_for_any_hostile_input(lines: list[str]) -> None:
    text = "".join(line.replace("\n", " ") + "\n" for line in lines)
    report = audit_stream.verify_stream(audit_stream.bounded_lines(io.StringIO(text)), {})
    assert report.ok or report.problem


def test_a_line_beyond_the_bound_is_named_without_reading_it_whole() -> None:
    huge = "x" * (audit_stream.MAX_LINE * 3)
    lines = audit_stream.bounded_lines(io.StringIO(huge + "\n{}\n"))
    report = audit_stream.verify_stream(lines, {})
    assert report.problem == f"line 1 is longer than {audit_stream.MAX_LINE} characters"


@pytest.mark.parametrize("line", ["[" * 100_000, '{"a":' * 50_000, "not json", "[1, 2]", '{"x": NaN}'])
def test_each_malformed_line_is_named(line: str) -> None:
    report = audit_stream.verify_stream(io.StringIO("\n" + line + "\n"), {})
    assert report.problem is not None
    assert report.problem.startswith("line 2 "), report.problem
